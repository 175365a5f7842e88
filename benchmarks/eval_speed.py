"""Seconds per eval: loglik vs generate, shared prefix vs one row per option, one pass vs one run per model.

Run: .venv/bin/python benchmarks/eval_speed.py [--questions 100] [--batch-size 8] [--repeats 3]
                                              [--model demo|PATH]

On multiple-choice questions with one held-out demo picture each (colour and shape, alternating),
all in one process on the same loaded model, interleaved and the median of --repeats runs:
- `run_eval` with loglik vs with generate at the write-up's setting (5 beams, 1 new token), batched
  as loglik is and one question at a time: wall time, ratio (target >= 20x) and accuracy (loglik
  equal or better);
- the loglik scorer with the shared prefix (prefix encoded once, options on the expanded KV cache)
  vs one full prompt + option row per option through the processor, on the same decoded pictures;
- base + 2 adapters (demo-es under two names, in a temp adapters folder) in one run vs 3 separate
  runs: ms per question per model;
- one run with both methods (`launch.py eval --method loglik generate --num-beams 5 --max-new-tokens 1`):
  the ms a question each method's row reports, and the ratio its comparison line states.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vlmchat.demo.heldout import heldout_pictures  # noqa: E402
from vlmchat.evaluate.run import EvalOptions, run_eval  # noqa: E402
from vlmchat.evaluate.score import choice_prompt, continuations, score_loglik, user_turn  # noqa: E402
from vlmchat.evaluate.sets import EvalItem, EvalSet  # noqa: E402
from vlmchat.images import load_image  # noqa: E402
from vlmchat.lora.runtime import use_adapter  # noqa: E402
from vlmchat.models.families import fit_to_profile, profile_for  # noqa: E402
from vlmchat.models.manager import ModelManager  # noqa: E402
from vlmchat.settings import load_settings  # noqa: E402

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")


def _settings(folder: Path, model: str):
    """Settings with temp adapters (demo-es, demo-es-2) and outputs folders."""
    shutil.copytree(ROOT / "adapters" / "demo-es", folder / "adapters" / "demo-es")
    shutil.copytree(ROOT / "adapters" / "demo-es", folder / "adapters" / "demo-es-2")
    file = folder / "settings.toml"
    file.write_text(f'[paths]\nmodels = "{(ROOT / "models").as_posix()}"\nadapters = "{(folder / "adapters").as_posix()}"\n'
                    f'outputs = "{(folder / "outputs").as_posix()}"\n', encoding="utf-8")
    return load_settings(file).override("model", id=model)


def _eval_set(folder: Path, count: int) -> EvalSet:
    items = []
    for index, (image, colour, shape) in enumerate(heldout_pictures(count, seed=77)):
        path = folder / f"{index:03d}.png"
        image.save(path)
        if index % 2:
            items.append(EvalItem(f"q{index}", "What color is the shape?", (str(path),), COLOURS, COLOURS.index(colour)))
        else:
            items.append(EvalItem(f"q{index}", "What shape is this?", (str(path),), SHAPES, SHAPES.index(shape)))
    return EvalSet(str(folder), "benchmark", "choice", items)


def rows_loglik(manager: ModelManager, items: list[EvalItem], images: list[list], adapter: str | None) -> list[list[float]]:
    """The alternative kept for comparison: every option as its own full row (prompt + answer turn), one forward."""
    import torch

    model, processor = manager.model, manager.processor
    prompts = [user_turn(pictures, choice_prompt(item)) for item, pictures in zip(items, images)]
    conts = [ids for p, item in zip(prompts, items) for ids in continuations(model, processor, p, item.options)]
    profile = profile_for(model)
    full = [fit_to_profile(p + [{"role": "assistant", "content": [{"type": "text", "text": option}]}], profile)
            for p, item in zip(prompts, items) for option in item.options]
    processor.tokenizer.padding_side = "left"
    with manager.lock, torch.inference_mode(), use_adapter(model, adapter):
        inputs = processor.apply_chat_template(full, tokenize=True, return_dict=True, return_tensors="pt",
                                               processor_kwargs={"padding": True}).to(model.device)
        logits = model(**inputs).logits.float()
    ids, width = inputs["input_ids"], inputs["input_ids"].shape[1]
    sums = []
    for row, cont in enumerate(conts):  # the demo's template ends with the answer turn's end token
        start = width - len(cont)
        assert ids[row, start:].tolist() == cont
        picked = logits[row, start - 1:width - 1].log_softmax(-1).gather(-1, ids[row, start:, None])
        sums.append(picked.sum().item())
    return sums


def _timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    out = function()
    return time.perf_counter() - started, out


def _scorer_time(manager: ModelManager, eval_set: EvalSet, images: list[list], scorer, batch: int) -> float:
    items = eval_set.items
    started = time.perf_counter()
    for first in range(0, len(items), batch):
        scorer(manager, items[first:first + batch], images[first:first + batch], "base")
    return time.perf_counter() - started


def _measure(manager, eval_set, images, args, folder: Path) -> dict[str, list]:
    batch = args.batch_size
    runs = {key: [] for key in ("loglik", "generate", "generate 1", "shared", "rows", "one pass", "separate",
                                "both: loglik", "both: generate")}
    accuracy = {}
    beams = EvalOptions(batch_size=batch, max_new_tokens=1, num_beams=5)
    for repeat in range(args.repeats):  # interleaved, so a busy machine slows every setting alike
        out = folder / f"r{repeat}"
        seconds, result = _timed(lambda: run_eval(manager, eval_set, ["base"], "loglik", EvalOptions(batch_size=batch),
                                                  folder=out / "loglik"))
        runs["loglik"].append(seconds)
        accuracy["loglik"] = result.model_summary("base")["accuracy"]
        seconds, result = _timed(lambda: run_eval(manager, eval_set, ["base"], "generate", beams, folder=out / "gen"))
        runs["generate"].append(seconds)
        accuracy["generate"] = result.model_summary("base")["accuracy"]
        single = EvalOptions(batch_size=1, max_new_tokens=1, num_beams=5)
        seconds, result = _timed(lambda: run_eval(manager, eval_set, ["base"], "generate", single, folder=out / "g1"))
        runs["generate 1"].append(seconds)
        accuracy["generate 1"] = result.model_summary("base")["accuracy"]
        runs["shared"].append(_scorer_time(manager, eval_set, images, score_loglik, batch))
        runs["rows"].append(_scorer_time(manager, eval_set, images, rows_loglik, batch))
        models = ["base", "demo-es", "demo-es-2"]
        runs["one pass"].append(_timed(lambda: run_eval(manager, eval_set, models, "loglik",
                                                        EvalOptions(batch_size=batch), folder=out / "all"))[0])
        runs["separate"].append(sum(_timed(lambda: run_eval(manager, eval_set, [name], "loglik",
                                                            EvalOptions(batch_size=batch), folder=out / name))[0]
                                    for name in models))
        both = run_eval(manager, eval_set, ["base"], ["loglik", "generate"], beams, folder=out / "both")
        for method in ("loglik", "generate"):  # the seconds its rows report (ms a question x questions)
            summary = both.model_summary(f"base · {method}")
            runs[f"both: {method}"].append(summary["mean_ms"] * summary["n"] / 1000)
            accuracy[f"both: {method}"] = summary["accuracy"]
    return {key: [statistics.median(values), accuracy.get(key)] for key, values in runs.items()}


def _table(found: dict, count: int, repeats: int) -> str:
    per = lambda key, models=1: 1000 * found[key][0] / count / models  # noqa: E731
    acc = lambda key: f"{found[key][1]:.0%}" if found[key][1] is not None else ""  # noqa: E731
    lines = [f"| setting ({count} questions, median of {repeats}) | wall s | ms/question/model | accuracy | ratio |",
             "|---|---:|---:|---:|---|",
             f"| run_eval loglik (base) | {found['loglik'][0]:.2f} | {per('loglik'):.1f} | {acc('loglik')} | "
             f"{found['generate'][0] / found['loglik'][0]:.1f}x faster than generate (target >= 20x) |",
             f"| run_eval generate, 5 beams, 1 new token (base) | {found['generate'][0]:.2f} | {per('generate'):.1f} | "
             f"{acc('generate')} | 1.0x |",
             f"| run_eval generate, 5 beams, 1 new token, one question at a time | {found['generate 1'][0]:.2f} | "
             f"{per('generate 1'):.1f} | {acc('generate 1')} | loglik {found['generate 1'][0] / found['loglik'][0]:.1f}x "
             "faster than this |",
             f"| loglik scorer, shared prefix (kept) | {found['shared'][0]:.2f} | {per('shared'):.1f} | | "
             f"{found['rows'][0] / found['shared'][0]:.1f}x faster than one row per option |",
             f"| loglik scorer, one row per option | {found['rows'][0]:.2f} | {per('rows'):.1f} | | 1.0x |",
             f"| base + 2 adapters, one run | {found['one pass'][0]:.2f} | {per('one pass', 3):.1f} | | "
             f"{found['separate'][0] / found['one pass'][0]:.2f}x faster than 3 runs |",
             f"| base + 2 adapters, 3 separate runs | {found['separate'][0]:.2f} | {per('separate', 3):.1f} | | 1.0x |",
             f"| one run, both methods: loglik rows | {found['both: loglik'][0]:.2f} | {per('both: loglik'):.1f} | "
             f"{acc('both: loglik')} | {found['both: generate'][0] / found['both: loglik'][0]:.1f}x faster than "
             "generate in the same run |",
             f"| one run, both methods: generate rows (5 beams, 1 new token) | {found['both: generate'][0]:.2f} | "
             f"{per('both: generate'):.1f} | {acc('both: generate')} | 1.0x |"]
    return "\n".join(lines)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is printed")
    parser.add_argument("--model", default="demo", help="'demo' or a folder saved with save_pretrained")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        manager = ModelManager(_settings(folder, args.model))
        print(f"model: {manager.load().summary()}")
        eval_set = _eval_set(folder, args.questions)
        images = [[load_image(path) for path in item.images] for item in eval_set.items]
        warm = EvalSet(eval_set.path, "benchmark", "choice", eval_set.items[:8])
        for method in ("loglik", "generate"):  # warm-up: first-call allocations, adapters attached
            run_eval(manager, warm, ["base", "demo-es", "demo-es-2"], method, folder=folder / "warm" / method)
        found = _measure(manager, eval_set, images, args, folder)
        print(_table(found, args.questions, args.repeats))


if __name__ == "__main__":
    main()
