"""The one model resolver: what a user typed (demo, catalog key, folder, cached or hub id) -> where it is.

No network: a hub id that is not cached resolves to kind "hub" and is fetched by the loader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from ..settings import DEMO_MODEL_ID, CatalogEntry, Settings

DEMO_FOLDER = "vlmchat-demo"


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
            read_config(path)  # a broken one is said now, before the model in use is freed for it
            return ModelSource(str(path.resolve()), "folder", path.resolve())
        if model.count("/") != 1 or model.startswith(("/", ".", "~")):
            raise ModelLoadError(f"'{model}' is neither an existing folder nor a hub id like 'owner/name'"
                                 + _nearest(settings, model))
    hub_id = entry.id if entry else model
    from ..hub import cached_snapshot

    cached = cached_snapshot(hub_id)
    return ModelSource(hub_id, "cache" if cached else "hub", cached, entry)
