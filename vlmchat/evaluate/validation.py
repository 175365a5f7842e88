"""The loop closes: after a fine-tune, base vs the new adapter on the job's validation split.

Each validation sample becomes a caption-style item (its first user turn and images, its last answer
as the reference); both models answer on one loaded base, and the paired verdict says whether the
adapter follows the data better than the base.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..lora.runtime import BASE
from .sets import CAPTION, EvalItem, EvalSet


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text").strip()


def items_from_samples(samples) -> list[EvalItem]:
    """Caption items from fine-tune samples: the first user turn (and images) -> the last assistant answer."""
    items = []
    for sample in samples:
        messages = list(sample.messages)
        user = next((m for m in messages if m["role"] == "user"), None)
        answer = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
        if user is None or answer is None:
            continue
        items.append(EvalItem(source=sample.source, question=_text(user["content"]), images=tuple(sample.images),
                              references=(_text(answer["content"]),)))
    return items


def evaluate_on_validation(spec, adapter: Path, samples, job_dir: Path, progress=None,
                           cancel=None) -> tuple[str, dict, Path]:
    """(verdict sentence, numbers, results folder) of base vs `adapter` on `samples`, in this process
    (`progress(done, total, text)` after every batch, as `run_eval` calls it; `cancel.is_set()` checked between
    batches: no verdict then)."""
    from ..models.manager import ModelManager
    from ..settings import PathSettings, Settings
    from .run import run_eval

    # The job is self-contained: its device, its image detail, its adapters folder, its job folder.
    defaults = Settings()
    settings = dataclasses.replace(defaults, model=dataclasses.replace(defaults.model, device=spec.device),
                                   generation=dataclasses.replace(defaults.generation,
                                                                  image_detail=spec.image_detail),
                                   paths=PathSettings(adapters=str(Path(adapter).parent), outputs=str(job_dir)))
    manager = ModelManager(settings)
    manager.load(spec.model_source or spec.model)
    try:
        eval_set = EvalSet(path=f"{spec.data} (validation split)", format="fine-tune validation split",
                           kind=CAPTION, items=items_from_samples(samples))
        folder = Path(job_dir) / "eval"
        result = run_eval(manager, eval_set, [BASE, Path(adapter).name], "generate", progress=progress,
                          cancel=cancel, folder=folder)
        if result.cancelled:
            return (f"Not evaluated: the evaluation was cancelled (the adapter is written). For a verdict, run "
                    f"`launch.py eval --data FOLDER --adapter {Path(adapter).name}` on pictures it did not train on "
                    "(or the Evaluate tab)."), {}, folder
        verdicts = result.verdicts()
        text, numbers = verdicts[0] if verdicts else ("no verdict", {})
        return text, numbers, folder
    finally:
        manager.unload()
