"""Held-out test pictures for the demo model, from a generator written apart from the training one.

It shares no code with `shapes.py`: shapes are rasterised from numpy coordinate masks, colours
come from a fixed list of named shades (CSS colours and paint names), and sizes, aspect ratios
and file formats are drawn from their own ranges. Used by the accuracy test and benchmark.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

NAMED_SHADES = {
    "red": [(255, 0, 0), (220, 20, 60), (178, 34, 34), (200, 16, 46), (139, 0, 0), (237, 41, 57), (196, 30, 58)],
    "green": [(0, 128, 0), (34, 139, 34), (50, 205, 50), (0, 255, 0), (46, 139, 87), (0, 100, 0), (60, 179, 113)],
    "blue": [(0, 0, 255), (65, 105, 225), (0, 0, 205), (30, 60, 200), (0, 71, 171), (25, 25, 160), (0, 90, 230)],
    "yellow": [(255, 255, 0), (255, 215, 0), (255, 239, 0), (250, 218, 94), (255, 221, 51), (238, 210, 2), (255, 247, 0)],
}
SHAPE_NAMES = ("circle", "square", "triangle")


def _mask(kind: str, width: int, height: int, cx: float, cy: float, side: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    r = side / 2
    if kind == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if kind == "square":
        return (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
    # upright isosceles triangle inside the side x side box: apex on top, base at the bottom
    top, bottom = cy - r, cy + r
    t = (ys - top) / (bottom - top)
    return (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= t * r)


def heldout_pictures(count: int, seed: int = 12345, size: float | None = None) -> list[tuple[Image.Image, str, str]]:
    """`count` pictures as (image, colour, shape), balanced over colours and shapes.

    `size`: the shape's side as a share of the picture's short side (default: drawn from 30-70%, as trained)."""
    gen = np.random.default_rng(seed)
    colours = list(NAMED_SHADES)
    out = []
    for i in range(count):
        colour = colours[i % len(colours)]
        kind = SHAPE_NAMES[(i // len(colours)) % len(SHAPE_NAMES)]
        height = int(gen.integers(60, 400))
        width = int(height * gen.choice([0.5, 0.6, 0.75, 1.0, 1.0, 1.33, 1.5, 1.78, 2.0]))
        side = (float(gen.uniform(0.3, 0.7)) if size is None else size) * min(width, height)
        cx = float(gen.uniform(side / 2, width - side / 2))
        cy = float(gen.uniform(side / 2, height - side / 2))
        pixels = np.full((height, width, 3), 255, dtype=np.uint8)
        pixels[_mask(kind, width, height, cx, cy, side)] = NAMED_SHADES[colour][int(gen.integers(0, 7))]
        image = Image.fromarray(pixels)
        if gen.random() < 0.5:
            raw = io.BytesIO()
            image.save(raw, format="JPEG", quality=int(gen.integers(50, 96)))
            image = Image.open(io.BytesIO(raw.getvalue())).convert("RGB")
        out.append((image, colour, kind))
    return out
