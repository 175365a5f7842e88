"""The embedded demo model on CPU: caption latency per image, and accuracy on 200 held-out pictures.

Run: .venv/bin/python benchmarks/demo_model.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from vlmchat.demo.measure import caption_accuracy
    from vlmchat.demo.heldout import heldout_pictures
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings

    manager = ModelManager(load_settings())
    info = manager.load("demo")
    print(info.summary())
    pictures = heldout_pictures(200)
    latencies = []
    for image, _, _ in pictures[:3] + pictures[:30]:  # the first 3 warm up
        started = time.perf_counter()
        manager.generate([{"role": "user", "content": [{"type": "image", "image": image},
                                                       {"type": "text", "text": "Describe the image."}]}])
        latencies.append(time.perf_counter() - started)
    latencies = latencies[3:]
    print(f"caption latency per image (one at a time, through the model manager): "
          f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; target <= 500 ms")
    accuracy = caption_accuracy(manager.model, manager.processor, pictures)
    print(f"held-out accuracy (colour and shape both right, 200 pictures): {accuracy:.1%}; target >= 95%")


if __name__ == "__main__":
    main()
