"""Datasets handed to the UI as uploads: unpacked safely into <outputs>/finetune/uploads/<id>/.

A zip may hold a folder of images with .txt captions, or a .json/.jsonl file with its images; a
single .json/.jsonl upload is kept as is. The zip is checked by `files.extract_zip_checked` (links
refused, size and file count capped; members outside the archive and __MACOSX left out), and an
upload is referred to afterwards as `upload:<id>` so API callers never name server paths. Under a
login each user's uploads live in a folder of their own (`folder`, from `ui.users.user_folder`), and
an id is only looked up there. Several files picked at once (a .jsonl with its pictures, or pictures
with their .txt captions) are kept together in one folder, as if they had been zipped.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from ..errors import InputError
from ..files import distinct_files, extract_zip_checked, staged_folder

MAX_UNPACKED_BYTES = 8 * 2**30
MAX_UNPACKED_FILES = 100_000
PREFIX = "upload:"
UPLOAD_SUFFIXES = (".zip", ".json", ".jsonl", ".csv", ".parquet")  # datasets and eval sets


def uploads_folder(settings) -> Path:
    """Where uploads are unpacked when nobody is logged in: <outputs>/finetune/uploads."""
    return settings.paths.resolve("outputs") / "finetune" / "uploads"


NOT_AN_UPLOAD = {  # what to upload instead of a file of another kind, by what the upload is for
    "dataset": "a dataset upload; upload a .zip (images + .txt captions, or a .jsonl with its images) or a "
               ".json/.jsonl/.csv/.parquet file, or pick a dataset file together with its pictures.",
    "eval set": "an eval-set upload; upload a .zip (the set's file and its pictures, or pictures with .txt "
                "captions) or a .json/.jsonl/.csv/.parquet file, or pick the set's file together with its pictures.",
}


def store_upload(file, settings, folder: Path | None = None, kind: str = "dataset") -> str:
    """Unpack or copy an uploaded dataset into `folder` (default: uploads_folder); returns 'upload:<id>'.

    `file` is a path (or an object with `.name`, as some Gradio versions hand over), or a list of them:
    one file is stored as always; several go into one folder, each under its own name (a zip among them
    is unpacked there)."""
    files = distinct_files(Path(f if isinstance(f, (str, Path)) else f.name)
                           for f in (file if isinstance(file, (list, tuple)) else [file]))
    if not files:
        raise InputError("Nothing was uploaded; choose a .zip or a dataset file.")
    folder = folder or uploads_folder(settings)
    # the id is salted with the login's folder: the same bytes uploaded by another login, whose adapters show the
    # id they were trained on, got the same id, so a login could tell which file another one trained on
    salt = str(folder.resolve()).encode() + b"\0"
    limit = settings.server.max_upload_mb * 2**20  # a picture in a zip: refused before it is unpacked
    if len(files) == 1:
        return _store_one(files[0], folder, salt, limit, kind)
    return _store_several(files, folder, salt, limit, kind)


def _store_one(file: Path, folder: Path, salt: bytes, limit: int, kind: str = "dataset") -> str:
    suffix = file.suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise InputError(f"'{file.name}' is not {NOT_AN_UPLOAD[kind]}")
    digest = hashlib.sha256(salt + file.name.encode() + b"\0" + file.read_bytes()).hexdigest()[:12]  # name: the id's
    return _stage(folder, f"{_stem(file)}-{digest}", lambda staging: _place(file, staging, limit))


def _store_several(files: list[Path], folder: Path, salt: bytes, limit: int, kind: str = "dataset") -> str:
    from ..images import readable_suffixes
    from .datasets import CAPTION_SUFFIXES

    allowed = set(UPLOAD_SUFFIXES) | readable_suffixes() | set(CAPTION_SUFFIXES)
    refused = [f.name for f in files if f.suffix.lower() not in allowed]
    if refused:
        raise InputError(f"{', '.join(refused[:3])}: not part of {'an eval set' if kind == 'eval set' else 'a dataset'}; "
                         f"pick the {'set' if kind == 'eval set' else 'dataset'} file (.jsonl, .json, .csv, .parquet) "
                         "with its pictures, pictures with their .txt captions, or one .zip.")
    names = [f.name for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"Two uploaded files are both named {twice[0]}; rename one, or upload a .zip that keeps "
                         "their folders.")
    digest = hashlib.sha256(salt)
    for file in sorted(files, key=lambda f: f.name):
        digest.update(file.name.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    data = sorted(f for f in files if f.suffix.lower() in UPLOAD_SUFFIXES)
    # its name is what the Adapters tab shows an adapter was trained on ("files-40-b90086008c7f" said nothing)
    stem = _stem(data[0]) if data else f"{sum(f.suffix.lower() in readable_suffixes() for f in files)}-pictures"

    def fill(staging: Path) -> None:
        for file in sorted(files, key=lambda f: f.suffix.lower() != ".zip"):  # zips first: a file never overwritten
            _place(file, staging, limit)

    return _stage(folder, f"{stem}-{digest.hexdigest()[:12]}", fill)


def _stem(file: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in file.stem)[:40] or "dataset"


def _place(file: Path, staging: Path, limit: int) -> None:
    """A zip unpacked into `staging` (checked; no picture over `limit` bytes), any other file copied there under its
    own name."""
    if file.suffix.lower() == ".zip":
        unzip = lambda archive: extract_zip_checked(  # noqa: E731
            archive, staging, MAX_UNPACKED_BYTES, MAX_UNPACKED_FILES, place=_dataset_member,
            advice="train from a local folder instead", max_picture_bytes=limit)
        written = unzip(file)
        if len(written) == 1 and written[0].parent == staging and written[0].suffix.lower() == ".zip":
            inner = written[0].rename(staging / f".{written[0].name}")  # a zip holding only a zip: one level more
            unzip(inner)
            inner.unlink()
    elif (staging / file.name).exists():
        raise InputError(f"'{file.name}' is uploaded beside a zip that holds a file of that name; upload one of them.")
    else:
        shutil.copy2(file, staging / file.name)


def _stage(folder: Path, upload_id: str, fill) -> str:
    try:
        with staged_folder(Path(folder) / upload_id) as staging:
            fill(staging)
    except FileExistsError:
        pass  # the same upload was made before: its folder is the same
    return PREFIX + upload_id


def _dataset_member(member: str) -> str | None:
    """Where a zip member goes: macOS metadata is left out; an unsafe member (`..`, an absolute path) is kept so it
    refuses the zip with its name, as Caption's zips do (left out, the upload was 'holds no images' later)."""
    return None if member.split("/")[0] == "__MACOSX" else member


