"""The demo model's real range: caption accuracy by shape size, 10-90% of the picture's short side.

Pictures come from the held-out generator's own drawing (`vlmchat/demo/heldout.py`: numpy masks,
named shades, its own canvas sizes and aspect ratios, half of them JPEG), with the shape's size fixed
per row instead of drawn from 30-70%; the whole shape stays inside the picture. A caption counts as
right when it is exactly "a <colour> <shape>".

Run: .venv/bin/python benchmarks/demo_range.py [--per-size 240]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FRACTIONS = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.50, 0.60, 0.70, 0.75, 0.80, 0.85, 0.90)


def pictures_at(fraction: float, count: int, seed: int = 2024):
    """`count` held-out pictures, balanced over colours and shapes, the shape `fraction` of the short side."""
    from vlmchat.demo.heldout import heldout_pictures

    return heldout_pictures(count, seed, size=fraction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-size", type=int, default=240, help="pictures per size (default 240)")
    count = parser.parse_args().per_size
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmchat.demo.measure import caption_accuracy

    folder = ROOT / "models" / "vlmchat-demo"
    model, processor = AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    print(f"demo model caption accuracy by shape size ({count} pictures each, colour and shape both right):")
    for fraction in FRACTIONS:
        accuracy = caption_accuracy(model, processor, pictures_at(fraction, count))
        print(f"  {fraction:4.0%} of the short side: {accuracy:6.1%}", flush=True)


if __name__ == "__main__":
    main()
