"""Where captions come from and where they go: finding images, unpacking zips safely, writing captions.

Inputs are files, folders (subfolders with `recursive`) and zips, whose images are unpacked only
after every member was checked (`files.extract_zip_checked`: no absolute paths, no `..`, no links,
size limits). Outputs are a `.txt` beside each image (the kohya / TagGUI layout, which is also a
fine-tune dataset) or one JSONL/CSV file. Every write is atomic (temp file + rename), and an
existing caption is never replaced unless asked, even one that appears while a batch runs.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..files import (CAPTION_SUFFIXES, check_writable_file, extract_zip_checked, not_utf8, sha256_of, shown_name,
                     unsafe_name, write_text_atomic, write_zip_atomic)
from ..images import readable_suffixes

DATA_SUFFIXES = frozenset({*CAPTION_SUFFIXES, ".json", ".jsonl", ".csv", ".zip"})
FORMATS = ("txt", "jsonl", "csv")
ZIP_MAX_MEMBERS = 100_000
ZIP_MAX_TOTAL_BYTES = 8 * 2**30


@dataclass
class FoundImages:
    """Images to caption, plus the files that could not even be taken (with the reason)."""

    images: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    folders: set[Path] = field(default_factory=set)  # the real folders scanned: a link back up is not a new one


# Picture formats people have (phones, cameras) that Pillow here may not read: such files were left out of a folder
# without a word (newcomer reviewer: .heic). Any of them Pillow reads here is simply a picture.
PHOTO_SUFFIXES = frozenset({".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf",
                            ".orf", ".rw2"})


def is_image_name(path: Path) -> bool:
    """True for a visible file whose suffix is a picture format vlmchat reads (any Pillow opens, as /chat)."""
    return path.suffix.lower() in readable_suffixes() and not path.name.startswith(".")


def _scan_folder(folder: Path, recursive: bool, found: FoundImages) -> None:
    real = folder.resolve()
    if real in found.folders:  # a link to a folder already scanned (or back up the tree: it went 40 levels deep)
        return
    found.folders.add(real)
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        found.failed.append((str(folder), f"folder '{folder}' could not be read ({exc.strerror or exc}); "
                                          "check its permissions."))
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_dir() and recursive:
            _scan_folder(entry, recursive, found)
        elif entry.is_file() and is_image_name(entry):
            found.images.append(entry)
        elif entry.is_file() and entry.suffix.lower() in PHOTO_SUFFIXES:
            found.failed.append((str(entry), f"{entry.suffix[1:].upper()} pictures are not read here; convert "
                                             "them to JPEG or PNG (or install the Pillow plugin for them)."))
        elif entry.is_symlink() and not entry.exists() and is_image_name(entry):
            found.failed.append((str(entry), f"'{entry.name}' is a link to a file that is not there "
                                             f"({os.readlink(entry)}); fix or delete the link."))


def find_images(paths: list[str | Path], recursive: bool = False, unpack_to: Path | None = None,
                max_picture_bytes: int | None = None) -> FoundImages:
    """The images named by `paths`: files as given, folders scanned, zips unpacked into `unpack_to` (none of their
    pictures over `max_picture_bytes`)."""
    found = FoundImages()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            _scan_folder(path, recursive, found)
        elif path.is_file() and path.suffix.lower() == ".zip":
            if unpack_to is None:
                raise InputError(f"'{path.name}' is a zip; unzip it first or give it as an upload.")
            unpacked = extract_zip_checked(path, unpack_to / unpack_name(path), ZIP_MAX_TOTAL_BYTES,
                                           ZIP_MAX_MEMBERS, place=_zip_member,
                                           advice="split it or caption the folder instead",
                                           max_picture_bytes=max_picture_bytes)
            found.images.extend(p for p in unpacked if is_image_name(p))
        elif path.is_file():
            if path.suffix.lower() not in DATA_SUFFIXES:
                found.images.append(path)
        else:
            raise InputError(f"'{raw}' does not exist; check the path (folders, image files and .zip files work).")
    # Absolute, not resolved: a linked picture's caption goes beside the link, in the folder the user named.
    unique = list(dict.fromkeys(Path(os.path.abspath(path)) for path in found.images))
    if not unique and not found.failed:
        names = ", ".join(str(p) for p in paths)
        hint = "" if recursive else " (to include subfolders: tick 'Include subfolders' in the tab, or --recursive)"
        raise InputError(f"No images found in {names}{hint}; vlmchat reads .png, .jpg, .webp, .gif, .bmp, .tif"
                         f"{', .avif' if '.avif' in readable_suffixes() else ''} and the other formats Pillow opens.")
    found.images = unique
    return found


def unpack_name(archive: Path) -> str:
    """The zip's own folder under the unpack folder: its name and a digest of its bytes, so the same zip resumes
    where it stopped and another zip of the same name never meets the first one's pictures and captions."""
    return f"{archive.stem}-{sha256_of(archive)[:10]}"


