"""One memory measurement in a fresh process (bench.py's memory section); prints one JSON line.

Run: .venv/bin/python benchmarks/realsize/memory_child.py one|compare|chats|plan MODEL_FOLDER WORK_FOLDER
(WORK_FOLDER holds the adapters `one` made by bench.make_adapters).
"""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

from bench import Bench, ask, picture  # noqa: E402
from vlmchat.models.manager import GenerationParams  # noqa: E402

GIB = 2**30
PARAMS = GenerationParams(max_new_tokens=16)


def peak_gib() -> float:
    """Peak resident memory since the process started or since the last reset_peak (VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024 / GIB


def reset_peak() -> None:
    """Start the peak over from the memory resident now (Linux: '5' to clear_refs resets VmHWM)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")


def rss_gib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / GIB


def main() -> None:
    from vlmchat.evaluate.compare import compare_stream

    mode, folder, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    bench = Bench(folder.name, folder, 1, work)
    manager = bench.manager
    manager.model.generation_config.min_new_tokens = 16
    result: dict = {"mode": mode}
    result["load_peak_gib"], result["loaded_gib"] = peak_gib(), rss_gib()
    reset_peak()  # from here on: what answering adds to the loaded model
    if mode == "plan":
        from vlmchat.models.plan import plan_for_machine
        from vlmchat.models.sizes import picture_tokens

        result["estimate_gib"] = manager.decision.plan.estimate_gib  # at the CPU's default detail (auto = low)
        result["estimate_high_gib"] = plan_for_machine(  # in the dtype loaded: the free RAM now excludes the model
            manager.decision.size, device="cpu", dtype=manager.decision.plan.dtype,
            picture_tokens=picture_tokens(folder, "high")).estimate_gib
        for detail in ("low", "high"):  # high: the processor's own tiling, the largest picture prompt
            manager.generate(ask(image=picture(0)), replace(PARAMS, image_detail=detail))
            result[f"{detail}_gib"] = peak_gib()
        print(json.dumps(result))
        return
    manager.load_adapter("one", work / "one")
    if mode == "chats":
        result["rss_gib"] = []
        for index in range(20):
            manager.generate(ask(image=picture(index)), PARAMS, adapter="one" if index % 2 else None)
            result["rss_gib"].append(round(rss_gib(), 3))
    for _ in range(5 if mode in ("one", "compare") else 0):
        if mode == "compare":
            list(compare_stream(manager, picture(0), "Describe the image.", "base", "one", PARAMS))
        else:
            manager.generate(ask(image=picture(0)), PARAMS, adapter="one")
    result["peak_gib"] = peak_gib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
