"""Eval sets as people have them, read into one shape: multiple-choice or caption items.

`read_eval_set(path)` auto-detects the layout (the format name is reported), returns the usable
items and every row it could not use with "file:line: why".

This module owns the interface and the reading of files and folders (JSONL, a JSON list, CSV with
or without a header, Parquet; a folder of such files or of images with .txt captions; a folder whose
subfolders hold Parquet files, as Hugging Face publishes MMMU: one subfolder per subject). How each
layout's rows become items, and which layout rows are in, lives in `set_formats.py`.

Images stored in the rows themselves (the `datasets` Image feature, as in MMMU's Parquet files) are
written once to a content-addressed cache, `<temp folder>/vlmchat-eval-images-<user>/<sha256>.<ext>`, and
items refer to those files like to any other image.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PureWindowsPath

from ..errors import InputError
from ..files import (CAPTION_SUFFIXES, check_inside, finding_by_name, found_note, is_windows_path, namesakes,
                     picture_by_name, write_bytes_atomic)
from ..errors import Problem as EvalProblem
from .set_formats import (ACCEPTED, CAPTION_QUESTION, MMLU, Draft, Embedded, Layout, RowProblem, detect_layout,
                          is_mmlu_row, plain, shorten, split_pictures)

CHOICE, CAPTION = "choice", "caption"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
EMBEDDED_FOLDER = "vlmchat-eval-images"     # under tempfile.gettempdir(): the images rows hold as bytes
__all__ = ["CAPTION", "CAPTION_QUESTION", "CHOICE", "EvalItem", "EvalProblem", "EvalSet", "embedded_image_folder",
           "read_eval_set"]


def _image_suffixes() -> frozenset[str]:
    """What the one image loader reads (imported here, not at the top: reading a set stays free of PIL)."""
    from ..images import readable_suffixes

    return readable_suffixes()


@dataclass(frozen=True)
class EvalItem:
    """One question (or one picture to caption) of an eval set."""

    source: str                              # "file:line" (or "file" for a sidecar caption), shown in reports
    question: str                            # the prompt text; MMMU's "<image n>" placeholders replaced by "(image n)"
    images: tuple[str, ...] = ()             # image paths (absolute), in the order the question refers to them
    options: tuple[str, ...] = ()            # multiple choice: the option texts, in order (A, B, C, ...)
    answer: int | None = None                # multiple choice: index of the correct option
    references: tuple[str, ...] = ()         # caption sets: the reference captions
    subject: str = ""


@dataclass
class EvalSet:
    """What an eval-set path holds."""

    path: str
    format: str                              # e.g. "MMLU CSV (headerless)", "vlmchat JSONL", "caption folder"
    kind: str                                # CHOICE or CAPTION
    items: list[EvalItem] = field(default_factory=list)
    problems: list[EvalProblem] = field(default_factory=list)
    read_order: list[str] = field(default_factory=list)  # the files whose rows were read, in the order read
    usable_files: set[str] = field(default_factory=set)  # the files with a usable row (asked or left out by a limit)

    def require_usable(self) -> list[EvalItem]:
        """The items, or an InputError saying what to fix when none can be used."""
        if not self.items:
            shown = "; ".join(str(p) for p in self.problems[:3])
            if len(self.problems) > 3:  # the other rows' problems went unsaid (outside reviewer)
                shown += f"; … and {len(self.problems) - 3} more"
            raise InputError(f"No usable questions in {self.path} ({self.format})" + (f": {shown}." if shown else ".")
                             + " Fix the rows, or see README's Evaluate section for the accepted layouts.")
        return self.items


def read_eval_set(path: str | Path, limit: int | None = None) -> EvalSet:
    """Read an eval set (file or folder), auto-detecting its layout; `limit` keeps N items, taken in turn from each
    subject (its first ones), so a quick run of a set of many subjects covers every one (MMLU's 57 subject files
    gave the first subject's questions only)."""
    if limit is not None and limit < 1:
        raise InputError(f"The item limit must be 1 or more (got {limit}); leave it empty to use every item.")
    path = Path(path).expanduser()
    with finding_by_name() as found:
        if path.is_dir():
            result = _read_folder(path, limit)
        elif not path.is_file():
            raise InputError(f"'{path}' does not exist; give an eval-set file ({', '.join(DATA_SUFFIXES)}) or a "
                             "folder.")
        else:
            rows = _load_rows(path, path.name)
            layout = _detect(rows, path.name)
            result = EvalSet(str(path), f"{layout.name} {rows.container}", CAPTION if layout.captions else CHOICE)
            _convert(rows, layout, path.name, path.parent, result, limit, {})
    result.format += found_note(found, "the set's folder")
    return _spread(result, limit)


def _spread(result: EvalSet, limit: int | None) -> EvalSet:
    """`result` with `limit` of its items: each subject's first in turn, kept in the set's order. Once the limit is
    reached, rows after the last question asked (in reading order; with subjects, of the row's own file) were never
    going to be asked, so their problems are not reported, whatever the limit (a set without subjects reported them:
    exit 1 for rows --limit 2 leaves out; a folder's later file was reported under a small limit and not under a larger
    one: blind testers)."""
    if limit is None or len(result.items) < limit:
        return result
    by_subject: dict[str, list[int]] = {}
    for index, item in enumerate(result.items):
        by_subject.setdefault(item.subject, []).append(index)
    kept: list[int] = []
    for round_ in range(max(map(len, by_subject.values()))):
        kept += [indexes[round_] for indexes in by_subject.values() if round_ < len(indexes)][:limit - len(kept)]
    result.items = [result.items[index] for index in sorted(kept)]
    asked_at = [(file, int(line) if line.isdigit() else 0)
                for file, _, line in (item.source.rpartition(":") for item in result.items)]
    if len(by_subject) > 1:  # subjects in turn: a file's rows after its own last question asked were never asked
        last_of: dict[str, int] = {}
        for file, line in asked_at:
            last_of[file] = max(last_of.get(file, 0), line)
        asked = lambda p: p.line <= last_of.get(p.file, 0)  # noqa: E731
    else:  # in reading order: files in turn, then lines
        order = {name: index for index, name in enumerate(result.read_order)}
        place = lambda file, line: (order.get(file, len(order)), line)  # noqa: E731
        last = max(place(file, line) for file, line in asked_at)
        asked = lambda p: place(p.file, p.line) <= last  # noqa: E731
    # a whole file's problem, and a file none of whose rows could be used, are said whatever the limit
    result.problems = [p for p in result.problems if p.line is None or p.file not in result.usable_files or asked(p)]
    if len(by_subject) > 1:
        result.format += f"; {limit} questions taken in turn from its {len(by_subject)} subjects (--limit)"
    return result


# ---------------------------------------------------------------- files into rows


@dataclass
class _Rows:
    container: str                      # "JSONL", "JSON", "CSV", "CSV (headerless)", "Parquet"
    rows: list[tuple[int, object]]      # (line, dict with lower-case keys | headerless CSV cells | RowProblem)


def _unknown(name: str, found: str) -> str:
    return (f"'{name}' is not in an eval-set layout vlmchat knows ({found}). Accepted: " + "; ".join(ACCEPTED)
            + f". Give a {', '.join(DATA_SUFFIXES)} file or a folder; see README's Evaluate section.")


def _empty(name: str) -> str:
    return f"'{name}' is empty; put the questions in it (one row per line), or choose another file."


def _load_rows(path: Path, name: str) -> _Rows:
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise InputError(_unknown(name, f"a {suffix} file" if suffix else "a file without a suffix"))
    if path.stat().st_size == 0:
        raise InputError(_empty(name))
    if suffix == ".parquet":
        return _parquet_rows(path, name)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"'{name}' is not UTF-8 text (byte {exc.start}); save it as UTF-8 and try again.") from None
    if not text.strip():
        raise InputError(_empty(name))
    if suffix == ".csv":
        return _csv_rows(text, name)
    if suffix == ".json" and text.lstrip()[0] in "[{":
        return _json_rows(text, name)
    return _Rows("JSONL", _jsonl_rows(text))