def _zip_member(member: str) -> str | None:
    """The images of a zip and their .txt / .caption captions (not macOS metadata) at their own paths: a picture whose
    caption is in the zip is skipped like one in a folder (the zip's captions were left out, and replaced in the
    results). An unsafe member is kept so that it refuses the zip."""
    path = PurePosixPath(member)
    wanted = ((is_image_name(Path(path.name)) or path.suffix.lower() in CAPTION_SUFFIXES)
              and "__MACOSX" not in path.parts)
    return member if wanted or unsafe_name(member) else None


def caption_path(image: Path) -> Path:
    """The caption file of `image` in the kohya / TagGUI layout: same folder, same name, the `.txt` or kohya's
    `.caption` that is there (in any case: 'a.TXT'), else a new `.txt`. An existing one is the one read, skipped and
    replaced on --overwrite (a new .txt was written beside a .caption or a .TXT, and the picture had two)."""
    for suffix in CAPTION_SUFFIXES:
        for spelled in (suffix, suffix.upper(), suffix.capitalize()):
            found = image.with_suffix(spelled)
            if found.is_file():
                return found
    return image.with_suffix(".txt")


class TxtCaptions:
    """Captions as a `.txt` beside each image."""

    output: Path | None = None

    def __init__(self, overwrite: bool):
        self.overwrite = overwrite

    def key(self, image: Path) -> str:
        """What two images must not share: their caption file."""
        return str(caption_path(image))

    def unwritable(self, image: Path) -> str:
        """Why `image`'s caption cannot be written, found before any captioning ("" = it can)."""
        folder = image.parent
        if not os.access(folder, os.W_OK):  # also a read-only file system
            return (f"its folder {folder} cannot be written (read-only or no permission), so its .txt caption "
                    "could not be saved; upload the pictures (or a zip) instead, or from the terminal caption them "
                    "into one file elsewhere (--format jsonl --output FILE).")
        return ""

    def has(self, image: Path) -> bool:
        """True when `image` already has a caption (`caption_path`: a .txt or kohya's .caption) with text in it (an
        empty one is none: TagGUI and kohya read it as no tags)."""
        return _has_text(caption_path(image))

    def carry(self, image: Path) -> bool:
        """Nothing to carry: `has` already skips a picture with its caption file."""
        return False

    def put(self, image: Path, caption: str) -> bool:
        """Store a caption; False when one appeared meanwhile and was kept (an empty file is replaced)."""
        path = caption_path(image)
        return write_text_atomic(path, caption, self.overwrite or not _has_text(path))

    def close(self) -> None:
        """Nothing is buffered."""


