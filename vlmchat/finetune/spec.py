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
from ..models.families import IMAGE_DETAILS
from ..settings import FinetuneSettings, check_bounds, settings_flag
from .distributed import STRATEGIES, check_strategy
from .recipe import PRESETS

PRESET_VALUES = {name: {k: v for k, v in values.items() if k != "min_steps"} for name, values in PRESETS.items()}

JOB_FILE = "job.json"
HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(FinetuneSettings))


@dataclass(frozen=True, kw_only=True)
class JobSpec(FinetuneSettings):
    """One fine-tune run: the [finetune] hyperparameters (inherited, PEFT's names) plus what and where."""

    name: str = field(metadata={"help": "Adapter name: the folder adapters/<name>/ it becomes."})
    data: str = field(metadata={"help": "Dataset folder or .json/.jsonl file."})
    model: str = field(default="demo", metadata={"help": "Base model: 'demo', a hub id or a local folder."})
    model_source: str = field(default="", metadata={"help": "The resolved folder or hub id of `model`."})
    adapters_dir: str = ""
    settings_file: str = ""  # the --settings file the run was started with ("": settings.toml)
    overwrite: bool = field(default=False, metadata={"help": "replace an existing adapter of the same name"})
    skip_invalid: bool = field(default=False, metadata={"help": "train on the good rows when the dataset check "
                                                                "finds problems"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda", "choices": ("auto", "cpu", "cuda")})
    image_detail: str = field(default="auto", metadata={
        "help": "low | auto | high: image tokens per picture while training, as in Chat (auto: low on the CPU, "
                "high on a GPU with room; default: [generation] image_detail in settings.toml)", "choices": IMAGE_DETAILS})
    num_processes: int = field(default=1, metadata={"help": "processes, one per GPU (accelerate launch); default 1",
                                                    "range": (1, 1024)})
    distributed: str = field(default="ddp", metadata={
        "help": "how the processes share the model: ddp = each holds all of it (it fits one GPU) | fsdp = sharded "
                "over them (it does not) | deepspeed = reserved for DeepSpeed ZeRO-3", "choices": STRATEGIES})

    def __post_init__(self) -> None:
        validate_adapter_name(self.name)
        for spec in dataclasses.fields(self):
            check_bounds(spec.name, spec, getattr(self, spec.name), InputError)
        if not str(self.data).strip():
            raise InputError("Give a dataset: a folder of images with .txt captions or a .json/.jsonl file.")
        check_strategy(self.distributed, self.num_processes, self.quantization)

    @classmethod
    def from_settings(cls, settings, name: str, data: str, **changes) -> "JobSpec":
        """A spec with settings.toml's [finetune] defaults, the loaded paths and `changes` (None = keep)."""
        values = dataclasses.asdict(settings.finetune)
        preset = changes.get("preset") or values["preset"]
        values.update(PRESET_VALUES.get(preset, {}))  # a preset's values replace settings.toml's, not flags
        values.update({k: v for k, v in changes.items() if v is not None})
        values.setdefault("model", settings.model.id)
        values.setdefault("image_detail", settings.generation.image_detail)
        values.setdefault("adapters_dir", str(settings.paths.resolve("adapters")))
        values.setdefault("settings_file", settings.file or "")
        return cls(name=name, data=str(data), **values)

    def refuse_existing_adapter(self) -> None:
        """InputError when adapters/<name>/ exists and overwrite was not confirmed, or the adapters folder is a file."""
        folder = Path(self.adapters_dir)
        if self.adapters_dir and folder.exists() and not folder.is_dir():  # else found after training, when written
            raise InputError(f"The adapters folder {folder} is a file, not a folder; set adapters in [paths] of "
                             f"{self.settings_file or 'settings.toml'} to a folder (or move the file away).")
        if self.adapters_dir and (folder / self.name).exists() and not self.overwrite:
            raise InputError(f"An adapter named '{self.name}' already exists; pick another name or confirm "
                             "overwrite (--overwrite, or the Overwrite box in the Fine-tune tab).")
        if self.adapters_dir and folder.is_dir():  # BT-PHOTO beside bt-photo: one folder on macOS and Windows
            twin = next((p.name for p in folder.iterdir() if p.name != self.name and p.name.lower() == self.name.lower()
                         and p.is_dir()), None)
            if twin:
                raise InputError(f"An adapter named '{twin}' already exists, which differs from '{self.name}' only in "
                                 "case (one and the same folder on macOS and Windows); pick another name, or train "
                                 f"'{twin}' again with overwrite.")

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
        skip = {"name", "data", "model", "model_source", "adapters_dir", "settings_file", "overwrite", "skip_invalid"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}

    def command(self) -> str:
        """The `python launch.py finetune ...` command that starts the same run."""
        parts = ["python3", "launch.py", *settings_flag(self.settings_file), "--model", self.model, "finetune",
                 "--data", self.data, "--name", self.name]
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        defaults.update(PRESET_VALUES.get(self.preset, {}))
        for key in CLI_FLAGS:
            value = getattr(self, key)
            if value == defaults[key] and key not in ("max_steps", "epochs", "preset"):
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):  # set against its default: on, or --no-X where on is the default
                parts += [flag if value else "--no-" + key.replace("_", "-")]
            else:
                parts += [flag, str(value)]
        return shlex.join(parts)


# The spec fields the CLI exposes as --flags (also used by `JobSpec.command`): every hyperparameter, and how to run.
CLI_FLAGS = HYPERPARAMETERS + ("device", "image_detail", "num_processes", "distributed", "overwrite", "skip_invalid")
