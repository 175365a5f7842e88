"""Writing the finished adapter into adapters/<name>/: PEFT layout + vlmchat.json, atomically.

The adapter is assembled in a hidden staging folder inside the adapters folder and renamed into
place in one step, so the adapters list never shows a half-written adapter. An existing adapter of
the same name is replaced only when the job says `overwrite`; otherwise the result stays in the job
folder (final/) and the error says how to import it under another name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import InputError
from ..files import staged_folder
from ..lora.store import adapter_path, write_metadata
from ..settings import DEMO_MODEL_ID
from .datasets import dataset_hash
from .loop import BEST


def metadata(trainer, outcome: str) -> dict:
    """vlmchat.json for the adapter a trainer produced."""
    spec, model = trainer.spec, trainer.acc.unwrap_model(trainer.model)
    samples = trainer.train.samples + trainer.val.samples
    best_loss, best_step = trainer.best
    used_best = (trainer.job_dir / BEST).is_dir() and best_step > 0
    metrics = {"steps": trainer.step, "final_train_loss": _round(trainer.last_loss),
               "final_eval_loss": _round(trainer.last_eval),
               "best_eval_loss": _round(best_loss if best_step else None), "best_step": best_step or None,
               "weights_from_step": best_step if used_best else trainer.step,
               "stopped": "early stopping" if outcome == "early" else "finished",
               "duration_s": round(trainer.duration(), 1)}
    return {
        "base_model": spec.model, "architecture": type(model.get_base_model()).__name__,
        "dataset": {"name": Path(spec.data).name, "path": str(spec.data), "format": trainer.report.format,
                    "sha256": dataset_hash(samples), "size": len(samples), "train_size": len(trainer.train),
                    "val_size": len(trainer.val), "skipped_rows": len(trainer.report.problems),
                    "skipped_too_long": len(trainer.train.skipped) + len(trainer.val.skipped)},
        "settings": {**spec.settings_dict(), **{f"setup.{k}": v for k, v in trainer.setup.reasons.items()},
                     **{f"auto.{k}": v for k, v in trainer.schedule_reasons.items()}},
        "metrics": metrics, "duration_s": metrics["duration_s"],
        "notes": f"LoRA fine-tuned with vlmchat on {Path(spec.data).name} ({len(samples)} samples, "
                 f"{trainer.step} steps).",
    }


def _round(value):
    return None if value is None or value != value or value == float("inf") else round(float(value), 5)


def install_adapter(trainer, outcome: str) -> tuple[Path | None, dict]:
    """Write the adapter (best eval checkpoint if there is one) into adapters/<name>/; returns (path, metrics)."""
    from .distributed import full_weights

    meta = metadata(trainer, outcome)
    weights = full_weights(trainer.acc, trainer.model)  # gathered by every process, written by the main one
    path = None
    if trainer.acc.is_main_process:
        spec = trainer.spec
        target = adapter_path(Path(spec.adapters_dir), spec.name)
        try:
            with staged_folder(target, replace=spec.overwrite) as staging:
                _write_adapter(trainer, staging, meta, weights)
        except FileExistsError:
            kept = trainer.job_dir / "final"
            with staged_folder(kept, replace=True) as staging:
                _write_adapter(trainer, staging, meta, weights)
            raise InputError(f"An adapter named '{target.name}' already exists and overwrite was not confirmed. "
                             f"The trained adapter is kept in {kept}; import it from there under another name."
                             ) from None
        path = target
    trainer.acc.wait_for_everyone()
    return path, meta["metrics"]


def _write_adapter(trainer, staging: Path, meta: dict, weights: dict) -> None:
    best = trainer.job_dir / BEST
    if best.is_dir() and trainer.best[1] > 0:
        shutil.copytree(best, staging, dirs_exist_ok=True)
    else:
        trainer.acc.unwrap_model(trainer.model).save_pretrained(staging, state_dict=weights)
    import json

    config_file = staging / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    # plain PEFT resolves this name: the demo model's folder (relative to the project), else the hub id/path
    demo = trainer.spec.model == DEMO_MODEL_ID
    written = config.get("base_model_name_or_path")
    config["base_model_name_or_path"] = "models/vlmchat-demo" if demo else trainer.spec.model
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    card = staging / "README.md"  # PEFT's model card names the base as it was loaded: this computer's folder
    if written and card.is_file() and written != config["base_model_name_or_path"]:
        card.write_text(card.read_text(encoding="utf-8").replace(written, config["base_model_name_or_path"]),
                        encoding="utf-8")
    write_metadata(staging, meta)