class TableCaptions:
    """Captions in one JSONL or CSV file (`image`, `caption`), rewritten atomically every few seconds. A file that
    is there already keeps its rows, their order and their other columns or fields; new rows come after them."""

    def __init__(self, path: Path, fmt: str, overwrite: bool, flush_every_s: float = 5.0):
        self.output, self.fmt, self.overwrite, self.flush_every_s = path, fmt, overwrite, flush_every_s
        self.bom, self.newline = "", "\n"  # the file's own, kept when it is rewritten (Excel's CSV: a BOM and CRLF)
        check_writable_file(path, f"captions.{fmt}")  # before captioning: captions wait in memory until a flush
        self.records, self.fields = self._read()
        self.pending: dict[str, str] = {}
        self.flushed: set[str] = set()
        self.last_flush = time.monotonic()
        self.stems: dict[Path, Counter] = {}  # folder -> how many of its pictures bear each stem

    def key(self, image: Path) -> str:
        """The image as written in the file: relative to the file's folder when inside it (a link as named); the
        bytes of a name that is not UTF-8 written as \\xe9 (`shown_name`)."""
        image = Path(os.path.abspath(image))
        base = Path(os.path.abspath(self.output.parent))
        return shown_name(image.relative_to(base).as_posix() if image.is_relative_to(base) else str(image))

    def unwritable(self, image: Path) -> str:
        """"": the file was checked to be writable when opened."""
        return ""

    def has(self, image: Path) -> bool:
        """True when the file already holds a caption for `image` (also under its resolved path, as files written
        before links were kept as named hold it)."""
        return self.key(image) in self.records or str(Path(image).resolve()) in self.records

    def carry(self, image: Path) -> bool:
        """Record the caption of `image`'s .txt / .caption file, as it is, when it has one with text: a captioned
        picture keeps its caption in the file too (it was captioned anew). A caption file other pictures share
        (dup.png and dup.jpg: dup.txt is one of theirs) is carried for none; one not UTF-8 is an InputError."""
        path = caption_path(image)
        try:
            data = path.read_bytes()
        except OSError:  # none (caption_path names the .txt to write), or unreadable
            return False
        if not data.strip() or self._shares_caption(image):
            return False
        try:
            text = data.decode("utf-8-sig")  # Notepad's UTF-8 starts with a BOM
        except UnicodeDecodeError as exc:
            raise InputError(f"its caption {shown_name(path.name)} is {not_utf8(exc.object, exc.start)}") from None
        return self.put(image, text.strip())

    def _shares_caption(self, image: Path) -> bool:
        folder = image.parent
        if folder not in self.stems:
            try:
                self.stems[folder] = Counter(p.stem for p in folder.iterdir() if is_image_name(p))
            except OSError:
                self.stems[folder] = Counter()
        return self.stems[folder][image.stem] > 1

    def put(self, image: Path, caption: str) -> bool:
        """Record a caption; the file is rewritten at most every `flush_every_s` seconds."""
        self.pending[self.key(image)] = caption
        if time.monotonic() - self.last_flush >= self.flush_every_s:
            self.flush()
        return True

    def close(self) -> None:
        """Write whatever is still pending."""
        self.flush()

    def flush(self) -> None:
        """Merge the pending captions into the file as it is on disk now, then replace it atomically."""
        if not self.pending:
            return
        merged, fields = self._read()
        new = sorted(key for key in self.pending if key not in merged)
        for key in list(merged) + new:
            caption = self.pending.get(key)
            if caption is not None and (self.overwrite or key not in merged or key in self.flushed):
                merged[key] = {**merged.get(key, {"image": key}), "caption": caption}
        self.flushed |= set(self.pending)
        self.pending.clear()
        self.records, self.fields = merged, fields
        try:
            write_text_atomic(self.output, self._render(merged, fields), overwrite=True)
        except OSError as exc:
            raise InputError(f"{self.output} could not be written ({exc.strerror or exc}); the captions of this "
                             "run are lost: choose another --output and run again.") from None
        self.last_flush = time.monotonic()

    def _render(self, records: dict[str, dict], fields: list[str]) -> str:
        if self.fmt == "jsonl":
            return self.bom + "".join(json.dumps(row, ensure_ascii=False) + self.newline for row in records.values())
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator=self.newline, restval="")
        writer.writeheader()
        writer.writerows(records.values())
        return self.bom + buffer.getvalue()

    def _read(self) -> tuple[dict[str, dict], list[str]]:
        """(image -> its row, the CSV's columns) of the file on disk."""
        fields = ["image", "caption"]
        if not self.output.exists():
            return {}, fields
        try:
            data = self.output.read_bytes()
            text = data.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
        except UnicodeDecodeError:
            raise InputError(f"{self.output} exists but is not UTF-8 text (saved in another encoding?); save it as "
                             "UTF-8, or choose another output file.") from None
        self.bom = "\ufeff" if data.startswith(codecs.BOM_UTF8) else ""
        self.newline = "\r\n" if b"\r\n" in data else "\n"
        not_captions = InputError(f"{self.output} exists but is not a caption {self.fmt.upper()} file (columns "
                                  "image, caption); choose another output file or delete it.")
        try:
            if self.fmt == "jsonl":
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                reader = csv.DictReader(io.StringIO(text))
                rows = list(reader)
                if text.strip():  # a one-line file (a header of other columns, a note) was replaced whole
                    if not {"image", "caption"} <= set(reader.fieldnames or ()):
                        raise not_captions
                    fields = list(reader.fieldnames)
            records = {}
            for row in rows:
                if not isinstance(row, dict) or not {"image", "caption"} <= set(row):
                    raise not_captions
                records[str(row["image"])] = row
            return records, fields
        except (ValueError, TypeError):
            raise not_captions from None


def _has_text(path: Path) -> bool:
    try:
        return path.is_file() and bool(path.read_bytes().strip())
    except OSError:
        return path.exists()


def open_captions(fmt: str, output: Path | None, overwrite: bool) -> TxtCaptions | TableCaptions:
    """The caption store for `fmt` ('txt', 'jsonl' or 'csv')."""
    if fmt not in FORMATS:
        raise InputError(f"Caption format '{fmt}' is not supported; use one of {', '.join(FORMATS)}.")
    if fmt == "txt":
        if output is not None:
            raise InputError("--output is for jsonl/csv; .txt captions are written beside each image.")
        return TxtCaptions(overwrite)
    if output is None:
        raise InputError(f"A {fmt} caption file needs an output path.")
    return TableCaptions(Path(output).expanduser(), fmt, overwrite)


def zip_files(files: list[Path], base: Path, archive: Path) -> Path:
    """Write `files` (named relative to `base` where possible) into the zip `archive`, atomically."""
    names = {file: file.relative_to(base) if file.is_relative_to(base) else Path(file.name)
             for file in files if file.is_file()}
    return write_zip_atomic(archive, [(shown_name(name.as_posix()), file) for file, name in names.items()])
