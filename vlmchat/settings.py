"""Settings: frozen dataclasses loaded once from settings.toml, validated, overridable by CLI flags.

Every key in settings.toml maps to a field here; an unknown key or a wrong value stops with a
one-line SettingsError that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SettingsError

# The bounds of an answer's settings, everywhere they are taken (settings.toml, the Chat tab, /chat, /v1).
MAX_NEW_TOKENS = 8192
MAX_TEMPERATURE = 2.0  # OpenAI's own range
MIN_TOP_P = 0.01  # the least top-p anywhere (settings, Chat's slider, /chat, /v1): they said 0.01, 0.05 and 'above 0'
MAX_SEED = 2**63 - 1  # a 64-bit integer, as OpenAI's API and torch take it

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
    compile: str = field(default="auto", metadata=_choices("auto", "off"))


@dataclass(frozen=True)
class GenerationSettings:
    """Defaults of the generation controls in Chat and Caption."""

    max_new_tokens: int = field(default=256, metadata=_range(1, MAX_NEW_TOKENS))
    temperature: float = field(default=0.0, metadata=_range(0.0, MAX_TEMPERATURE))
    top_p: float = field(default=1.0, metadata=_range(MIN_TOP_P, 1.0))
    seed: int = field(default=-1, metadata=_range(-1, MAX_SEED))
    image_detail: str = field(default="auto", metadata=_choices("low", "auto", "high"))


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
    max_batch_upload_mb: int = field(default=1000, metadata=_range(1, 100000))
    login_attempts: int = field(default=5, metadata=_range(1, 1000))
    login_lockout_minutes: float = field(default=15.0, metadata=_range(0.001, 10080.0))
    login_delay_s: float = field(default=1.0, metadata=_range(0.0, 60.0))

    @property
    def exposed(self) -> bool:
        """True when people on other machines can reach the app (a share link or a non-loopback host)."""
        loopback = self.host in ("localhost", "::1") or self.host.startswith("127.")
        return self.share or not loopback

    def __post_init__(self) -> None:
        if self.auth and ":" not in self.auth:
            raise SettingsError("server.auth must look like 'user:password' (or be empty).")


@dataclass(frozen=True)
class ApiSettings:
    """The OpenAI-compatible API under /v1 and the dynamic batcher in front of the model."""

    key: str = ""  # Bearer key when a login is required; "" = VLMCHAT_API_KEY, else generated and printed once
    allow_remote_images: bool = False  # fetch http(s) image_url parts (a server-side fetch is an SSRF risk)
    max_batch: int = field(default=8, metadata=_range(1, 256))
    batch_window_ms: float = field(default=50.0, metadata=_range(0.0, 1000.0))


@dataclass(frozen=True)
class EndpointSettings:
    """One OpenAI-compatible server used as a model: [endpoints.NAME] in settings.toml."""

    name: str
    base_url: str = ""
    model: str = ""
    api_key_env: str = ""  # environment variable holding the key ("" = the server needs none)
    price_in: float = field(default=0.0, metadata=_range(0.0, 1e6))  # USD per million input tokens (0 = not set)
    price_out: float = field(default=0.0, metadata=_range(0.0, 1e6))  # USD per million output tokens
    max_concurrency: int = field(default=4, metadata=_range(1, 256))
    timeout_s: float = field(default=120.0, metadata=_range(1.0, 3600.0))


ENDPOINT_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


def build_endpoints(tables: dict) -> tuple[EndpointSettings, ...]:
    """[endpoints.NAME] tables -> entries; messages name endpoints.NAME.key."""
    import re

    fields = {f.name: f for f in dataclasses.fields(EndpointSettings) if f.name != "name"}
    entries = []
    for name, table in tables.items():
        if not re.fullmatch(ENDPOINT_NAME, name) or not isinstance(table, dict):
            raise SettingsError(f"endpoints.{name} must be an [endpoints.NAME] table (NAME: letters, digits, . _ -) "
                                "with base_url and model.")
        unknown = [key for key in table if key not in fields]
        if unknown:
            raise SettingsError(f"Unknown setting 'endpoints.{name}.{unknown[0]}'; allowed keys: {', '.join(fields)}.")
        checked = {key: _check_value(f"endpoints.{name}.{key}", fields[key], value) for key, value in table.items()}
        if not str(checked.get("base_url", "")).startswith(("http://", "https://")) or not checked.get("model"):
            raise SettingsError(f"endpoints.{name} needs base_url (http:// or https://, e.g. http://127.0.0.1:8000/v1) "
                                "and model (the name the server knows the model by).")
        entries.append(EndpointSettings(name=name, **checked))
    return tuple(entries)


@dataclass(frozen=True)
class CaptionSettings:
    """Defaults of the Caption tab and `launch.py caption`."""

    batch_size: int | str = field(default="auto", metadata={"range": (1, 256), "auto": True})
    prompt: str = "Describe the image."
    format: str = field(default="txt", metadata=_choices("txt", "jsonl", "csv"))

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise SettingsError("caption.prompt must not be empty; write the question to ask about every image.")


def _tune(help: str, *, advanced: bool = False, auto: bool = False, **check) -> dict:
    """Metadata of one [finetune] key: its help (CLI flag and form label), form group, "auto" allowed, checks."""
    meta = {"help": help, "advanced": advanced}
    if auto:
        meta["auto"] = True
    if "choices" in check:
        meta["choices"] = tuple(check["choices"])
    if "range" in check:
        meta["range"] = check["range"]
    return meta


@dataclass(frozen=True)
class FinetuneSettings:
    """Defaults of the Fine-tune tab and `launch.py finetune` (LoRA on the user's data).

    The one list of fine-tune hyperparameters: the job spec extends it, and the CLI flags and the
    form's controls are built from these fields and their metadata.
    """

    preset: str = field(default="balanced", metadata=_tune(
        "quick | balanced | thorough: how much training the auto values aim for", choices=("quick", "balanced", "thorough")))
    epochs: int | str = field(default="auto", metadata=_tune(
        "passes over the training split; auto = enough for the preset's optimizer steps", auto=True, range=(1, 1000)))
    max_steps: int = field(default=0, metadata=_tune("optimizer steps; 0 = decided by epochs", range=(0, 10_000_000)))
    learning_rate: float | str = field(default="auto", metadata=_tune(
        "peak learning rate; auto = the model's recipe, else by model size", auto=True, range=(1e-7, 1.0)))
    r: int = field(default=8, metadata=_tune("LoRA rank", advanced=True, range=(1, 1024)))
    lora_alpha: int = field(default=32, metadata=_tune("LoRA scale (alpha / r multiplies the update)", advanced=True,
                                                       range=(1, 4096)))
    lora_dropout: float = field(default=0.05, metadata=_tune("LoRA dropout", advanced=True, range=(0.0, 0.9)))
    targets: str = field(default="language", metadata=_tune(
        "layers LoRA trains: language | language+projector | all (also the vision tower)", advanced=True,
        choices=("language", "language+projector", "all")))
    warmup_ratio: float = field(default=0.05, metadata=_tune("share of the steps warming the learning rate up",
                                                             advanced=True, range=(0.0, 0.5)))
    batch_size: int | str = field(default="auto", metadata=_tune(
        "samples per forward pass (per process); auto = 4", advanced=True, auto=True, range=(1, 1024)))
    grad_accumulation: int | str = field(default="auto", metadata=_tune(
        "forward passes per optimizer step; auto = an effective batch of 4/8/16 by dataset size", advanced=True,
        auto=True, range=(1, 1024)))
    max_length: int = field(default=2048, metadata=_tune("longer samples (image tokens included) are skipped",
                                                         advanced=True, range=(16, 131072)))
    train_fraction: float = field(default=0.8, metadata=_tune("share of samples that train; the rest validate",
                                                              advanced=True, range=(0.05, 1.0)))
    eval_every: int = field(default=50, metadata=_tune("steps between eval-loss measurements; 0 = only at the end",
                                                       advanced=True, range=(0, 10_000_000)))
    checkpoint_every: int = field(default=100, metadata=_tune("steps between checkpoints", advanced=True,
                                                              range=(1, 10_000_000)))
    keep_checkpoints: int = field(default=2, metadata=_tune("checkpoints kept in the job folder", advanced=True,
                                                            range=(1, 100)))
    early_stopping_patience: int = field(default=5, metadata=_tune(
        "evals without a better eval loss before stopping; 0 = never", advanced=True, range=(0, 1000)))
    quantization: str = field(default="auto", metadata=_tune(
        "auto (QLoRA when bf16 LoRA does not fit the GPU) | none | 4bit", advanced=True, choices=("auto", "none", "4bit")))
    gradient_checkpointing: str = field(default="auto", metadata=_tune(
        "auto (on when memory is tight: GPU memory, or the RAM available on a CPU) | on | off", advanced=True,
        choices=("auto", "on", "off")))
    optimizer: str = field(default="auto", metadata=_tune(
        "auto (paged 8-bit AdamW on a GPU when memory is tight) | adamw | paged_adamw_8bit", advanced=True,
        choices=("auto", "adamw", "paged_adamw_8bit")))
    caption_prompt: str = field(default="Describe the image.", metadata=_tune(
        "the user turn paired with each caption of an image folder", advanced=True))
    seed: int = field(default=0, metadata=_tune("random seed (split, shuffling, LoRA init)", advanced=True,
                                                range=(0, 2**31 - 1)))
    evaluate: bool = field(default=True, metadata=_tune(
        "when done, evaluate base vs the new adapter on the validation split (when it has >= 6 samples)",
        advanced=True))


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
class CatalogEntry:
    """One model offered in the Model tab, with the sizes the quantization plan needs offline."""

    key: str
    id: str = ""
    family: str = ""
    gated: bool = False
    language_b: float = field(default=0.0, metadata=_range(0.001, 5000.0))
    vision_b: float = field(default=0.0, metadata=_range(0.0, 500.0))
    embeddings_b: float = field(default=0.0, metadata=_range(0.0, 500.0))
    kv_kib_per_token: float = field(default=0.0, metadata=_range(0.0, 100000.0))
    label: str = ""

    @property
    def title(self) -> str:
        """What the catalog dropdown shows."""
        return self.label or self.id


_CATALOG_REQUIRED = ("id", "family", "language_b", "vision_b")


def _build_catalog(tables: dict) -> tuple[CatalogEntry, ...]:
    """[catalog.<key>] tables -> entries; messages name catalog.<key>.<field>."""
    fields = {f.name: f for f in dataclasses.fields(CatalogEntry) if f.name != "key"}
    entries = []
    for key, table in tables.items():
        if not isinstance(table, dict):
            raise SettingsError(f"catalog.{key} must be a [catalog.{key}] table with id, family, language_b, vision_b.")
        for name in table:
            if name not in fields:
                raise SettingsError(f"Unknown setting 'catalog.{key}.{name}'; allowed keys: {', '.join(fields)}.")
        missing = [name for name in _CATALOG_REQUIRED if name not in table]
        if missing:
            raise SettingsError(f"catalog.{key} is missing {', '.join(missing)}; every entry needs "
                                f"{', '.join(_CATALOG_REQUIRED)}.")
        checked = {name: _check_value(f"catalog.{key}.{name}", fields[name], value) for name, value in table.items()}
        if checked["id"].count("/") != 1:
            raise SettingsError(f"catalog.{key}.id must be a hub id like 'owner/name' (got {checked['id']!r}).")
        if checked.get("embeddings_b", 0.0) > checked["language_b"]:
            raise SettingsError(f"catalog.{key}.embeddings_b must not exceed catalog.{key}.language_b.")
        entries.append(CatalogEntry(key=key, **checked))
    return tuple(entries)


@functools.lru_cache(maxsize=1)
def shipped_catalog() -> tuple[CatalogEntry, ...]:
    """The catalog of the shipped settings.toml: the default that a settings file extends."""
    try:
        tables = tomllib.loads(DEFAULT_SETTINGS_FILE.read_text(encoding="utf-8")).get("catalog", {})
        return _build_catalog(tables)
    except (OSError, tomllib.TOMLDecodeError, SettingsError):
        return ()


def _merge_catalog(base: tuple[CatalogEntry, ...], extra: tuple[CatalogEntry, ...]) -> tuple[CatalogEntry, ...]:
    """`base` with entries of `extra` replacing those of the same key, new keys appended."""
    merged = {entry.key: entry for entry in base}
    merged.update({entry.key: entry for entry in extra})
    return tuple(merged.values())


@dataclass(frozen=True)
class Settings:
    """All settings; one section per table of settings.toml."""

    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    server: ServerSettings = ServerSettings()
    paths: PathSettings = PathSettings()
    caption: CaptionSettings = CaptionSettings()
    finetune: FinetuneSettings = FinetuneSettings()
    catalog: tuple[CatalogEntry, ...] = field(default_factory=shipped_catalog)
    api: ApiSettings = ApiSettings()
    endpoints: tuple[EndpointSettings, ...] = ()
    file: str | None = field(default=None, compare=False)  # the --settings file read (None: settings.toml or none)

    def override(self, section: str, **values: Any) -> "Settings":
        """A copy with some keys of one section replaced (None values are ignored), validated."""
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return self
        current = getattr(self, section)
        merged = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)} | values
        return dataclasses.replace(self, **{section: _build_section(section, type(current), merged)})


def _check_value(key: str, spec: dataclasses.Field, value: Any) -> Any:
    if spec.metadata.get("auto") and value == "auto":  # a number, or "auto" to let vlmchat choose
        return value
    kind = {"int": int, "float": float, "str": str, "bool": bool, "int | str": int, "float | str": float}[str(spec.type)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        allowed = '"auto" or ' if spec.metadata.get("auto") else ""
        raise SettingsError(f"{key} must be {allowed}a{'n' if kind is int else ''} {kind.__name__} (got {value!r}).")
    check_bounds(key, spec, value)
    return value


def check_bounds(key: str, spec: dataclasses.Field, value: Any, error: type[Exception] = SettingsError) -> None:
    """Raise `error` naming `key` when `value` is not among the field's choices or outside its range ("auto" passes
    where the field allows it). Settings files, flags and fine-tune job specs all check with this."""
    auto = spec.metadata.get("auto")
    if auto and value == "auto":
        return
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise error(f"{key} must be one of {', '.join(choices)} (got {value!r}).")
    low, high = spec.metadata.get("range", (None, None))
    if low is None and high is None:
        return
    if isinstance(value, str) or (low is not None and value < low) or (high is not None and value > high):
        also = ' or "auto"' if auto else ""
        raise error(f"{key} must be between {low} and {high}{also} (got {value!r}).")


def _build_section(section: str, cls: type, values: dict) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise SettingsError(
                f"Unknown setting '{section}.{key}'; allowed keys in [{section}]: {', '.join(fields)}."
            )
    checked = {key: _check_value(f"{section}.{key}", fields[key], value) for key, value in values.items()}
    return cls(**checked)


def settings_flag(file: str | None) -> list[str]:
    """["--settings", FILE] for a command that repeats a run started with a settings file of its own, else []."""
    return ["--settings", file] if file else []


def _keys(section: str) -> set[str]:
    """The keys of a [section] of plain keys (none for the [catalog.*] and [endpoints.*] tables)."""
    value = getattr(Settings(), section)
    return {f.name for f in dataclasses.fields(value)} if dataclasses.is_dataclass(value) else set()


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
    except OSError as exc:  # a folder, a file without read permission
        raise SettingsError(f"Settings file {file} cannot be read ({exc.strerror}); "
                            "pass a readable TOML file to --settings.") from None
    sections = [f.name for f in dataclasses.fields(Settings) if f.name != "file"]  # `file` says which file was read
    built = {}
    for name, table in data.items():
        if name not in sections and not isinstance(table, dict):
            homes = [f"[{section}]" for section in sections if name in _keys(section)]
            raise SettingsError(f"'{name}' in {file} is outside a section; put it under "
                                f"{' or '.join(homes) or 'one of: ' + ', '.join(sections)}.")
        if name not in sections:
            raise SettingsError(f"Unknown section [{name}] in {file}; allowed: {', '.join(sections)}.")
        if not isinstance(table, dict):
            raise SettingsError(f"'{name}' in {file} must be a [{name}] table.")
        if name == "endpoints":  # [endpoints.NAME] tables: OpenAI-compatible servers used as models
            built[name] = build_endpoints(table)
            continue
        if name == "catalog":  # [catalog.<key>] tables extend (or replace by key) the shipped catalog
            built[name] = _merge_catalog(shipped_catalog(), _build_catalog(table))
            continue
        built[name] = _build_section(name, type(getattr(Settings(), name)), table)
    return Settings(**built, file=str(file.resolve()) if path else None)