def unpacked_zip(path: str, settings) -> str:
    """`path` as the CLI takes a dataset or eval set: a .zip is unpacked (checked, once: the same zip again is the
    same folder) as an upload is, and its folder returned; anything else is returned as given."""
    file = Path(path).expanduser()
    if file.suffix.lower() != ".zip" or not file.is_file():
        return path
    folder = resolve_dataset(path, settings)
    print(f"vlmchat: {file.name} unpacked into {folder}", file=sys.stderr)
    return str(folder)


def resolve_dataset(reference: str, settings, folder: Path | None = None) -> Path:
    """The local path of 'upload:<id>' in `folder` (or of a plain path: a local .zip is unpacked there as an upload
    is); a zip's single top folder is entered."""
    reference = (reference or "").strip()
    if len(reference) > 1 and reference[0] == reference[-1] and reference[0] in "\"'":
        reference = reference[1:-1].strip()  # a path as Windows' "Copy as path" gives it, in quotes
    if not reference:
        raise InputError("Give a dataset: upload a .zip or a .json/.jsonl/.csv/.parquet file, or type a folder or "
                         "file path.")
    if not reference.startswith(PREFIX):
        path = Path(reference).expanduser()
        if path.suffix.lower() == ".zip" and path.is_file():  # a local zip is unpacked as its upload would be
            return resolve_dataset(store_upload(path, settings, folder), settings, folder)
        return path
    upload_id = reference[len(PREFIX):]
    path = Path(folder or uploads_folder(settings)) / upload_id
    if not upload_id or "/" in upload_id or "\\" in upload_id or upload_id.startswith(".") or not path.is_dir():
        raise InputError(f"Unknown upload '{upload_id}'; upload the dataset again.")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and (entries[0].is_dir() or entries[0].suffix.lower() in UPLOAD_SUFFIXES):
        return entries[0]
    return path  # a lone readme: "the folder holds no images and no dataset file" (not "'readme.md' is neither...")
