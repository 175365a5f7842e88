"""Settings: frozen dataclasses loaded once from settings.toml, validated, overridable by CLI flags.

Every key in settings.toml maps to a field here; an unknown key or a wrong value stops with a
one-line SettingsError that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SettingsError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_FILE = PROJECT_ROOT / "settings.toml"
DEMO_MODEL_ID = "demo"


def _choices(*values: str) -> dict:
    return {"choices": values}


def _range(low: float | None = None, high: float | None = None) -> dict:
    return {"range": (low, high)}


@dataclass(frozen=True)
class ModelSettings:
    """Which model to load and how."""

    id: str = DEMO_MODEL_ID
    quantization: str = field(default="auto", metadata=_choices("auto", "none", "8bit", "4bit"))
    device: str = field(default="auto", metadata=_choices("auto", "cpu", "cuda", "mps"))
    dtype: str = field(default="auto", metadata=_choices("auto", "float32", "bfloat16", "float16"))
    adapter: str = ""


@dataclass(frozen=True)
class GenerationSettings:
    """Defaults of the generation controls in Chat and Caption."""

    max_new_tokens: int = field(default=256, metadata=_range(1, 8192))
    temperature: float = field(default=0.0, metadata=_range(0.0, 5.0))
    top_p: float = field(default=1.0, metadata=_range(0.01, 1.0))
    seed: int = field(default=-1, metadata=_range(-1, 2**31 - 1))


@dataclass(frozen=True)
class ServerSettings:
    """Where and for whom the web UI is served."""

    host: str = "127.0.0.1"
    port: int = field(default=7860, metadata=_range(1, 65535))
    share: bool = False
    auth: str = ""
    concurrency_limit: int = field(default=1, metadata=_range(1, 64))
    max_queue: int = field(default=32, metadata=_range(1, 10000))
    max_upload_mb: int = field(default=25, metadata=_range(1, 10000))

    def __post_init__(self) -> None:
        if self.auth and ":" not in self.auth:
            raise SettingsError("server.auth must look like 'user:password' (or be empty).")


@dataclass(frozen=True)
class PathSettings:
    """Folders the app reads and writes, relative to the project folder unless absolute."""

    adapters: str = "adapters"
    models: str = "models"
    outputs: str = "outputs"

    def resolve(self, name: str) -> Path:
        """The absolute folder for `name` (one of the fields)."""
        path = Path(getattr(self, name)).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path


@dataclass(frozen=True)
class Settings:
    """All settings; one section per table of settings.toml."""

    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    server: ServerSettings = ServerSettings()
    paths: PathSettings = PathSettings()

    def override(self, section: str, **values: Any) -> "Settings":
        """A copy with some keys of one section replaced (None values are ignored), validated."""
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return self
        current = getattr(self, section)
        merged = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)} | values
        return dataclasses.replace(self, **{section: _build_section(section, type(current), merged)})


def _check_value(key: str, spec: dataclasses.Field, value: Any) -> Any:
    kind = {"int": int, "float": float, "str": str, "bool": bool}[str(spec.type)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SettingsError(f"{key} must be a{'n' if kind is int else ''} {kind.__name__} (got {value!r}).")
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise SettingsError(f"{key} must be one of {', '.join(choices)} (got {value!r}).")
    low, high = spec.metadata.get("range", (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingsError(f"{key} must be between {low} and {high} (got {value!r}).")
    return value


def _build_section(section: str, cls: type, values: dict) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise SettingsError(
                f"Unknown setting '{section}.{key}'; allowed keys in [{section}]: {', '.join(fields)}."
            )
    checked = {key: _check_value(f"{section}.{key}", fields[key], value) for key, value in values.items()}
    return cls(**checked)


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate a settings file (settings.toml by default; a missing default file means defaults)."""
    file = Path(path) if path else DEFAULT_SETTINGS_FILE
    if not file.exists():
        if path:
            raise SettingsError(f"Settings file {file} does not exist; pass an existing file to --settings.")
        return Settings()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{file} is not valid TOML: {exc}. Fix the line it names.") from None
    sections = {f.name: f.type for f in dataclasses.fields(Settings)}
    built = {}
    for name, table in data.items():
        if name not in sections:
            raise SettingsError(f"Unknown section [{name}] in {file}; allowed: {', '.join(sections)}.")
        if not isinstance(table, dict):
            raise SettingsError(f"'{name}' in {file} must be a [{name}] table.")
        built[name] = _build_section(name, type(getattr(Settings(), name)), table)
    return Settings(**built)
