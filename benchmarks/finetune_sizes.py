"""Fine-tune with the defaults on 50 / 80 / 100 / 300 / 1000 pictures: does the adapter learn, and how long does it take?

Each dataset is written in LLaMA-Factory's ShareGPT layout (`messages` with `<image>` + `images`), every
answer a caption in Spanish ("un círculo rojo"), as a user would bring it. Each run uses the shipped
settings.toml with nothing else given (the auto schedule), through the same child-process job as the
Fine-tune button; 80 samples also run with only `epochs = 10` given. The adapter then captions 50 held-out
pictures from the separately written generator; a caption counts when it is exactly the Spanish caption.

Run: .venv/bin/python benchmarks/finetune_sizes.py [SIZES...]
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_sharegpt(folder: Path, count: int, seed: int, caption=None) -> Path:
    """`count` pictures in LLaMA-Factory's multimodal ShareGPT layout, each captioned `caption(colour, shape)`
    (default: in Spanish, "un círculo rojo")."""
    from vlmchat.demo.dialogue import answer
    from vlmchat.demo.shapes import draw_picture

    caption = caption or (lambda colour, shape: answer("caption", colour, shape, "es"))
    folder.mkdir(parents=True)
    rng, rows = random.Random(seed), []
    for index in range(count):
        picture = draw_picture(rng)
        picture.image.save(folder / f"{index:04d}.png")
        rows.append({"messages": [{"role": "user", "content": "<image>Describe the image."},
                                  {"role": "assistant", "content": caption(picture.colour, picture.shape)}],
                     "images": [f"{index:04d}.png"]})
    (folder / "train.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder / "train.json"


def run(count: int, tmp: Path, **given) -> dict:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmchat.demo.heldout import heldout_pictures
    from vlmchat.demo.measure import caption_accuracy
    from vlmchat.finetune import runner
    from vlmchat.finetune.spec import JobSpec
    from vlmchat.lora.runtime import attach_adapter
    from vlmchat.models.resolve import demo_model_path
    from vlmchat.settings import load_settings

    settings = load_settings()
    base = demo_model_path(settings)
    name = f"es{count}{'-' + '-'.join(given) if given else ''}"
    data = write_sharegpt(tmp / name, count, seed=count)
    spec = JobSpec.from_settings(settings, name, str(data), model_source=str(base), adapters_dir=str(tmp / "adapters"),
                                 evaluate=False, **given)
    started = time.monotonic()
    status = runner.wait(runner.start_job(spec, tmp / "jobs"))
    minutes = (time.monotonic() - started) / 60
    if status.state != "done":
        return {"samples": count, "given": given, "state": status.state, "message": status.message}
    model = attach_adapter(AutoModelForImageTextToText.from_pretrained(base), name, tmp / "adapters" / name).eval()
    accuracy = caption_accuracy(model, AutoProcessor.from_pretrained(base), heldout_pictures(50, seed=7), language="es")
    return {"samples": count, "given": given, "steps": status.total_steps, "minutes": round(minutes, 2),
            "accuracy": accuracy, "schedule": status.schedule}


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [50, 80, 100, 300, 1000]
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(n, Path(tmp)) for n in sizes]
        if 80 in sizes:
            results.append(run(80, Path(tmp), epochs=10))
    print("| samples | given | optimizer steps | minutes (2-core CPU) | Spanish captions of 50 new pictures |")
    print("|---|---|---|---|---|")
    for r in results:
        given = ", ".join(f"{k}={v}" for k, v in r["given"].items()) or "defaults"
        if "accuracy" not in r:
            print(f"| {r['samples']} | {given} | {r['state']}: {r['message']} | | |")
            continue
        print(f"| {r['samples']} | {given} | {r['steps']} | {r['minutes']:.2f} | {r['accuracy']:.0%} |")


if __name__ == "__main__":
    main()