def _row(value: object) -> dict | RowProblem:
    if not isinstance(value, dict):
        return RowProblem(f"a row must be a JSON object with named fields, not {shorten(json.dumps(value), 30)}")
    return {str(key).strip().lower(): plain(cell) for key, cell in value.items()}


def _jsonl_rows(text: str) -> list[tuple[int, object]]:
    rows: list[tuple[int, object]] = []
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold unescaped
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((number, _row(json.loads(line))))
        except json.JSONDecodeError as exc:
            rows.append((number, RowProblem(f"not valid JSON ({exc.msg}, column {exc.colno})")))
    return rows


def _json_rows(text: str, name: str) -> _Rows:
    """A JSON list of rows, each with the line it starts on; a .json file of JSON lines is read as JSONL."""
    start = len(text) - len(text.lstrip())
    if text[start] == "{":
        try:
            json.loads(text)
        except json.JSONDecodeError:
            return _Rows("JSONL", _jsonl_rows(text))
        raise InputError(f"'{name}' holds one JSON object; an eval set is a list of rows ([{{...}}, {{...}}]) "
                         "or JSONL (one object per line).")
    decoder, space = json.JSONDecoder(), re.compile(r"\s*")
    rows: list[tuple[int, object]] = []
    position = space.match(text, start + 1).end()
    line, counted = 1, 0
    try:
        while text[position:position + 1] != "]":
            line, counted = line + text.count("\n", counted, position), position
            value, end = decoder.raw_decode(text, position)
            rows.append((line, _row(value)))
            position = space.match(text, end).end()
            if text[position:position + 1] == ",":
                position = space.match(text, position + 1).end()
            elif text[position:position + 1] != "]":
                raise json.JSONDecodeError("Expecting ',' or ']'", text, position)
        if text[position + 1:].strip():
            raise json.JSONDecodeError("Extra data after the list", text, position + 1)
    except json.JSONDecodeError as exc:
        raise InputError(f"'{name}' is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix it, "
                         "or write one row per line as JSONL.") from None
    return _Rows("JSON", rows)


