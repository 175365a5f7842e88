"""Images/s of batch captioning, batched vs one image at a time, on the same pictures in one run.

Run: .venv/bin/python benchmarks/caption_batch.py [--images 64] [--batch-sizes 8 16] [--repeats 3]
                                                 [--model demo|PATH]

It saves held-out demo pictures (vlmchat.demo.heldout) into a temp folder, captions them through
`caption_images` (decode, batched generate, atomic .txt writes) once with batch size 1 and with each
batch size given (interleaved, median of --repeats runs), and prints images/s, the ratio to
one-at-a-time (target >= 2x) and the accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vlmchat.caption.io import caption_path  # noqa: E402
from vlmchat.caption.run import CaptionOptions, caption_images  # noqa: E402
from vlmchat.demo.heldout import heldout_pictures  # noqa: E402
from vlmchat.models.manager import ModelManager  # noqa: E402
from vlmchat.settings import load_settings  # noqa: E402


def _run(manager: ModelManager, images: list[Path], truth: dict[Path, str], batch_size: int) -> tuple[float, float]:
    """(images/s, accuracy) of captioning `images` with `batch_size`, overwriting earlier captions."""
    summary = caption_images(manager, images, CaptionOptions(batch_size=batch_size, overwrite=True))
    if summary.failed:
        raise SystemExit(f"captioning failed: {summary.failed[:3]}")
    right = sum(caption_path(p).read_text(encoding="utf-8") == truth[p] for p in images)
    return len(images) / summary.elapsed_s, right / len(images)


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is printed")
    parser.add_argument("--model", default="demo", help="'demo' or a folder saved with save_pretrained")
    args = parser.parse_args()
    settings = load_settings().override("model", id=args.model)
    manager = ModelManager(settings)
    info = manager.load()
    print(f"model: {info.summary()}")
    with tempfile.TemporaryDirectory() as folder:
        truth = {}
        for index, (image, colour, shape) in enumerate(heldout_pictures(args.images, seed=2024)):
            path = Path(folder) / f"{index:03d}.png"
            image.save(path)
            truth[path] = f"a {colour} {shape}"
        images = sorted(truth)
        _run(manager, images[:4], truth, 4)  # warm-up: first-call allocations, kernels
        sizes = [1, *args.batch_sizes]
        rates: dict[int, list[float]] = {size: [] for size in sizes}
        accuracy: dict[int, float] = {}
        for _ in range(args.repeats):  # interleaved, so a busy machine slows every setting alike
            for size in sizes:
                rate, accuracy[size] = _run(manager, images, truth, size)
                rates[size].append(rate)
        single = statistics.median(rates[1])
        print(f"one at a time: {single:6.2f} images/s  (accuracy {accuracy[1]:.0%}; median of {args.repeats})")
        for size in args.batch_sizes:
            rate = statistics.median(rates[size])
            print(f"batch {size:3d}:     {rate:6.2f} images/s  (accuracy {accuracy[size]:.0%})  "
                  f"ratio {rate / single:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
