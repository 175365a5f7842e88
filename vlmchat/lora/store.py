"""The adapters folder: every LoRA adapter on disk, its metadata, and whether it fits the loaded model.

An adapter is a folder in the standard PEFT layout (adapter_config.json + adapter_model.safetensors)
plus our metadata file vlmchat.json (base model, training data, settings, metrics, notes). A plain
PEFT adapter without vlmchat.json works too. Only safetensors weights are ever accepted.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import InputError
from ..files import extract_zip_checked, staged_folder, write_text_atomic, write_zip_atomic

META_FILE = "vlmchat.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED = {"base", "none", "con", "nul", "aux", "prn"}
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, META_FILE, "README.md")
PICKLE_WEIGHTS = "adapter_model.bin"  # PEFT's pickle weights: never loaded
MAX_ZIP_BYTES = 4 * 2**30
MAX_ZIP_FILES = 100_000  # an adapter is a handful of files; this only stops a zip of countless tiny members


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter folder as the UI lists it; `problem` is empty when the folder is usable."""

    name: str
    path: Path
    base_model: str = ""
    architecture: str = ""
    created: str = ""
    dataset: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    notes: str = ""
    r: int | None = None
    target_modules: object = None
    problem: str = ""
    owner: str | None = None  # imported: the importing login's folder name ("" = everyone's); None = not imported