def _csv_rows(text: str, name: str) -> _Rows:
    reader = csv.reader(io.StringIO(text, newline=""))
    records, end = [], 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                records.append((start, cells))
    except csv.Error as exc:
        raise InputError(f"'{name}' is not readable CSV at line {reader.line_num} ({exc}); check its quotes.") from None
    if not records:
        raise InputError(_empty(name))
    first = records[0][1]
    header = [cell.strip().lower() for cell in first]
    names = set(header)
    if "question" in names or (names & {"image", "file_name"} and names & {"caption", "captions", "text"}):
        if len(records) == 1:
            raise InputError(f"'{name}' has a header but no rows; add the questions below it.")
        return _Rows("CSV", [(line, _csv_row(header, cells)) for line, cells in records[1:]])
    if is_mmlu_row(first):
        return _Rows("CSV (headerless)", records)
    raise InputError(_unknown(name, f"its first row is '{shorten(','.join(first), 60)}'"))


def _csv_row(header: list[str], cells: list[str]) -> dict | RowProblem:
    if any(cell.strip() for cell in cells[len(header):]):
        return RowProblem(f"{len(cells)} cells but the header has {len(header)}; put cells that contain commas "
                          "in double quotes")
    return {key: cells[i] if i < len(cells) else "" for i, key in enumerate(header) if key}


def _parquet_rows(path: Path, name: str) -> _Rows:
    return _Rows("Parquet", [(number, _row(record)) for number, record in enumerate(parquet_records(path, name), 1)])


def parquet_records(path: Path, name: str) -> list[dict]:
    """The rows of a Parquet file as dicts (InputError when it cannot be read or holds none)."""
    try:
        import pandas  # avoid an eager pandas import: only Parquet needs it
    except ImportError:
        raise InputError(f"Reading '{name}' needs pandas and pyarrow: pip install pandas pyarrow") from None
    try:
        frame = pandas.read_parquet(path)
    except ImportError:
        raise InputError(f"Reading '{name}' needs pyarrow, which is not installed: pip install pyarrow") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"'{name}' cannot be read as Parquet ({shorten(exc, 100)}); re-export it, or save the "
                         "rows as JSONL.") from None
    if frame.empty:
        raise InputError(_empty(name))
    return frame.to_dict("records")


def _detect(rows: _Rows, name: str) -> Layout:
    if rows.container == "CSV (headerless)":
        return MMLU
    if not rows.rows:
        raise InputError(_empty(name))
    good = [row for _, row in rows.rows if isinstance(row, dict)]
    if not good:
        first = next((f"line {line}: {row}" for line, row in rows.rows), "no rows")
        raise InputError(f"'{name}' has no row vlmchat can read ({first}); write one JSON object per line.")
    keys = set().union(*good)
    layout = detect_layout(keys, (str(row.get("question", "")) for row in good))
    if layout is None:
        raise InputError(_unknown(name, "columns " + ", ".join(sorted(keys))))
    return layout


