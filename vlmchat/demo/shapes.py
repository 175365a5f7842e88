"""Training pictures for the embedded demo model: one coloured shape on white or a light background.

This generator draws with PIL's ImageDraw and samples colours in HSV ranges that cover the
shades a person still calls red, green, blue or yellow. The held-out generator used to
measure accuracy (`heldout.py`) is written independently and shares no code with this one.
"""

from __future__ import annotations

import colorsys
import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")

# (hue range in degrees, saturation range, value range) per colour name.
_HSV_RANGES = {
    "red": ((-14.0, 12.0), (0.55, 1.0), (0.45, 1.0)),
    "green": ((80.0, 160.0), (0.45, 1.0), (0.35, 1.0)),
    "blue": ((198.0, 248.0), (0.45, 1.0), (0.40, 1.0)),
    "yellow": ((44.0, 63.0), (0.50, 1.0), (0.82, 1.0)),
}


@dataclass(frozen=True)
class ShapePicture:
    """One generated picture and what is on it."""

    image: Image.Image
    colour: str
    shape: str


def sample_rgb(rng: random.Random, colour: str) -> tuple[int, int, int]:
    """A random shade that a person would still name `colour`."""
    (h0, h1), (s0, s1), (v0, v1) = _HSV_RANGES[colour]
    hue = (rng.uniform(h0, h1) % 360.0) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return round(r * 255), round(g * 255), round(b * 255)


def _polygon(shape: str, cx: float, cy: float, half: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        scale = half
    else:
        corners = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        scale = half
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return [(cx + scale * (x * cos_a - y * sin_a), cy + scale * (x * sin_a + y * cos_a)) for x, y in corners]


def _background(rng: random.Random) -> tuple[int, int, int]:
    """White most of the time, else a light grey or a light tint (paper, a screenshot's panel, a scan)."""
    kind = rng.random()
    if kind < 0.6:
        return (255, 255, 255)
    if kind < 0.8:
        grey = rng.randint(215, 254)
        return (grey, grey, grey)
    return tuple(rng.randint(215, 255) for _ in range(3))


def draw_picture(rng: random.Random, colour: str | None = None, shape: str | None = None,
                 placed: float = 0.0) -> ShapePicture:
    """Draw one random picture; colour and shape are random unless given.

    `placed`: the share of pictures laid out as a drawing program or a test generator lays them out: a square
    canvas, the shape upright and centred at a round fraction of the side, so its edges fall on the vision
    tower's 8-pixel patch grid (the free layouts almost never do; such upright squares were called circles), and
    of the other squares, as many upright. 0 draws exactly what the base stage of the build always drew."""
    colour = colour or rng.choice(COLOURS)
    shape = shape or rng.choice(SHAPES)
    laid_out = placed > 0 and rng.random() < placed
    short = rng.randint(48, 320)
    aspect = 1.0 if laid_out else math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    width, height = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    image = Image.new("RGB", (width, height), _background(rng))
    draw = ImageDraw.Draw(image)
    size = (rng.choice((0.25, 0.375, 0.5, 0.625, 0.75)) if laid_out else rng.uniform(0.3, 0.7)) * min(width, height)
    half = size / 2
    cx = width / 2 if laid_out else rng.uniform(half, width - half)
    cy = height / 2 if laid_out else rng.uniform(half, height - half)
    fill = sample_rgb(rng, colour)
    if shape == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:
        # Squares tilt a little and triangles turn freely, so the model learns the shape, not a pose.
        if laid_out or shape == "square" and placed > 0 and rng.random() < placed:
            angle = 0.0
        else:
            angle = rng.uniform(-0.3, 0.3) if shape == "square" else rng.uniform(-math.pi, math.pi)
        points = _polygon(shape, cx, cy, half, angle)
        draw.polygon(points, fill=fill)
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(40, 95))
        buffer.seek(0)
        image = Image.open(buffer).convert("RGB")
    return ShapePicture(image, colour, shape)
