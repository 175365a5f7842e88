"""Safe file operations, with one policy for the whole project.

- Atomic writes (text, bytes, zip): a temp file beside the target, then a rename, so a reader
  never sees half a file.
- `staged_folder`: a folder is built as a hidden sibling of its target, then renamed into place;
  on any failure the target is untouched and the staging folder removed.
- `extract_zip_checked`: every member is checked before anything is written, and the sizes are
  capped both as declared and as read.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Iterator

from .errors import InputError

CAPTION_SUFFIXES = (".txt", ".caption")  # kohya's sd-scripts read .caption by default, TagGUI writes .txt

CHUNK = 2**20
# On a shared app a dataset or eval set comes from an upload, and the pictures its rows name must be inside it: a
# path in a row could otherwise make the model read, and answer about, any picture on the server (another login's
# included). The serving process switches this on; the fine-tune child it starts inherits it through the environment.
CONFINED_ENV = "VLMCHAT_CONFINED"
_confined = [os.environ.get(CONFINED_ENV) == "1"]


# While a dataset or eval set is read (`finding_by_name`): the files below each of its folders by lower-case name,
# and the pictures found by name where their path did not lead.
_BY_NAME: ContextVar[dict | None] = ContextVar("vlmchat_pictures_by_name", default=None)
MAX_INDEXED = 200_000  # files a dataset folder is searched through by name, at most


@contextmanager
def finding_by_name():
    """A context in which a picture a dataset's path does not lead to is found by its file name below the dataset's
    folder (`picture_by_name`); yields the list of (path given, file found) it fills (`found_note` says it)."""
    state = {"index": {}, "found": [], "root": None, "several": {}}
    token = _BY_NAME.set(state)
    try:
        yield state["found"]
    finally:
        _BY_NAME.reset(token)


@contextmanager
def searched_from(folder: Path):
    """Under `finding_by_name`: pictures are looked up by name below `folder` (the folder the user gave, above the
    dataset file found in it: LLaVA keeps its JSON and its image folder side by side)."""
    state = _BY_NAME.get()
    saved = state["root"] if state else None
    if state is not None:
        state["root"] = folder
    try:
        yield
    finally:
        if state is not None:
            state["root"] = saved


def any_picture_below(base: Path) -> bool:
    """Under `finding_by_name`, once `picture_by_name` has looked below `base`: whether a picture is there (True
    where nothing was looked up)."""
    from .images import readable_suffixes

    state = _BY_NAME.get()
    index = state["index"].get(state["root"] or base) if state is not None else None
    return index is None or any(Path(name).suffix in readable_suffixes() for name in index)


def picture_by_name(base: Path, name: str, given: str) -> Path | None:
    """Under `finding_by_name`: the one file named `name` below `base` (or `searched_from`'s folder; the exact name,
    else the one of that name in any case), noted as found for `given`; None when there is none, or several, or it
    is a link out of the folder on a shared app (`check_inside`), or there is no such context."""
    state = _BY_NAME.get()
    if state is None or not name:
        return None
    base = state["root"] or base
    if base not in state["index"]:
        index, count = {}, 0
        for root, folders, files in os.walk(base):
            folders[:] = [f for f in folders if not f.startswith(".")]
            for file in files:
                index.setdefault(file.lower(), []).append(Path(root) / file)
            count += len(files)
            if count > MAX_INDEXED:
                break
        state["index"][base] = index
    named = state["index"][base].get(name.lower(), [])
    exact = [path for path in named if path.name == name]
    chosen = exact if len(exact) == 1 else named if len(named) == 1 else []
    if not chosen:
        if len(named) > 1:
            state["several"][name.lower()] = len(exact) or len(named)
        return None
    try:
        check_inside(chosen[0], base, given)
    except InputError:  # a link leading out of the folder is no picture in it
        return None
    state["found"].append((given, chosen[0]))
    return chosen[0]


def namesakes(name: str) -> int:
    """Under `finding_by_name`: how many files below the dataset's folder bear `name`, when `picture_by_name` found
    several and so chose none (0 otherwise)."""
    state = _BY_NAME.get()
    return state["several"].get(name.lower(), 0) if state else 0


def found_note(found: list[tuple[str, Path]], where: str) -> str:
    """The report's words for the pictures `finding_by_name` found by name ('' for none)."""
    if not found:
        return ""
    given, file = found[0]
    return (f"; {len(found)} picture{'s' if len(found) != 1 else ''} found by file name below {where}, where the path "
            f"given did not lead (e.g. '{given}' -> {file})")


