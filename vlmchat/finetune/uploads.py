"""Datasets handed to the UI as uploads: unpacked safely into <outputs>/finetune/uploads/<id>/.

A zip may hold a folder of images with .txt captions, or a .json/.jsonl file with its images; a
single .json/.jsonl upload is kept as is. The zip is checked by `files.extract_zip_checked` (links
refused, size and file count capped; members outside the archive and __MACOSX left out), and an
upload is referred to afterwards as `upload:<id>` so API callers never name server paths. Under a
login each user's uploads live in a folder of their own (`folder`, from `ui.users.user_folder`), and
an id is only looked up there.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..errors import InputError
from ..files import extract_zip_checked, staged_folder, unsafe_name

MAX_UNPACKED_BYTES = 8 * 2**30
MAX_UNPACKED_FILES = 100_000
PREFIX = "upload:"
UPLOAD_SUFFIXES = (".zip", ".json", ".jsonl", ".csv", ".parquet")  # datasets and eval sets


def uploads_folder(settings) -> Path:
    """Where uploads are unpacked when nobody is logged in: <outputs>/finetune/uploads."""
    return settings.paths.resolve("outputs") / "finetune" / "uploads"


def store_upload(file: str | Path, settings, folder: Path | None = None) -> str:
    """Unpack or copy an uploaded dataset into `folder` (default: uploads_folder); returns 'upload:<id>'."""
    file = Path(file)
    suffix = file.suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise InputError(f"'{file.name}' is not a dataset upload; upload a .zip (images + .txt captions, or a "
                         ".jsonl with its images) or a .json/.jsonl/.csv/.parquet file.")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in file.stem)[:40] or "dataset"
    upload_id = f"{stem}-{digest}"
    try:
        with staged_folder(Path(folder or uploads_folder(settings)) / upload_id) as staging:
            if suffix == ".zip":
                extract_zip_checked(file, staging, MAX_UNPACKED_BYTES, MAX_UNPACKED_FILES, place=_dataset_member,
                                    advice="train from a local folder instead")
            else:
                shutil.copy2(file, staging / file.name)
    except FileExistsError:
        pass  # the same file was uploaded before: its folder is the same
    return PREFIX + upload_id


def _dataset_member(member: str) -> str | None:
    """Where a zip member goes: macOS metadata and members pointing outside are left out, as uploads always did."""
    return None if member.split("/")[0] == "__MACOSX" or unsafe_name(member) else member


def resolve_dataset(reference: str, settings, folder: Path | None = None) -> Path:
    """The local path of 'upload:<id>' in `folder` (or of a plain path); a zip's single top folder is entered."""
    reference = (reference or "").strip()
    if not reference:
        raise InputError("Give a dataset: upload a .zip or .jsonl, or type a folder or file path.")
    if not reference.startswith(PREFIX):
        return Path(reference).expanduser()
    upload_id = reference[len(PREFIX):]
    path = Path(folder or uploads_folder(settings)) / upload_id
    if "/" in upload_id or "\\" in upload_id or upload_id.startswith(".") or not path.is_dir():
        raise InputError(f"Unknown upload '{upload_id}'; upload the dataset again.")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1:
        return entries[0]
    return path