# ---------------------------------------------------------------- rows into items


def _usual_options(rows: _Rows) -> int | None:
    """The number of options most headerless MMLU rows of a file have (None for fewer than 3 rows: no telling): a
    row with another number has a column too few or a cell split at an unquoted comma, and its answer letter then
    points at the wrong option."""
    sizes = Counter(len(split_pictures(row)[0]) - 2 for _, row in rows.rows if isinstance(row, list))
    if sum(sizes.values()) < 3:
        return None
    size, count = sizes.most_common(1)[0]
    return size if count * 2 > sum(sizes.values()) else None


_Checked = dict[object, tuple[str, str]]  # file Path or embedded image's sha256 -> (absolute path, problem or "")


def _convert(rows: _Rows, layout: Layout, name: str, base: Path, result: EvalSet, limit: int | None,
             checked: _Checked, subject: str = "") -> None:
    """Rows into items (up to `limit` of each subject: `_spread` chooses among them); `subject` is for rows that name
    none (a subject subfolder's name)."""
    counts = Counter(item.subject for item in result.items)
    result.read_order.append(name)
    usual = _usual_options(rows) if layout is MMLU else None
    for line, row in rows.rows:
        try:
            if isinstance(row, RowProblem):
                raise row
            draft = layout.convert(row, name)
            if usual and len(draft.options) != usual:
                raise RowProblem(f"{len(draft.options)} options where most of the file's rows have {usual}: is a "
                                 + ("column missing" if len(draft.options) < usual else "comma in a cell unquoted")
                                 + "? An MMLU row is question,A,B,C,D,answer (a cell with a comma in double quotes); "
                                 "to mix numbers of options on purpose, give the file a header with columns "
                                 "question,A,B,C,D,E,answer")
            if subject and not draft.subject:
                draft = replace(draft, subject=subject)
            result.usable_files.add(name)
            if limit is not None and counts[draft.subject] >= limit:
                continue  # its pictures are not checked: with many subjects, most rows are never asked
            images = tuple(_check_image(given, base, checked) for given in draft.images)
        except RowProblem as problem:
            result.problems.append(EvalProblem(name, line, str(problem)))
            continue
        counts[draft.subject] += 1
        result.items.append(_item(draft, images, f"{name}:{line}"))


def _item(draft: Draft, images: tuple[str, ...], source: str) -> EvalItem:
    return EvalItem(source, draft.question, images, draft.options, draft.answer, draft.references, draft.subject)


def _check_image(given: str | Embedded, base: Path, checked: _Checked) -> str:
    """The image's absolute path, or RowProblem naming it as the row gives it (never the server's full path)."""
    if isinstance(given, Embedded):
        return embedded_file(given, checked)
    if re.match(r"[a-z][a-z0-9+.-]*://|data:", given, re.I):
        raise RowProblem(f"image '{shorten(given, 60)}' is a URL; download it and give its file path")
    file = base / (Path(PureWindowsPath(given).name) if is_windows_path(given)
                   else Path(given.replace("\\", "/")).expanduser())
    try:
        check_inside(file, base, given)
    except InputError as exc:  # a shared app: this row's picture is not in the upload
        file = picture_by_name(base, file.name, given)  # an absolute path of another machine: the upload may hold it
        if file is None:
            raise RowProblem(str(exc)) from None
    if not file.is_file() and (base / file.name).is_file():
        file = base / file.name  # picked with the eval set in a browser, the pictures lost their folders
    elif not file.is_file():
        # an absolute path of the machine the set was made on, a folder of its own, a name in another case: found by
        # its file name below the set's folder, and said in the report
        file = picture_by_name(base, file.name, given) or file
    if file not in checked:
        checked[file] = (str(file.resolve()), _image_problem(file, given))
    path, problem = checked[file]
    if problem:
        raise RowProblem(problem)
    return path


def _image_problem(file: Path, given: str) -> str:
    if not file.is_file():
        several = namesakes(file.name)
        if several:
            return (f"image '{given}' not found, and {several} files below the set's folder are named "
                    f"'{file.name}', so its name does not say which; give its path relative to the eval-set file")
        return (f"image '{given}' not found (image paths are relative to the eval-set file's folder; uploading, pick "
                "the pictures with the set file, or a .zip that keeps the folders)")
    from ..images import load_image  # PIL only when there are images to check

    try:
        load_image(file, name=given)
    except InputError as exc:
        return f"image {exc}"
    return ""


