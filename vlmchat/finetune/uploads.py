"""Datasets handed to the UI as uploads: unpacked safely into <outputs>/finetune/uploads/<id>/.

A zip may hold a folder of images with .txt captions, or a .json/.jsonl file with its images; a
single .json/.jsonl upload is kept as is. Member names are checked (no absolute paths, no '..'), the
unpacked size is capped, and an upload is referred to afterwards as `upload:<id>` so API callers
never name server paths.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InputError

MAX_UNPACKED_BYTES = 8 * 2**30
PREFIX = "upload:"


def uploads_folder(settings) -> Path:
    return settings.paths.resolve("outputs") / "finetune" / "uploads"


def store_upload(file: str | Path, settings) -> str:
    """Unpack or copy an uploaded dataset; returns its reference 'upload:<id>'."""
    file = Path(file)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in file.stem)[:40] or "dataset"
    upload_id = f"{stem}-{digest}"
    target = uploads_folder(settings) / upload_id
    if target.exists():
        return PREFIX + upload_id
    staging = target.with_name(f".{upload_id}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if file.suffix.lower() == ".zip":
            _unzip(file, staging)
        elif file.suffix.lower() in (".json", ".jsonl"):
            shutil.copy2(file, staging / file.name)
        else:
            raise InputError(f"'{file.name}' is not a dataset upload; upload a .zip (images + .txt captions, or a "
                             ".jsonl with its images) or a .json/.jsonl file.")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PREFIX + upload_id


def _unzip(archive: Path, folder: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
                raise InputError("The zip unpacks to more than 8 GiB; train from a local folder instead.")
            for member in members:
                name = PurePosixPath(member.filename.replace("\\", "/"))
                if name.is_absolute() or ".." in name.parts or name.parts[0] == "__MACOSX":
                    continue
                destination = folder.joinpath(*name.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile:
        raise InputError(f"'{archive.name}' is not a valid zip file.") from None


def resolve_dataset(reference: str, settings) -> Path:
    """The local path of 'upload:<id>' (or of a plain path); a zip's single top folder is entered."""
    reference = (reference or "").strip()
    if not reference:
        raise InputError("Give a dataset: upload a .zip or .jsonl, or type a folder or file path.")
    if not reference.startswith(PREFIX):
        return Path(reference).expanduser()
    upload_id = reference[len(PREFIX):]
    path = uploads_folder(settings) / upload_id
    if "/" in upload_id or "\\" in upload_id or upload_id.startswith(".") or not path.is_dir():
        raise InputError(f"Unknown upload '{upload_id}'; upload the dataset again.")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1:
        return entries[0]
    return path
