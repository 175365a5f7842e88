"""The demo's captions of shapes laid out as a drawing program or a test generator lays them out, two builds side
by side.

Run: .venv/bin/python benchmarks/demo_layouts.py [--per-cell 40] [--heldout 1000] [--before REV] [--model PATH]

The pictures are drawn here with PIL's own primitives (`rectangle`, `ellipse`, an upright `polygon`), pure named
colours, apart from the demo's training generator and the held-out one: square canvases of 256, 400 and 512 px
(the demo sees 64 x 64 in 8-pixel patches), the shape upright and either centred at a round fraction of the side
(1/4 .. 3/4: its edges then fall on the patch grid) or placed anywhere at 30-60%. A caption counts when it is
exactly "a <colour> <shape>". Prints a markdown table: per build, layout and shape; then, so that what the layouts
gain is weighed against what the free layouts might lose, each build's captions of --heldout pictures from the
held-out generator (`vlmchat/demo/heldout.py`, seed 123).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_wordings import SHIPPED, build_of  # noqa: E402

COLOURS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 215, 0)}
SHAPES = ("circle", "square", "triangle")
FRACTIONS = (0.25, 0.375, 0.5, 0.625, 0.75)


def picture(rng: random.Random, shape: str, colour: str, centred: bool) -> Image.Image:
    side = rng.choice((256, 400, 512))
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    size = round(side * (rng.choice(FRACTIONS) if centred else rng.uniform(0.3, 0.6)))
    x, y = ((side - size) // 2,) * 2 if centred else (rng.randint(0, side - size), rng.randint(0, side - size))
    box, fill = (x, y, x + size, y + size), COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x + size / 2, y), (x, y + size), (x + size, y + size)], fill=fill)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cell", type=int, default=40, help="pictures per layout and shape")
    parser.add_argument("--heldout", type=int, default=1000, help="held-out pictures captioned by each build")
    parser.add_argument("--before", default="HEAD", help="git revision of the build beside it")
    parser.add_argument("--model", default=str(SHIPPED), help="the build measured (default: the shipped demo)")
    args = parser.parse_args()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmchat.demo.heldout import heldout_pictures
    from vlmchat.demo.measure import caption_accuracy

    rng = random.Random(2026)
    cells = {(layout, shape): [(picture(rng, shape, colour, layout == "centred"), colour, shape)
                               for colour in [rng.choice(list(COLOURS)) for _ in range(args.per_cell)]]
             for layout in ("centred", "anywhere") for shape in SHAPES}
    print(f"{args.per_cell} pictures a cell; centred: at 1/4..3/4 of the side, edges on the patch grid\n")
    print("| build | layout | " + " | ".join(SHAPES) + " |")
    print("|---|---|" + "---:|" * len(SHAPES))
    heldout, right = heldout_pictures(args.heldout, seed=123), {}
    with tempfile.TemporaryDirectory() as tmp:
        builds = {"shipped demo" if Path(args.model) == SHIPPED else args.model: args.model,
                  f"demo at {args.before}": str(build_of(args.before, Path(tmp) / "before"))}
        for name, path in builds.items():
            model, processor = AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)
            for layout in ("centred", "anywhere"):
                row = [f"{caption_accuracy(model, processor, cells[(layout, shape)]):.1%}" for shape in SHAPES]
                print(f"| {name} | {layout} | " + " | ".join(row) + " |")
            right[name] = round(caption_accuracy(model, processor, heldout) * len(heldout))
    print("\nheld-out captions right (seed 123): " + ", ".join(f"{name} {count} of {len(heldout)}"
                                                             for name, count in right.items()))


if __name__ == "__main__":
    main()
