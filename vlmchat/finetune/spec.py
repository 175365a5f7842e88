"""The job spec: everything one fine-tune run needs, as a plain dataclass saved to job.json.

The UI and the CLI build a `JobSpec` from settings.toml's [finetune] section plus what the user
changed; the child process reads it back. `command()` gives the equivalent terminal command, which
the UI shows next to the config.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..lora.store import validate_adapter_name

TARGETS = ("language", "language+projector", "all")
CHOICES = {"targets": TARGETS, "quantization": ("auto", "none", "4bit"), "gradient_checkpointing": ("auto", "on", "off"),
           "optimizer": ("auto", "adamw", "paged_adamw_8bit"), "device": ("auto", "cpu", "cuda")}
JOB_FILE = "job.json"


@dataclass(frozen=True)
class JobSpec:
    """One fine-tune run. Hyperparameter names follow PEFT (r, lora_alpha, lora_dropout)."""

    name: str = field(metadata={"help": "Adapter name: the folder adapters/<name>/ it becomes."})
    data: str = field(metadata={"help": "Dataset folder or .json/.jsonl file."})
    model: str = field(default="demo", metadata={"help": "Base model: 'demo', a hub id or a local folder."})
    model_source: str = field(default="", metadata={"help": "The resolved folder or hub id of `model`."})
    adapters_dir: str = ""
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing adapter of the same name."})
    skip_invalid: bool = field(default=False, metadata={"help": "Train on the good rows when some have problems."})
    r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    targets: str = "language"
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.05
    epochs: int = 3
    max_steps: int = 0
    batch_size: int = 4
    grad_accumulation: int = 4
    max_length: int = 2048
    train_fraction: float = 0.8
    eval_every: int = 50
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    early_stopping_patience: int = 5
    quantization: str = "auto"
    gradient_checkpointing: str = "auto"
    optimizer: str = "auto"
    caption_prompt: str = "Describe the image."
    seed: int = 0
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    num_processes: int = field(default=1, metadata={"help": "Processes for `accelerate launch` (data parallel)."})

    def __post_init__(self) -> None:
        validate_adapter_name(self.name)
        for key in ("r", "lora_alpha", "epochs", "batch_size", "grad_accumulation", "checkpoint_every",
                    "keep_checkpoints", "num_processes"):
            if int(getattr(self, key)) < 1:
                raise InputError(f"{key} must be at least 1 (got {getattr(self, key)!r}).")
        if not 0 < float(self.learning_rate) < 1:
            raise InputError(f"learning_rate must be between 0 and 1 (got {self.learning_rate!r}).")
        if not 0 < float(self.train_fraction) <= 1:
            raise InputError(f"train_fraction must be above 0 and at most 1 (got {self.train_fraction!r}).")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise InputError(f"{key} must be one of {', '.join(allowed)} (got {getattr(self, key)!r}).")
        if not str(self.data).strip():
            raise InputError("Give a dataset: a folder of images with .txt captions or a .json/.jsonl file.")

    @classmethod
    def from_settings(cls, settings, name: str, data: str, **changes) -> "JobSpec":
        """A spec with settings.toml's [finetune] defaults, the loaded paths and `changes` (None = keep)."""
        defaults = dataclasses.asdict(settings.finetune)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in defaults.items() if k in known}
        values.update({k: v for k, v in changes.items() if v is not None})
        values.setdefault("model", settings.model.id)
        values.setdefault("adapters_dir", str(settings.paths.resolve("adapters")))
        return cls(name=name, data=str(data), **values)

    def refuse_existing_adapter(self) -> None:
        """InputError when adapters/<name>/ exists and overwrite was not confirmed."""
        if self.adapters_dir and (Path(self.adapters_dir) / self.name).exists() and not self.overwrite:
            raise InputError(f"An adapter named '{self.name}' already exists; pick another name or confirm "
                             "overwrite (--overwrite, or the Overwrite box in the Fine-tune tab).")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_file(cls, path: str | Path) -> "JobSpec":
        """Read job.json (unknown keys from a newer version are an error that names them)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"{path} has unknown keys {sorted(unknown)}; it was written by another vlmchat version.")
        return cls(**data)

    def settings_dict(self) -> dict:
        """The hyperparameters worth recording in the adapter's metadata."""
        skip = {"name", "data", "model", "model_source", "adapters_dir", "overwrite", "skip_invalid"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}

    def command(self) -> str:
        """The `python launch.py finetune ...` command that starts the same run."""
        parts = ["python", "launch.py", "--model", self.model, "finetune", "--data", self.data, "--name", self.name]
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in CLI_FLAGS:
            value = getattr(self, key)
            if value == defaults[key] and key not in ("max_steps", "epochs"):
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                parts += [flag] if value else []
            else:
                parts += [flag, str(value)]
        return shlex.join(parts)


# The spec fields the CLI exposes as --flags (also used by `JobSpec.command`).
CLI_FLAGS = ("epochs", "max_steps", "r", "lora_alpha", "lora_dropout", "targets", "learning_rate", "warmup_ratio",
             "batch_size", "grad_accumulation", "max_length", "train_fraction", "eval_every", "checkpoint_every",
             "keep_checkpoints", "early_stopping_patience", "quantization", "gradient_checkpointing", "optimizer",
             "caption_prompt", "seed", "device", "num_processes", "overwrite", "skip_invalid")
