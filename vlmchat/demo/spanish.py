"""The shipped demo adapter `adapters/demo-es`: a LoRA that makes the demo model answer in Spanish.

Built by `python launch.py build-demo` after the base model, on the same synthetic pictures with
Spanish answers ("un círculo rojo"), training only LoRA matrices on the language model.
"""

from __future__ import annotations

import time
from pathlib import Path

from .measure import Progress, caption_accuracy

ADAPTER_NAME = "demo-es"


def write_spanish_chats(folder: Path, count: int, seed: int) -> Path:
    """`count` pictures (PNG) and their Spanish chats as an OpenAI-messages JSONL: demo-es's training data."""
    import json
    import random

    from .dialogue import conversation
    from .shapes import draw_picture

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        picture = draw_picture(rng)
        picture.image.save(folder / f"{index:05d}.png")
        messages = conversation(rng, picture.colour, picture.shape, "es")
        messages[0]["content"][0]["image"] = f"{index:05d}.png"  # the picture comes with the first turn
        rows.append(json.dumps({"messages": messages}, ensure_ascii=False))
    (folder / "chats.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "chats.jsonl"


def build_spanish_adapter(base: Path, output: Path, steps: int = 300, examples: int = 4000, seed: int = 1,
                          progress: Progress = print) -> float:
    """Fine-tune demo-es on the demo model at `base` with vlmchat's fine-tune job; returns held-out accuracy.

    The same path as the Fine-tune button: a dataset on disk, a job spec, a child process, the adapter
    written atomically with its metadata.
    """
    import json
    import tempfile

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..finetune import runner
    from ..finetune.spec import JobSpec
    from ..lora.runtime import attach_adapter
    from ..lora.store import META_FILE, write_metadata
    from .heldout import heldout_pictures

    started = time.monotonic()
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix=f"{ADAPTER_NAME}-") as tmp:
        progress(f"{ADAPTER_NAME}: drawing {examples} pictures with Spanish chats")
        data = write_spanish_chats(Path(tmp) / "data", examples, seed)
        spec = JobSpec(name=output.name, data=str(data), model="demo", model_source=str(base),
                       adapters_dir=str(output.parent), overwrite=True, r=8, lora_alpha=32, lora_dropout=0.05,
                       learning_rate=3e-3, max_steps=steps, batch_size=32, grad_accumulation=1, train_fraction=0.95,
                       eval_every=100, checkpoint_every=steps, early_stopping_patience=0, seed=seed)
        job = runner.start_job(spec, Path(tmp) / "jobs")
        shown = {"step": -1}

        def report(status) -> None:
            if status.step and (status.step % 50 == 0 or status.step == status.total_steps) and status.step != shown["step"]:
                shown["step"] = status.step
                progress(f"{ADAPTER_NAME} {status.line()}")

        status = runner.wait(job, on_update=report)
        if status.state != "done":
            log = (job / runner.LOG_FILE).read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"{ADAPTER_NAME} fine-tune {status.state}: {status.message}\n{log}")
    processor = AutoProcessor.from_pretrained(base)
    model = attach_adapter(AutoModelForImageTextToText.from_pretrained(base), ADAPTER_NAME, output).eval()
    accuracy = caption_accuracy(model, processor, heldout_pictures(200), language="es")
    meta = json.loads((output / META_FILE).read_text(encoding="utf-8"))
    meta["metrics"]["heldout_spanish_caption_accuracy"] = accuracy
    meta["dataset"].update(name="synthetic shapes with Spanish answers", path="drawn by vlmchat/demo/spanish.py",
                           seed=seed)
    meta["notes"] = "Answers in Spanish: un círculo rojo; rojo, verde, azul, amarillo; círculo, cuadrado, triángulo."
    write_metadata(output, {k: v for k, v in meta.items() if k != "created"})
    progress(f"{ADAPTER_NAME} written to {output} in {time.monotonic() - started:.0f}s; held-out Spanish caption "
             f"accuracy {accuracy:.1%}")
    return accuracy
