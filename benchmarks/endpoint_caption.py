"""Captioning through an OpenAI-compatible endpoint, 8 requests in flight vs 1, beside local captioning.

Run: .venv/bin/python benchmarks/endpoint_caption.py [--images 64] [--in-flight 8] [--repeats 3]
                                                      [--price-in 0.15] [--price-out 0.60] [--gpu-hour-usd 0]

It starts a second vlmchat (`python launch.py`, the demo model) on loopback and uses its /v1 API as
the endpoint "local-vlmchat" through the `openai` client: `caption_images` with --in-flight
requests at once vs one at a time (the server's dynamic batcher turns concurrent requests into
one batch), and, for reference, the same pictures captioned in-process with a local batch of the
same size. It prints a markdown table: images/s, the ratio (target >= 3x for 8 in flight vs 1),
accuracy, tokens per image and the cost per 1,000 images at --price-in/--price-out USD per
million tokens (what a hosted API with that price would charge for the same tokens; the local
vlmchat endpoint itself is free) and, for the local run, at --gpu-hour-usd.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import LaunchedApp  # noqa: E402  (the test suite's launcher: python launch.py in a child)
from vlmchat.caption.io import caption_path  # noqa: E402
from vlmchat.caption.run import CaptionOptions, caption_images  # noqa: E402
from vlmchat.demo.heldout import heldout_pictures  # noqa: E402
from vlmchat.models.manager import ModelManager  # noqa: E402
from vlmchat.settings import EndpointSettings, load_settings  # noqa: E402

NAME = "local-vlmchat"


def _run(manager: ModelManager, images: list[Path], truth: dict[Path, str], choice: str | None,
         batch_size: int) -> tuple[float, float]:
    """(images/s, accuracy) of captioning `images` with `choice` (an endpoint or None = local)."""
    summary = caption_images(manager, images, CaptionOptions(adapter=choice, batch_size=batch_size, overwrite=True))
    if summary.failed:
        raise SystemExit(f"captioning failed: {summary.failed[:3]}")
    right = sum(caption_path(p).read_text(encoding="utf-8") == truth[p] for p in images)
    return len(images) / summary.elapsed_s, right / len(images)


def _pictures(folder: Path, count: int) -> dict[Path, str]:
    truth = {}
    for index, (image, colour, shape) in enumerate(heldout_pictures(count, seed=2024)):
        path = folder / f"{index:03d}.png"
        image.save(path)
        truth[path] = f"a {colour} {shape}"
    return truth


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is printed")
    parser.add_argument("--price-in", type=float, default=0.15, help="USD per million input tokens")
    parser.add_argument("--price-out", type=float, default=0.60, help="USD per million output tokens")
    parser.add_argument("--gpu-hour-usd", type=float, default=0.0, help="price of the local machine per hour")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "server").mkdir()
        server = LaunchedApp(Path(tmp) / "server").wait_ready()
        try:
            _measure(args, Path(tmp), server)
        finally:
            server.stop()


def _measure(args, tmp: Path, server: LaunchedApp) -> None:
    settings = load_settings()
    manager = ModelManager(settings)
    local = manager.load()
    entry = EndpointSettings(name=NAME, base_url=server.url + "v1", model="demo", price_in=args.price_in,
                             price_out=args.price_out, max_concurrency=args.in_flight)
    choice = manager.add_endpoint(entry)
    folder = tmp / "pictures"
    folder.mkdir()
    truth = _pictures(folder, args.images)
    images = sorted(truth)
    _run(manager, images[:8], truth, choice, args.in_flight)  # warm-up: connections, first-call allocations
    settings_of = {f"endpoint, {args.in_flight} in flight": (choice, args.in_flight),
                   "endpoint, 1 in flight": (choice, 1),
                   f"local (in process), batch {args.in_flight}": (None, args.in_flight)}
    rates: dict[str, list[float]] = {label: [] for label in settings_of}
    load_before = os.getloadavg()[0]  # the 2-core development machine is shared: the figures depend on it
    accuracy: dict[str, float] = {}
    spent = manager.endpoint(choice).spent
    before = dict(spent)
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every setting alike
        for label, (model, size) in settings_of.items():
            rate, right = _run(manager, images, truth, model, size)
            rates[label].append(rate)
            accuracy[label] = right
    requests = spent["requests"] - before["requests"]
    tokens_in = (spent["prompt_tokens"] - before["prompt_tokens"]) / requests
    tokens_out = (spent["completion_tokens"] - before["completion_tokens"]) / requests
    per_thousand = (tokens_in * args.price_in + tokens_out * args.price_out) / 1e6 * 1000
    print(f"local model: {local.summary()}; endpoint: {server.url}v1 (a second vlmchat, same demo model)")
    print(f"{args.images} images, median of {args.repeats}; {tokens_in:.0f} input + {tokens_out:.1f} output tokens "
          f"per image; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| setting | images/s | ratio to 1 in flight | accuracy | cost per 1,000 images |")
    print("|---|---:|---:|---:|---|")
    one = statistics.median(rates["endpoint, 1 in flight"])
    for label, values in rates.items():
        rate = statistics.median(values)
        if label.startswith("endpoint"):
            cost = f"${per_thousand:.4f} at ${args.price_in}/${args.price_out} per M tokens in/out"
        elif args.gpu_hour_usd:
            cost = f"${args.gpu_hour_usd / 3600 / rate * 1000:.4f} at ${args.gpu_hour_usd}/hour"
        else:
            cost = "time only (set --gpu-hour-usd)"
        print(f"| {label} | {rate:.1f} | {rate / one:.2f}x | {accuracy[label]:.0%} | {cost} |")


if __name__ == "__main__":
    main()