def is_windows_path(value: str) -> bool:
    """C:\\… or \\\\server\\…: absolute on the Windows machine a dataset was made on (relative here)."""
    return bool(re.match(r"[A-Za-z]:[\\/]|\\\\", value))


def confine_pictures(on: bool = True) -> None:
    """Make `check_inside` refuse pictures outside their dataset's folder (the app is reachable from other machines)."""
    _confined[0] = on
    if on:
        os.environ[CONFINED_ENV] = "1"
    else:
        os.environ.pop(CONFINED_ENV, None)


def check_inside(path: Path, base: Path, given: str, *others: Path) -> None:
    """On a shared app, InputError unless `path` lies inside `base` (or one of `others`), links followed; the same
    message whether or not the file exists, so a row cannot probe the server's files."""
    if not _confined[0]:
        return
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(os.path.realpath(root)) for root in (base, *others)):
        raise InputError(f"picture '{given}' is outside the uploaded dataset; on a shared app every picture must be "
                         "in the upload, beside or below the dataset file (a .zip keeps the folders)")


def _read_umask() -> int:
    """The process's umask: from /proc on Linux (reading it elsewhere means setting it for a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o077)  # the strictest mask meanwhile: a file another thread makes now is not widened
        os.umask(mask)
        return mask


_UMASK = _read_umask()


def _file_mode(target: Path) -> int:
    """The mode a written (not private) file gets: the replaced file's, or what the umask gives a new file
    (mkstemp's temp file is owner-only, which a caption or a results file must not stay)."""
    try:
        return os.stat(target).st_mode & 0o777
    except OSError:
        return 0o666 & ~_UMASK


def _write_atomic(target: Path, write: Callable[[IO[bytes]], object], overwrite: bool = True,
                  private: bool = False) -> bool:
    """Fill a temp file beside `target` with `write`, then rename it; False when kept (exists, not `overwrite`).

    `private`: a new file is readable by its owner only (chats, votes, keys, eval sets' embedded pictures); others
    get the usual mode."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if not private and hasattr(os, "fchmod"):  # mkstemp's file is owner-only already
            try:
                os.fchmod(fd, _file_mode(target) | (0o200 if os.name == "nt" else 0))
            except OSError:  # FAT/exFAT and some network mounts refuse modes: the file keeps its own
                pass
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(temp, target)
            return True
        try:
            os.link(temp, target)  # fails if the target exists, even one created a moment ago
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: reserve the name, then replace it
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return False
            os.replace(temp, target)
        return True
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def write_bytes_atomic(target: Path, data: bytes, overwrite: bool = True, private: bool = False) -> bool:
    """Write `data` to `target` all at once; False (nothing written) when it exists and not `overwrite`."""
    return _write_atomic(target, lambda out: out.write(data), overwrite, private)


def write_text_atomic(target: Path, text: str, overwrite: bool = True, private: bool = False) -> bool:
    """Write `text` to `target` all at once; False (nothing written) when it exists and not `overwrite`."""
    return write_bytes_atomic(target, text.encode("utf-8"), overwrite, private)


def shown_name(text: str) -> str:
    """`text` (a path as Python gives it) with the bytes of a name that is not UTF-8 (an old Windows copy's
    Latin-1 'caf\xe9.png') written as \\xe9: text that can be shown and saved, and matched back to the file."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def not_utf8(data: bytes, at: int) -> str:
    """Why a caption file that is not UTF-8 is a problem, not a guess: kohya's trainer refuses it too, and a wrong
    guess at its encoding would teach the adapter mojibake."""
    return (f"not UTF-8 text (byte 0x{data[at]:02X}; as Windows-1252 it reads "
            f"{data.decode('cp1252', 'replace').strip()[:60]!r}): save the caption as UTF-8, as kohya's trainer and "
            "TagGUI read captions (e.g. iconv -f cp1252 -t utf-8)")


def distinct_files(files: Iterable[Path]) -> list[Path]:
    """`files` with each file given again (the same name and bytes) once: Gradio's upload box adds files picked again
    to those it holds, also to those of a pick it refused, and every picture was captioned, or trained on, twice."""
    kept: dict[tuple[str, str], Path] = {}
    for file in files:
        kept.setdefault((file.name, sha256_of(file)), file)
    return list(kept.values())


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of the file at `path`, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable_file(target: Path, example: str) -> None:
    """InputError, before any work is done for it, unless a file can be written at `target`: not a folder (the
    message suggests `example` inside it), its folder made if missing, and that folder (and the file, if there)
    writable."""
    if target.is_dir():
        raise InputError(f"{target} is a folder; give a file name, e.g. {target / example}.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{target}: its folder cannot be made ({exc.strerror or exc}); choose another place.") from None
    try:  # tried, not asked (os.access says yes to root everywhere, /proc included): the file is left as it is
        if target.exists():
            open(target, "ab").close()
        else:
            tempfile.TemporaryFile(dir=target.parent).close()
    except OSError as exc:
        raise InputError(f"{target} cannot be written there ({exc.strerror or exc}); choose another place.") from None


def write_zip_atomic(target: Path, members: Iterable[tuple[str, Path | bytes]]) -> Path:
    """Write a deflated zip of (name in the archive, file path or bytes) pairs to `target` all at once."""
    def fill(out: IO[bytes]) -> None:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zipped:
            for arcname, source in members:
                if isinstance(source, (bytes, bytearray)):
                    zipped.writestr(arcname, source)
                else:
                    zipped.write(source, arcname)

    _write_atomic(target, fill)
    return Path(target)


def _sibling(target: Path, tag: str) -> Path:
    """A hidden, unused name beside `target` (same folder, so a rename is atomic)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.{tag}")


@contextmanager
def staged_folder(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder beside `target`, renamed to `target` when the block succeeds.

    Without `replace` an existing `target` raises FileExistsError (on entry, or at the end if it
    appeared meanwhile). With `replace` the old folder is moved aside, the new one renamed in, and
    only then the old one deleted. On any failure `target` is as it was and the staging folder is gone.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not replace and os.path.lexists(target):
        raise FileExistsError(f"{target} already exists")
    staging = _sibling(target, "tmp")
    staging.mkdir()  # not mkdtemp: the folder keeps the permissions a plain mkdir gives
    try:
        yield staging
        if not replace:
            if os.path.lexists(target):
                raise FileExistsError(f"{target} already exists")
            os.rename(staging, target)
            return
        trash = _sibling(target, "old") if os.path.lexists(target) else None
        if trash:
            os.rename(target, trash)
        try:
            os.rename(staging, target)
        except BaseException:
            if trash:
                os.rename(trash, target)
            raise
        if trash:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already gone when it was renamed into place


def unsafe_name(name: str) -> str:
    """Why zip member `name` must not be written as it is ('' when it may)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or "\x00" in name:
        return "has an empty name"
    if parts[0] == "/" or name.startswith(("/", "\\")):
        return "has an absolute path"
    if ":" in parts[0]:
        return "names a drive"
    if ".." in parts:
        return "has a '..' part that points outside the archive"
    return ""


def _unsafe_kind(info: zipfile.ZipInfo) -> str:
    """Why member `info` is not a plain file or folder ('' when it is)."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if info.flag_bits & 0x1:
        return "is password-protected"
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a device or other special file"
    return ""


def _utf8_names(zipped: zipfile.ZipFile) -> None:
    """Read as UTF-8 the names a zip stored in UTF-8 without saying so (Linux's `zip`, macOS's Archive Utility leave
    out the UTF-8 flag; zipfile then reads them as cp437, and 'ñandú.png' came out as '├▒and├║.png', its caption
    matching no picture). A name that is not valid UTF-8 keeps zipfile's reading."""
    for info in zipped.infolist():
        if info.flag_bits & 0x800:
            continue
        try:
            info.filename = info.filename.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _plan(archive: Path, zipped: zipfile.ZipFile, dest: Path, max_bytes: int, max_files: int,
          place: Callable[[str], str | None], advice: str,
          max_picture_bytes: int | None = None) -> list[tuple[zipfile.ZipInfo, Path]]:
    """Check every member; (member, where it goes) for those `place` keeps, or InputError on the first problem."""
    from .images import readable_suffixes

    def refuse(problem: str) -> InputError:
        return InputError(f"'{archive.name}' {problem}, so nothing was extracted; "
                          "re-create the zip from a plain folder (no links, no password).")

    files = []
    for info in zipped.infolist():  # every member, also one `place` would leave out or flatten: one policy for all
        if problem := _unsafe_kind(info) or unsafe_name(info.filename):
            raise refuse(f"holds an unsafe member '{info.filename}' that {problem}")
        if not info.is_dir():
            files.append(info)
    if len(files) > max_files:
        raise InputError(f"'{archive.name}' holds {len(files)} files, over the limit of {max_files}; {advice}.")
    total = sum(info.file_size for info in files)
    if total > max_bytes:
        raise InputError(f"'{archive.name}' unpacks to {_size(total)}, over the {_size(max_bytes)} limit; {advice}.")
    root, plan, seen = dest.resolve(), [], {}
    for info in files:
        landing = place(info.filename.replace("\\", "/"))
        if landing is None:
            continue
        if problem := unsafe_name(landing):
            raise refuse(f"holds an unsafe member '{info.filename}' that {problem}")
        if max_picture_bytes and info.file_size > max_picture_bytes \
                and PurePosixPath(landing).suffix.lower() in readable_suffixes():
            raise InputError(f"'{archive.name}' holds the picture '{info.filename}' of {_size(info.file_size)}, over "
                             f"the {_size(max_picture_bytes)} limit for a picture, so nothing was extracted; resize "
                             "it or leave it out of the zip.")
        parts = PurePosixPath(landing).parts
        if parts in seen:
            raise refuse(f"holds two members that would both be written as '{landing}' "
                         f"('{seen[parts]}' and '{info.filename}')")
        seen[parts] = info.filename
        target = dest.joinpath(*parts)
        if not target.resolve().is_relative_to(root):
            raise refuse(f"holds an unsafe member '{info.filename}' that would land outside {dest}")
        plan.append((info, target))
    for parts, name in seen.items():
        if clash := next((seen[parts[:i]] for i in range(1, len(parts)) if parts[:i] in seen), None):
            raise refuse(f"holds '{clash}' both as a file and as the folder of '{name}'")
    return plan


def _copy_capped(archive: Path, zipped: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Copy one member, never more bytes than its header declared (that sum was capped)."""
    left = info.file_size
    with zipped.open(info) as source, open(target, "wb") as out:
        while chunk := source.read(min(CHUNK, left + 1)):
            left -= len(chunk)
            if left < 0:
                raise InputError(f"'{archive.name}' member '{info.filename}' holds more than its header says; "
                                 "the zip is damaged or forged, re-create it.")
            out.write(chunk)


def extract_zip_checked(archive: Path, dest: Path, max_bytes: int, max_files: int, *,
                        place: Callable[[str], str | None] | None = None,
                        advice: str = "split it into smaller zips", max_picture_bytes: int | None = None) -> list[Path]:
    """Unpack `archive` into `dest` after checking every member; returns the paths written.

    Refused, with nothing written: links, devices and password-protected members anywhere; more
    than `max_files` files or `max_bytes` declared in all; and, among the members written, an
    absolute path, a drive, a `..`, two members landing on one path, or a file where a folder is
    needed; a picture declared larger than `max_picture_bytes` (a 2 MB zip of one 2 GiB picture was
    written whole before the picture's limit refused it, and stayed on disk). `place(name)` says where
    member `name` goes inside `dest` (None: leave it out); by default every member goes to its own path.
    `advice` ends the message when a cap is exceeded.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zipped = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InputError(f"'{archive.name}' is not a valid zip file; re-create it or choose another file.") from None
    except OSError as exc:
        raise InputError(f"'{archive.name}' could not be read ({exc.strerror or exc}); check the path.") from None
    _utf8_names(zipped)
    written: list[Path] = []
    with zipped:
        plan = _plan(archive, zipped, dest, max_bytes, max_files, place or (lambda name: name), advice,
                     max_picture_bytes)
        try:
            for info, target in plan:
                target.parent.mkdir(parents=True, exist_ok=True)
                written.append(target)
                _copy_capped(archive, zipped, info, target)
        except BaseException as exc:
            for path in written:
                path.unlink(missing_ok=True)
            if isinstance(exc, zipfile.BadZipFile):  # a CRC or header error found while reading
                raise InputError(f"'{archive.name}' is damaged ({exc}); nothing was kept, re-create it.") from None
            raise
    return written


RUNNING_UI = ".running-ui"  # in the outputs folder: <pid>.port for each process serving the UI


def running_uis(outputs: Path) -> list[int]:
    """The ports of the vlmchat UIs that serve with this outputs folder now (any port: a terminal fine-tune leaves
    them CPU cores). The mark of a process that is gone is removed."""
    folder = Path(outputs) / RUNNING_UI
    ports = []
    for mark in sorted(folder.glob("*.port")) if folder.is_dir() else []:
        try:
            os.kill(int(mark.stem), 0)
            ports.append(int(mark.read_text().strip()))
        except ProcessLookupError:
            mark.unlink(missing_ok=True)
        except (OSError, ValueError):
            continue
    return ports


def mark_running_ui(outputs: Path, port: int) -> None:
    """Say in the outputs folder that this process serves the UI on `port`, until it exits."""
    import atexit

    mark = Path(outputs) / RUNNING_UI / f"{os.getpid()}.port"
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(str(port))
    except OSError:
        return  # a read-only outputs folder: a terminal fine-tune then probes the settings' port only
    atexit.register(mark.unlink, missing_ok=True)
