"""Fine-tune seconds per picture and peak memory on real-size models, at low vs high detail, checkpointing off vs on.

Run: .venv/bin/python benchmarks/realsize/finetune_steps.py [--model smolvlm-256m ...] [--steps 3]
     [--runs low-off,high-off,low-on]

Each run is `launch.py finetune` as a user runs it (a child process, the job's own progress events):
4 pictures of 512x512 with a caption each, batch 1, no accumulation, no evaluation after, one after another.
Prints a markdown row per run: seconds per picture and peak memory at the last step, and the plan's
estimate of both (`/finetune_plan`'s figures for the same spec). Build the models first with
`benchmarks/realsize/build.py NAME` (into outputs/realsize/NAME).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))


def _data(folder: Path) -> Path:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for index, colour in enumerate(("red", "blue", "green", "yellow")):
        picture = Image.new("RGB", (512, 512), "white")
        ImageDraw.Draw(picture).ellipse((100, 100, 400, 400), fill=colour)
        picture.save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"a {colour} circle on a white background", encoding="utf-8")
    return folder


def _settings(folder: Path) -> Path:
    file = folder / "settings.toml"
    file.write_text(f'[paths]\nmodels = "{(ROOT / "models").as_posix()}"\n'
                    f'adapters = "{(folder / "adapters").as_posix()}"\noutputs = "{(folder / "outputs").as_posix()}"\n',
                    encoding="utf-8")
    return file


def _plan(settings_file: Path, data: Path, model: Path, detail: str, checkpointing: str) -> dict:
    from vlmchat.finetune.plan import plan_run
    from vlmchat.finetune.spec import JobSpec
    from vlmchat.settings import load_settings

    spec = JobSpec.from_settings(load_settings(settings_file), "plan", str(data), model=str(model), batch_size=1,
                                 grad_accumulation=1, max_steps=100, image_detail=detail,  # 100: minutes to 2 decimals
                                 gradient_checkpointing=checkpointing)
    from vlmchat.finetune.job import usable_cores

    return plan_run(spec, on_gpu=False, cores=usable_cores())  # a CLI run with no UI gets every core


def _run(settings_file: Path, data: Path, model: Path, name: str, detail: str, checkpointing: str,
         steps: int) -> dict:
    """The last step event of one `launch.py finetune` run."""
    env = dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1")
    done = subprocess.run([sys.executable, "launch.py", "--settings", str(settings_file), "finetune",
                           "--data", str(data), "--name", name, "--model", str(model), "--max-steps", str(steps),
                           "--batch-size", "1", "--grad-accumulation", "1", "--gradient-checkpointing", checkpointing,
                           "--no-evaluate", "--train-fraction", "1.0", "--image-detail", detail],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: {done.stderr[-2000:]}")
    jobs = sorted((settings_file.parent / "outputs" / "finetune").glob(f"{name}-*"))
    events = [json.loads(line) for line in (jobs[-1] / "progress.jsonl").read_text().splitlines() if line.strip()]
    return [e for e in events if e.get("event") == "step"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["smolvlm-256m", "smolvlm-500m", "qwen2-vl-2b"])
    parser.add_argument("--runs", default="low-off,high-off,low-on", help="DETAIL-CHECKPOINTING pairs")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print("| model | image detail | checkpointing | s per picture | plan | peak GiB | plan |")
    print("|---|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        data, settings_file = _data(folder / "data"), _settings(folder)
        for name in args.model:
            model = ROOT / "outputs" / "realsize" / name
            if not (model / "config.json").is_file():
                raise SystemExit(f"{model} is missing: run benchmarks/realsize/build.py {name} first")
            for run in args.runs.split(","):
                detail, checkpointing = run.split("-")
                step = _run(settings_file, data, model, f"{name}-{run}", detail, checkpointing, args.steps)
                plan = _plan(settings_file, data, model, detail, checkpointing)
                seconds = 1 / step["samples_per_s"]
                planned = plan["minutes"] * 60 / (plan["steps"] * plan["effective_batch"])
                print(f"| {name} | {detail} | {checkpointing} | {seconds:.1f} | {planned:.1f} | "
                      f"{step['memory_gib']:.2f} | {plan['peak_gib']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