def validate_adapter_name(name: str) -> str:
    """`name` if it is safe as a folder name, else an InputError saying what is allowed."""
    name = (name or "").strip()
    if not name:  # a name of spaces was "'' is not a valid adapter name"
        raise InputError("Give the adapter a name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                         "digit (and not 'base').")
    if not NAME_PATTERN.match(name) or name.lower() in RESERVED or name.endswith("."):
        raise InputError(f"'{name}' is not a valid adapter name: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit (and not 'base').")
    return name


def _valid_name(name: str) -> str:
    """A valid adapter name like `name` ('ñandú es' -> 'nandu-es')."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    plain = re.sub(r"[^A-Za-z0-9._-]+", "-", plain).strip("-._")[:64].rstrip(".") or "adapter"
    return plain if plain.lower() not in RESERVED else f"{plain}-adapter"


def adapter_path(folder: Path, name: str) -> Path:
    """The folder of adapter `name` inside `folder` (the name is validated first)."""
    return Path(folder) / validate_adapter_name(name)


def read_adapter(path: Path) -> AdapterInfo:
    """Read one adapter folder; problems (missing files, pickle weights, bad JSON) go in `problem`."""
    path = Path(path)
    name = path.name

    def broken(problem: str) -> AdapterInfo:
        return AdapterInfo(name=name, path=path, problem=problem)

    if not (path / CONFIG_FILE).is_file():
        return broken(f"no {CONFIG_FILE}: not a PEFT adapter folder")
    if not (path / WEIGHTS_FILE).is_file():
        if any(path.glob("*.bin")):
            return broken(f"weights are a pickle .bin file; only {WEIGHTS_FILE} is loaded (convert it with "
                          "PEFT: load it yourself and save_pretrained(safe_serialization=True))")
        return broken(f"no {WEIGHTS_FILE}; re-export or re-import the adapter")
    cut = _cut_short(path / WEIGHTS_FILE)
    if cut:
        return broken(cut)
    read = {}
    for file in (CONFIG_FILE, META_FILE):
        try:
            read[file] = json.loads((path / file).read_text(encoding="utf-8")) if (path / file).is_file() else {}
        except (OSError, ValueError) as exc:
            return broken(f"{file} is not readable JSON ({exc}); re-export or re-import the adapter")
        if not isinstance(read[file], dict):  # `null` or a list: every .get() below failed, and the whole list
            return broken(f"{file} is not a JSON object; re-export or re-import the adapter")
    config, meta = read[CONFIG_FILE], read[META_FILE]
    if not isinstance(config.get("auto_mapping") or {}, dict):
        return broken(f"{CONFIG_FILE}'s auto_mapping is not a JSON object; re-export or re-import the adapter")
    if config.get("peft_type", "LORA") != "LORA":
        return broken(f"a {config.get('peft_type')} adapter; vlmchat loads LoRA adapters")
    if ranks := _rank_disagrees(path / WEIGHTS_FILE, config):
        return broken(ranks)
    created = meta.get("created") or datetime.fromtimestamp((path / WEIGHTS_FILE).stat().st_mtime,
                                                            timezone.utc).isoformat(timespec="seconds")
    return AdapterInfo(
        name=name, path=path, base_model=meta.get("base_model") or config.get("base_model_name_or_path") or "",
        # PEFT writes the base's class into adapter_config.json (auto_mapping) when vlmchat.json does not say it
        architecture=meta.get("architecture") or (config.get("auto_mapping") or {}).get("base_model_class") or "",
        created=created, dataset=meta.get("dataset", {}),
        metrics=meta.get("metrics", {}), notes=meta.get("notes", ""), r=config.get("r"),
        owner=str(meta["imported_by"]) if meta.get("imported_by") is not None else None,
        target_modules=config.get("target_modules"),
    )


def _cut_short(weights: Path) -> str:
    """Why a safetensors file cannot be whole ('' when its header's tensors fit in the file): a copy or download
    that stopped early loads nowhere."""
    from ..errors import ModelLoadError
    from ..models.sizes import read_safetensors_header

    try:
        header = read_safetensors_header(weights)
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        size = weights.stat().st_size
    except (ModelLoadError, OSError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return f"{WEIGHTS_FILE} is not a whole safetensors file (its header cannot be read); copy or download it again"
    with open(weights, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
    if size < 8 + length + end:
        return (f"{WEIGHTS_FILE} is cut short ({size:,} of {8 + length + end:,} bytes); copy or download it "
                "again")
    return ""


def _rank_disagrees(weights: Path, config: dict) -> str:
    """Why adapter_config.json's rank does not fit the weights ('' when it does): PEFT's own error was a truncated
    dump of "size mismatch for base_model.model..." lines."""
    from ..errors import ModelLoadError
    from ..models.sizes import read_safetensors_header

    rank = config.get("r")
    if not isinstance(rank, int) or config.get("rank_pattern"):  # per-module ranks: nothing to compare to one r
        return ""
    try:
        header = read_safetensors_header(weights)
        for key, tensor in header.items():
            shape = tensor["shape"] if key.endswith("lora_A.weight") else None
            if shape and shape[0] != rank:
                module = key.rsplit(".lora_A", 1)[0].rsplit(".", 1)[-1]
                return (f"{CONFIG_FILE} says r = {rank} but the weights are rank {shape[0]} ({module}'s lora_A is "
                        f"{' x '.join(map(str, shape))}): the two files do not belong together; re-export or "
                        "re-import the adapter")
    except (ModelLoadError, OSError, KeyError, TypeError, AttributeError):  # said by _cut_short
        return ""
    return ""


def list_adapters(folder: Path) -> list[AdapterInfo]:
    """Every adapter folder under `folder`, sorted by name (hidden and temporary folders skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [_listed(p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def _listed(path: Path) -> AdapterInfo:
    """`read_adapter`, disabled when the folder's name is no adapter name (listed as usable, every action on it
    said "not a valid adapter name")."""
    try:
        validate_adapter_name(path.name)
    except InputError:
        return AdapterInfo(name=path.name, path=path, problem="the folder's name is not a valid adapter name: rename "
                                                              f"the folder to e.g. '{_valid_name(path.name)}' on disk")
    return read_adapter(path)


def _same_model(a: str, b: str) -> bool:
    name = lambda s: Path(str(s).rstrip("/")).name.lower()  # noqa: E731
    return bool(a) and bool(b) and name(a) == name(b)


def incompatibility(adapter: AdapterInfo, model_id: str, model_source: str, architecture: str) -> str:
    """Why `adapter` cannot go on the loaded model ('' when it can)."""
    if adapter.problem:
        return adapter.problem
    if adapter.architecture and architecture and adapter.architecture != architecture:
        return f"made for {adapter.architecture}; the loaded model is {architecture}"
    known = adapter.base_model
    if known and not (known == model_id or _same_model(known, model_source) or _same_model(known, model_id)
                      or (known == "demo" and _same_model("vlmchat-demo", model_source))):
        return f"trained on {known}; the loaded model is {model_id}"
    return ""


def write_metadata(folder: Path, meta: dict) -> None:
    """Write vlmchat.json (with a creation time) atomically into an adapter folder."""
    meta = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **meta}
    write_text_atomic(Path(folder) / META_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def _install(source: Path, folder: Path, name: str, owner: str = "", given: str = "That folder") -> AdapterInfo:
    """Copy a checked adapter folder into `folder`/`name` atomically; never over an existing one. Its vlmchat.json
    says who imported it (`owner`: a login's folder name, "" for everyone), not which folder it was trained on: the
    dataset path it carried named another login as its owner (a copy, or a hand-made zip, was that login's)."""
    target = adapter_path(folder, name)
    try:
        with staged_folder(target) as staging:
            info = read_adapter(source)
            if info.problem:
                raise InputError(f"{given} is not a usable adapter: {info.problem}.")
            for item in ADAPTER_FILES:
                if (source / item).is_file() and item != META_FILE:
                    shutil.copy2(source / item, staging / item)
            meta = {**_portable(_meta_of(source / META_FILE)), "imported_by": owner}
            write_text_atomic(staging / META_FILE, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    except FileExistsError:
        raise InputError(f"An adapter named '{name}' already exists; pick another name or delete it first.") from None
    return read_adapter(target)


def import_folder(source: str | Path, folder: Path, name: str | None = None, owner: str = "") -> AdapterInfo:
    """Copy the adapter in folder `source` into the adapters folder (`owner`: see `_install`)."""
    source = Path(source).expanduser()
    if not source.is_dir():
        raise InputError(f"'{source}' is not a folder; give the folder that holds {CONFIG_FILE}.")
    Path(folder).mkdir(parents=True, exist_ok=True)
    return _install(source, Path(folder), validate_adapter_name(name or source.name), owner)


def import_zip(archive: str | Path, folder: Path, name: str | None = None, owner: str = "") -> AdapterInfo:
    """Unpack an adapter zip (checked, size-capped, only the adapter files) into the adapters folder."""
    archive = Path(archive)
    name = validate_adapter_name(name or archive.stem)
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".unzip.") as tmp:
        extract_zip_checked(archive, Path(tmp), MAX_ZIP_BYTES, MAX_ZIP_FILES, place=_adapter_file,
                            advice="that is not a LoRA adapter")
        return _install(Path(tmp), Path(folder), name, owner, given=f"'{archive.name}'")


def _adapter_file(member: str) -> str | None:
    """Flatten: only the file name matters, so an adapter zipped inside a folder imports the same. Pickle weights
    are unpacked too, to be named as what is wrong (they are never installed)."""
    name = PurePosixPath(member).name
    return name if name in ADAPTER_FILES or name == PICKLE_WEIGHTS else None


TEXT_SUFFIXES = (".json", ".md", ".txt")


def export_zip(folder: Path, name: str, destination: Path, shown: Callable[[str], str] | None = None) -> Path:
    """Pack adapter `name` into `destination`/<name>.zip and return its path.

    Its vlmchat.json goes without the dataset's path: a folder of the computer it was trained on, which means
    nothing where the zip goes (and names the trainer's folders to whoever downloads it); name, format and size stay.
    `shown`: how its text files (configs, model card) name this computer's folders to whoever downloads the zip (a
    shared app's: a base model loaded from a folder by the folder's name).
    """
    source = adapter_path(folder, name)
    if not source.is_dir():
        raise InputError(f"There is no adapter named '{name}'.")
    members: list[tuple[str, Path | bytes]] = []
    for item in sorted(source.iterdir()):
        if not item.is_file():
            continue
        member = _without_dataset_path(item) if item.name == META_FILE else item
        if shown is not None and item.suffix.lower() in TEXT_SUFFIXES:
            text = member.decode("utf-8") if isinstance(member, bytes) else item.read_text(encoding="utf-8",
                                                                                           errors="replace")
            member = shown(text).encode("utf-8")
        members.append((f"{name}/{item.name}", member))
    return write_zip_atomic(destination / f"{name}.zip", members)


def _meta_of(meta_file: Path) -> dict:
    """An adapter's vlmchat.json as a dict ({} when there is none or it cannot be read)."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _portable(meta: dict) -> dict:
    """`meta` without what names this computer's folders or logins (the dataset's path, who imported it): it
    means nothing where the adapter goes, and says who had it."""
    meta = {key: value for key, value in meta.items() if key != "imported_by"}
    if isinstance(meta.get("dataset"), dict):
        meta["dataset"] = {key: value for key, value in meta["dataset"].items() if key != "path"}
    return meta


def _without_dataset_path(meta_file: Path) -> Path | bytes:
    meta = _meta_of(meta_file)
    portable = _portable(meta)
    if portable == meta:
        return meta_file  # as it is (read_adapter reports what is wrong with a broken one)
    return (json.dumps(portable, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def rename_adapter(folder: Path, old: str, new: str) -> Path:
    """Rename an adapter folder; refuses to overwrite."""
    source, target = adapter_path(folder, old), adapter_path(folder, new)
    if not source.is_dir():
        raise InputError(f"There is no adapter named '{old}'.")
    if target.exists():
        raise InputError(f"An adapter named '{new}' already exists; pick another name.")
    source.rename(target)
    return target


def delete_adapter(folder: Path, name: str, confirm: str) -> None:
    """Delete an adapter folder; `confirm` must repeat the name."""
    path = adapter_path(folder, name)
    if confirm != name:
        raise InputError(f"To delete '{name}', type its name exactly to confirm.")
    if not path.is_dir():
        raise InputError(f"There is no adapter named '{name}'.")
    trash = path.with_name(f".{name}.deleting")
    path.rename(trash)
    shutil.rmtree(trash)


def find_adapter(folder: Path, name: str) -> AdapterInfo:
    """Adapter `name` from `folder`, or an InputError saying there is none (before any model is loaded)."""
    path = adapter_path(folder, name)
    if not path.is_dir():  # one it used may have been renamed or deleted meanwhile (in the Adapters tab)
        there = [info.name for info in list_adapters(folder)]
        shown = ", ".join(there[:10]) + (f" and {len(there) - 10} more" if len(there) > 10 else "")
        raise InputError(f"There is no adapter named '{name}' in {folder} (renamed or deleted?); "
                         + (f"choose one of: {shown}." if there else "there are none yet: train one in Fine-tune."))
    return read_adapter(path)


def usable_adapter(folder: Path, name: str, model_id: str, model_source: str, architecture: str) -> AdapterInfo:
    """Adapter `name` from `folder` if it can go on the loaded model; otherwise an InputError why not."""
    info = find_adapter(folder, name)
    if info.problem:  # its files are damaged: another model would not help
        raise InputError(f"Adapter '{name}' cannot be used: {info.problem}.")
    reason = incompatibility(info, model_id, model_source, architecture)
    if reason:
        raise InputError(f"Adapter '{name}' cannot be used with the loaded model: {reason}. Pick an adapter made "
                         "for this model, or load the model it was made for.")
    return info


def import_from_hub(repo_id: str, folder: Path, name: str | None = None, token: str | None = None,
                    owner: str = "") -> AdapterInfo:
    """Download an adapter repo through vlmchat's download code (access check, token) and import it."""
    from ..hub import check_hub_id, download_model

    repo_id = check_hub_id(repo_id.strip())  # before a name is made of it: "not a valid adapter name" misled
    name = validate_adapter_name(name or repo_id.split("/")[-1])
    downloaded = download_model(repo_id, token=token or None)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return _install(downloaded.path, Path(folder), name, owner)
