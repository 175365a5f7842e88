"""Adapters on the demo model: switch between two resident adapters vs reload base + adapter,
and peak memory of a Compare (base vs adapter) vs a single answer. One run, side by side.

Run: .venv/bin/python benchmarks/adapters.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO_ES = ROOT / "adapters" / "demo-es"

PEAK_SCRIPT = """
import json, resource, sys
sys.path.insert(0, {root!r})
from vlmchat.evaluate.compare import compare_stream
from vlmchat.demo.heldout import heldout_pictures
from vlmchat.models.manager import ModelManager
from vlmchat.settings import load_settings
manager = ModelManager(load_settings())
manager.load("demo")
manager.load_adapter("demo-es", {adapter!r})
image = heldout_pictures(1)[0][0]
ask = [{{"role": "user", "content": [{{"type": "image", "image": image}}, {{"type": "text", "text": "Describe the image."}}]}}]
for _ in range(5):
    if {mode!r} == "compare":
        result = [answer.text for answer in list(compare_stream(manager, image, "Describe the image.", "base", "demo-es"))[-1]]
    else:
        result = manager.generate(ask, adapter="demo-es")
print(json.dumps({{"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "result": result}}))
"""


def _second_adapter(folder: Path) -> Path:
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from vlmchat.lora.runtime import default_lora_config

    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(ROOT / "models" / "vlmchat-demo"),
                           default_lora_config())
    model.save_pretrained(folder)
    return folder


def swap_vs_reload() -> None:
    from vlmchat.lora.runtime import use_adapter
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings

    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        other = _second_adapter(Path(tmp) / "other")
        manager = ModelManager(settings)
        manager.load("demo")
        manager.load_adapter("demo-es", DEMO_ES)
        manager.load_adapter("other", other)
        swaps = []
        for i in range(200):
            started = time.perf_counter()
            with use_adapter(manager.model, ("demo-es", "other")[i % 2]):
                pass
            swaps.append(time.perf_counter() - started)
        reloads = []
        for _ in range(5):
            started = time.perf_counter()
            manager.load("demo")
            manager.load_adapter("demo-es", DEMO_ES)
            reloads.append(time.perf_counter() - started)
    swap, reload = statistics.median(swaps), statistics.median(reloads)
    print(f"switch between two resident adapters: median {swap * 1000:.3f} ms (target <= 50 ms)")
    print(f"reload base + adapter: median {reload * 1000:.0f} ms")
    print(f"switch is {reload / swap:,.0f}x faster than reloading (target >= 100x)")


def peak_memory() -> None:
    peaks = {}
    for mode in ("single", "compare"):
        code = PEAK_SCRIPT.format(root=str(ROOT), adapter=str(DEMO_ES), mode=mode)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        peaks[mode] = json.loads(out.strip().splitlines()[-1])
        print(f"{mode}: peak RSS {peaks[mode]['peak_kib'] / 1024:.0f} MiB -> {peaks[mode]['result']}")
    ratio = peaks["compare"]["peak_kib"] / peaks["single"]["peak_kib"]
    print(f"Compare peak memory / single answer peak memory: {ratio:.3f}x (target <= 1.15x)")


if __name__ == "__main__":
    swap_vs_reload()
    peak_memory()
