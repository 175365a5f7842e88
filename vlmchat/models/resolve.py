"""The one model resolver: what a user typed (demo, catalog key, folder, cached or hub id) -> where it is.

No network: a hub id that is not cached resolves to kind "hub" and is fetched by the loader.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import ModelLoadError
from ..settings import DEMO_MODEL_ID, CatalogEntry, Settings

DEMO_FOLDER = "vlmchat-demo"
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # an image processor's settings


@dataclass(frozen=True)
class ModelSource:
    """A model the user asked for, found: its id, what kind of place it is in, and its local folder if any."""

    model_id: str                 # "demo", a hub id (catalog keys become their hub id) or a folder path
    kind: str                     # "demo" | "folder" | "cache" | "hub" (not on this machine yet)
    path: Path | None             # the local folder (None for kind "hub")
    catalog: CatalogEntry | None = None

    @property
    def name(self) -> str:
        """A short display name: the demo's folder, a hub id's last part or the folder's name."""
        if self.kind == "demo":
            return DEMO_FOLDER
        return Path(self.model_id).name if self.kind == "folder" else self.model_id.split("/")[-1]

    @property
    def location(self) -> str:
        """What from_pretrained is given: the local folder, or the hub id."""
        return str(self.path) if self.path is not None else self.model_id

    def family(self) -> str:
        """The transformers model_type (from config.json or the catalog; '' if unknown)."""
        if self.path is not None:
            try:
                return str(read_config(self.path).get("model_type", ""))
            except ModelLoadError:
                pass
        return self.catalog.family if self.catalog else ""


def demo_model_path(settings: Settings) -> Path:
    """Where the embedded demo model lives."""
    return settings.paths.resolve("models") / DEMO_FOLDER


def catalog_entry(settings: Settings, model: str) -> CatalogEntry | None:
    """The catalog entry whose key or hub id is `model` (case-insensitive), if any."""
    wanted = model.strip().lower()
    for entry in settings.catalog:
        if wanted in (entry.key.lower(), entry.id.lower()):
            return entry
    return None


def _nearest(settings: Settings, model: str) -> str:
    """'; did you mean <hub id>?' for a name close to a catalog model's, else the catalog's keys (the sentence's end)."""
    import difflib

    names = {entry.id.split("/")[-1].lower(): entry.id for entry in settings.catalog}
    names.update({entry.key.lower(): entry.id for entry in settings.catalog})
    close = difflib.get_close_matches(model.split("/")[-1].lower(), list(names), n=1, cutoff=0.75)
    if close:
        return f"; did you mean {names[close[0]]}?"
    keys = ", ".join(entry.key for entry in settings.catalog)
    return f"; the Model tab's names work too ({keys}), as does 'demo'." if keys else "."


def read_config(folder: Path) -> dict:
    """A model folder's config.json, or ModelLoadError naming the file and what is wrong with it (a cut-short copy
    gave a traceback from `plan`, and a failed Load in the Model tab left the app with no model)."""
    file = Path(folder) / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"{file} could not be read ({exc.strerror or exc}); check its permissions.") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ModelLoadError(f"{file} is not valid JSON ({exc}); copy or download the model again.") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{file} holds a JSON {type(config).__name__}, not the settings object save_pretrained "
                             "writes; copy or download the model again.")
    return config


def resolve_model(model: str | None, settings: Settings) -> ModelSource:
    """Find `model` ('' = model.id in settings): the demo, a catalog key, a local folder, a cached or hub id."""
    model = (model or settings.model.id).strip()
    if model.lower() == DEMO_MODEL_ID and not Path(model).exists():  # 'Demo' too, as catalog keys are read
        path = demo_model_path(settings)
        if not (path / "config.json").exists():
            raise ModelLoadError(f"The embedded demo model is missing from {path}; "
                                 "rebuild it with `python3 launch.py build-demo`.")
        return ModelSource(DEMO_MODEL_ID, "demo", path)
    entry = catalog_entry(settings, model)
    if entry is None:
        path = Path(model).expanduser()
        if path.exists():
            if not (path / "config.json").exists():
                raise ModelLoadError(f"{path} has no config.json: give a folder saved by save_pretrained "
                                     "(or a hub id such as HuggingFaceTB/SmolVLM-256M-Instruct).")
            path = path.resolve()
            check_model_files(str(path), read_config(path), [file.name for file in path.iterdir()])
            return ModelSource(str(path), "folder", path)
    hub = hub_id(model, settings, "neither an existing folder nor a hub id")
    from ..hub import cached_snapshot

    cached = cached_snapshot(hub)
    if cached:  # said now, before the model in use is freed for it
        check_model_files(hub, read_config(cached), [file.name for file in cached.iterdir()])
    return ModelSource(hub, "cache" if cached else "hub", cached, entry)


def hub_id(model: str, settings: Settings, what: str = "not a hub id") -> str:
    """The hub id `model` names: a catalog model's, a model page's address's, or `model` itself when it is one;
    else ModelLoadError ending with the catalog model it is closest to."""
    entry = catalog_entry(settings, model)
    if entry is not None:
        return entry.id
    from ..hub import DownloadError, check_hub_id

    try:
        return check_hub_id(model)
    except DownloadError:
        raise ModelLoadError(f"'{model}' is {what} like 'owner/name'" + _nearest(settings, model)) from None


def check_model_files(name: str, config: dict, files: Iterable[str]) -> None:
    """ModelLoadError for a model vlmchat cannot load, told from its config.json and its top-level file names before
    anything is downloaded or freed: a model type transformers does not know, a text-only model, or no processor."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    from ..hub import TOKENIZER_FILES

    kind = config.get("model_type")
    if kind and kind not in CONFIG_MAPPING_NAMES:  # it was "a LlavaForConditionalGeneration model, which does not..."
        raise ModelLoadError(f"'{name}' is of model_type '{kind}', which transformers "
                             f"{transformers.__version__} does not know: a model type newer than it, or a config.json "
                             "edited by hand (check its model_type).")
    if kind and kind not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        what = ", ".join(config.get("architectures") or []) or kind
        raise ModelLoadError(f"'{name}' is a {what} model, which does not read pictures; choose a "
                             "vision-language model (e.g. SmolVLM-256M-Instruct or Qwen2-VL-2B-Instruct).")
    names = [file for file in files if "/" not in file]
    missing = [] if any(file in PROCESSOR_FILES for file in names) else [" or ".join(PROCESSOR_FILES)]
    if not any(fnmatch.fnmatch(file, pattern) for file in names for pattern in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model or vocab files)")
    if missing:  # AutoProcessor reads them; it said "Can't load image processor ... Check the id or path"
        raise ModelLoadError(f"'{name}' has no {' and no '.join(missing)}, so its processor cannot be loaded: save "
                             "them beside the weights with `processor.save_pretrained(folder)` (the processor of the "
                             "model it was made from), or download the model's processor files.")