# ---------------------------------------------------------------- embedded images


def embedded_image_folder() -> Path:
    """Where images that rows hold as bytes are written: `<temp folder>/vlmchat-eval-images-<user>`, one per system
    user (a second user's vlmchat could not write into the first one's folder, made private to its owner)."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()).resolve() / f"{EMBEDDED_FOLDER}-{re.sub(r'[^A-Za-z0-9_.-]', '_', user)}"


def embedded_file(image: Embedded, checked: _Checked) -> str:
    """The cached file of an embedded image (decoded once, written once), or RowProblem when it cannot be decoded."""
    digest = hashlib.sha256(image.data).hexdigest()
    if digest not in checked:
        suffix = _embedded_suffix(image)
        checked[digest] = (_store_embedded(image.data, digest + suffix), "") if suffix else \
            ("", "the embedded image cannot be decoded")
    path, problem = checked[digest]
    if problem:
        raise RowProblem(f"{image.label}: {problem}")
    return path


def _embedded_suffix(image: Embedded) -> str:
    """The file suffix of the bytes' actual format (else of the dataset's file name), or "" when undecodable."""
    import warnings

    from PIL import Image  # PIL only when there are images to check

    from ..images import format_suffix, load_image

    try:
        load_image(image.data, name=image.label)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image has checked the size
            with Image.open(io.BytesIO(image.data)) as opened:
                found = opened.format or ""
    except (InputError, OSError, ValueError, Image.DecompressionBombError):
        return ""
    # from the bytes alone where PIL knows the format's suffix, so that the same bytes always get the same name
    named = Path(image.name).suffix.lower()
    return format_suffix(found) or (named if re.fullmatch(r"\.[a-z0-9]{1,5}", named) else ".img")


def _store_embedded(data: bytes, file_name: str) -> str:
    """Write `data` to the cache as `file_name` (atomically) unless it holds them already."""
    folder = embedded_image_folder()
    target = folder / file_name
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
            raise InputError(f"'{folder}' belongs to another user, so vlmchat will not keep images in it; delete "
                             "it, or point TMPDIR at a folder of your own.")
        if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
            return str(target)
        write_bytes_atomic(target, data, private=True)
    except OSError as exc:
        raise InputError(f"The images embedded in the dataset cannot be saved to '{folder}' ({exc.strerror or exc}); "
                         "free some disk space, or point TMPDIR at a writable folder.") from None
    return str(target)


# ---------------------------------------------------------------- folders


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_folder(folder: Path, limit: int | None) -> EvalSet:
    files = _visible_files(folder)
    data = [p for p in files if p.parent == folder and p.suffix.lower() in DATA_SUFFIXES]
    captions = {p.with_suffix("") for p in files if p.suffix.lower() in CAPTION_SUFFIXES}
    pictured = any(p.suffix.lower() in _image_suffixes() and p.with_suffix("") in captions for p in files)
    if pictured and data:
        raise InputError(f"'{folder}' holds both images with captions beside them and eval-set files "
                         f"({', '.join(p.name for p in data[:3])}); point at one file, or move them apart.")
    if pictured:
        return _read_caption_folder(folder, files, limit)
    if data:
        return _read_split(folder, data, limit)
    nested = [p for p in files if p.suffix.lower() == ".parquet"]
    # (all/test-00000-of-00001.parquet, or all/test/0000.parquet in the hub's converted Parquet)
    whole = [p for p in nested if len(p.relative_to(folder).parts) > 1
             and p.relative_to(folder).parts[0].lower() == "all"]
    if whole and len(whole) < len(nested):  # cais/mmlu: its 'all' configuration is the union of the subject ones
        result = _read_split(folder, whole, limit)
        result.format += "; the 'all' folder only (the folders beside it hold the same questions by subject)"
        return result
    below = [p for p in files if p.parent != folder and p.suffix.lower() in DATA_SUFFIXES]
    if nested and len(nested) == len(below):  # e.g. Hugging Face's MMMU: <subject>/<split>-00000-of-00001.parquet
        return _read_split(folder, nested, limit)  # (beside a .jsonl, the Parquet file was read and the .jsonl not)
    by_folder: dict[str, list[Path]] = {}
    for file in files:
        if file.suffix.lower() in DATA_SUFFIXES and file.parent.parent == folder:
            by_folder.setdefault(file.parent.name.lower(), []).append(file)
    if by_folder and set(by_folder) <= SPLIT_FOLDERS:  # MMLU's own tarball: data/{dev,val,test}/<subject>_test.csv
        return _read_one_split(folder, by_folder, limit)
    subfolders = sorted({p.parent.relative_to(folder).as_posix() for p in files
                         if p.parent != folder and p.suffix.lower() in DATA_SUFFIXES})
    hint = f" Its subfolders {', '.join(subfolders[:4])} hold eval-set files: point at one of them." \
        if subfolders else ""
    parents = {Path(sub).parent.as_posix() for sub in subfolders}
    if len(parents) == 1 and {Path(sub).name.lower() for sub in subfolders} <= SPLIT_FOLDERS and "." not in parents:
        hint = (f" Its folder {parents.pop()} holds the splits {', '.join(Path(sub).name for sub in subfolders)}: "
                "point at it (the test split is read) or at one of them.")  # MMLU's tarball: data/{dev,val,test}
    raise InputError(f"'{folder}' has nothing to evaluate on: no eval-set files ({', '.join(DATA_SUFFIXES)}) and "
                     f"no images with same-name .txt (or kohya's .caption) captions.{hint}")


# Hugging Face's file names for a dataset's splits: test-00000-of-00001.parquet (any split name, e.g. cais/mmlu's
# auxiliary_train; older uploads add a hash: test-00000-of-00001-f0e719df791966ff.parquet), or validation.jsonl (the
# usual names only)
_SPLIT_FILE = re.compile(r"^(?:(\w+)-\d+-of-\d+(?:-[0-9a-f]{6,})?|(train|validation|val|dev|test))\.[a-z]+$",
                         re.IGNORECASE)
SPLIT_PREFERENCE = ("test", "validation", "val", "dev", "train")  # the first whose answers are published
SPLIT_FOLDERS = frozenset(SPLIT_PREFERENCE) | {"auxiliary_train"}  # subfolders that are splits (MMLU's tarball)


def _read_split(folder: Path, files: list[Path], limit: int | None) -> EvalSet:
    """`_read_data_folder` of one split where the files are several splits in Hugging Face's naming (cais/mmlu's
    and MMMU's dev, validation and test files side by side): the test split, else the first in SPLIT_PREFERENCE
    that has usable rows (MMMU publishes its test split without answers), named in the format."""
    splits: dict[str, list[Path]] = {}
    for file in files:
        splits.setdefault(_split_of(file, folder), []).append(file)
    if len(splits) < 2 or "" in splits:
        return _read_data_folder(folder, files, limit)
    return _read_one_split(folder, splits, limit)


def _split_of(file: Path, folder: Path) -> str:
    """The split `file` holds as Hugging Face names it: by its name (above), or by its folder below `folder` (<config>/
    <split>/0000.parquet, the hub's converted Parquet; not `folder` itself, the one picked); '' where neither says.
    Either unread, train rows were scored with the test rows (format tester)."""
    named = _SPLIT_FILE.match(file.name)
    if named:
        return (named.group(1) or named.group(2)).lower()
    return file.parent.name.lower() if file.parent != folder and file.parent.name.lower() in SPLIT_FOLDERS else ""


def _read_one_split(folder: Path, splits: dict[str, list[Path]], limit: int | None) -> EvalSet:
    """The files of one of `splits` (split name -> its files) read as the eval set, chosen as `_read_split` says."""
    tried = []
    order = lambda s: (SPLIT_PREFERENCE.index(s) if s in SPLIT_PREFERENCE else len(SPLIT_PREFERENCE), s)  # noqa: E731
    for split in sorted(splits, key=order):
        try:
            result = _read_data_folder(folder, splits[split], limit)
        except InputError as exc:
            tried.append(f"{split}: {exc}")
            continue
        if result.items:
            others = ", ".join(s for s in sorted(splits) if s != split)
            result.format += (f"; the {split} split (the folder also holds {others}: point at one file, or a folder "
                              "of one split, to choose)" if others else f"; its {split} split")
            return result
        tried.append(f"{split}: " + "; ".join(str(p) for p in result.problems[:2]))
    raise InputError(f"No split in '{folder}' has usable questions: " + " | ".join(tried[:3]))


def _read_data_folder(folder: Path, files: list[Path], limit: int | None) -> EvalSet:
    """Every eval-set file of a folder (sorted), all in one layout: e.g. MMLU's one CSV per subject, or MMMU's
    subject subfolders of Parquet files. When the files lie in several subfolders, each subfolder's name is the
    subject of the rows in it that name none ("Art_Theory" -> "Art Theory")."""
    result: EvalSet | None = None
    first: tuple[str, Layout] | None = None    # the first usable file and its layout: the others must match it
    skipped: list[EvalProblem] = []
    checked: _Checked = {}
    by_subfolder = len({file.parent for file in files}) > 1
    for file in files:
        name = file.relative_to(folder).as_posix()
        try:
            rows = _load_rows(file, name)
            layout = _detect(rows, name)
        except InputError as exc:
            (skipped if result is None else result.problems).append(EvalProblem(name, None, str(exc)))
            continue
        if result is None:
            result = EvalSet(str(folder), f"{layout.name} {rows.container}", CAPTION if layout.captions else CHOICE)
            result.problems, first = skipped, (name, layout)
        elif first and layout is not first[1]:
            raise InputError(f"'{folder}' mixes layouts: {first[0]} is {result.format}, {name} is "
                             f"{layout.name} {rows.container}; keep one layout per folder, or point at one file.")
        subject = file.parent.name.replace("_", " ").strip() if by_subfolder else ""
        _convert(rows, layout, name, file.parent, result, limit, checked, subject)
    if result is None:
        raise InputError(f"No file in '{folder}' is a usable eval set: " + " ".join(p.message for p in skipped[:3]))
    if len(files) > 1:
        result.format += f", {len(files)} files"
    return result


def _read_caption_folder(folder: Path, files: list[Path], limit: int | None) -> EvalSet:
    """Images with same-name .txt or .caption captions (the kohya / TagGUI convention; a .txt wins where both are, as
    in Fine-tune, which read the .caption files this refused: format tester), `caption_references` of each."""
    result = EvalSet(str(folder), "caption folder", CAPTION)
    named = sorted((p for p in files if p.suffix.lower() in CAPTION_SUFFIXES), key=lambda p: p.suffix.lower() == ".txt")
    texts = {p.with_suffix(""): p for p in named}

    def name(file: Path) -> str:
        return file.relative_to(folder).as_posix()

    images: dict[Path, Path] = {}
    for image in (p for p in files if p.suffix.lower() in _image_suffixes()):
        if image.with_suffix("") in images:
            caption = texts[image.with_suffix("")].name if image.with_suffix("") in texts else f"{image.stem}.txt"
            result.problems.append(EvalProblem(name(image), None, f"shares its caption file {caption} with "
                                               f"{images[image.with_suffix('')].name}; rename one of them"))
        else:
            images[image.with_suffix("")] = image
    for stem, text in texts.items():
        if stem not in images:
            result.problems.append(EvalProblem(name(text), None, "caption without an image of the same name"))
    checked: _Checked = {}
    for stem, image in sorted(images.items(), key=lambda pair: pair[1]):
        if limit is not None and len(result.items) >= limit:
            break
        try:
            if stem not in texts:
                raise RowProblem(f"no caption file {stem.name}.txt (or {stem.name}.caption)")
            references = caption_references(_caption_text(texts[stem]))
            if not references:
                raise RowProblem(f"{texts[stem].name} is empty")
            path = _check_image(name(image), folder, checked)
        except RowProblem as problem:
            result.problems.append(EvalProblem(name(image), None, str(problem)))
            continue
        result.items.append(EvalItem(name(image), CAPTION_QUESTION, (path,), references=references))
    return result


REFERENCE_LINE = 200  # characters: a COCO caption is ~50; a paragraph of a detailed description is longer


def caption_references(text: str) -> tuple[str, ...]:
    """A caption file's references: each line where it holds several short ones (COCO-style sets give five a
    picture; kohya's trainer reads lines as alternatives), else the whole text (a detailed, multi-paragraph
    description is one reference)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and max(len(line) for line in lines) <= REFERENCE_LINE:
        return tuple(lines)
    return (text.strip(),) if text.strip() else ()


def _caption_text(file: Path) -> str:
    try:
        return file.read_bytes().decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise RowProblem(f"{file.name} is not UTF-8 text; save it as UTF-8") from None
