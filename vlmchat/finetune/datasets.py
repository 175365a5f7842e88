"""Fine-tuning datasets: which layout a folder or file holds, its rows read into samples, every row checked.

Layouts (DESIGN.md; formats.py turns one row of each into a conversation):
- a folder of images with same-name `.txt` captions (kohya / TagGUI): one caption turn per image;
- a Hugging Face `imagefolder`: images + `metadata.jsonl` or `metadata.csv` (`file_name` + a text
  column), detected before the `.txt` layout; images without a metadata row are not samples;
- LLaMA-Factory ShareGPT JSON/JSONL, LLaVA-Instruct JSON, OpenAI messages / vision fine-tuning JSONL
  (images as paths or base64 `data:` URLs), told apart row by row;
- vlmchat's own `caption --format jsonl|csv` output (`image`, `caption`).
A folder holding one dataset file (and no `.txt` captions) is read as that file.

`read_dataset(path)` returns a `DatasetReport`: the usable samples (processor-format messages + the
images their image parts stand for: file paths or `data:` URLs, both opened by `load_image`) and
every problem with its file and 1-based line.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..caption.io import CAPTION_SUFFIXES
from ..errors import InputError, Problem
from ..files import finding_by_name, found_note, not_utf8, searched_from
from ..images import decode_data_url, is_data_url, readable_suffixes
from . import formats

DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
DEFAULT_CAPTION_PROMPT = "Describe the image."


@dataclass(frozen=True)
class Sample:
    """One training conversation: processor-format messages and the images its image parts stand for."""

    messages: tuple
    images: tuple[str, ...]  # file paths or data: URLs
    source: str  # "file:line", shown in previews and problem lists


def counted(number: int, noun: str) -> str:
    """'1 problem', '2 problems'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


@dataclass
class DatasetReport:
    """What a dataset path holds: its format, usable samples and problems."""

    path: str
    format: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def summary(self, limit: int = 20) -> str:
        """Several lines: counts, then the first `limit` problems."""
        head = f"{self.format}: {counted(len(self.samples), 'usable sample')}, {counted(len(self.problems), 'problem')}."
        lines = [head] + [f"- {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"- … and {len(self.problems) - limit} more")
        return "\n".join(lines)

    def require_usable(self, skip_invalid: bool = False) -> list[Sample]:
        """The samples to train on, or an InputError saying what to fix."""
        if not self.samples:
            raise InputError(f"No usable samples in {self.path}. " + self.summary(5).replace("\n", " "))
        if self.problems and not skip_invalid:
            first = "; ".join(str(p) for p in self.problems[:3])
            raise InputError(f"{counted(len(self.problems), 'row')} of the dataset "
                             f"{'has a problem' if len(self.problems) == 1 else 'have problems'} ({first}). Fix them, "
                             "or tick 'Skip rows with problems' (--skip-invalid) to train on the "
                             f"{counted(len(self.samples), 'good one')}.")
        return self.samples


def read_dataset(path: str | Path, caption_prompt: str = DEFAULT_CAPTION_PROMPT) -> DatasetReport:
    """Read a dataset folder or file in any accepted layout and check every row."""
    path = Path(path).expanduser()
    with finding_by_name() as found:
        if path.is_dir():
            report = _read_folder(path, caption_prompt)
        elif path.is_file():
            report = _read_file(path, caption_prompt)
        else:
            raise InputError(f"'{path}' does not exist; give a folder of images (with .txt captions or a "
                             "metadata.jsonl), or a .json/.jsonl/.csv dataset file.")
    # said, not silent: the user may want to fix the paths (and another tool will not find them)
    report.format += found_note(found, "the dataset's folder")
    return _check_images(report)


def _read_folder(folder: Path, prompt: str) -> DatasetReport:
    metadata = _metadata_file(folder)
    if metadata is not None:
        report = _read_file(metadata, prompt)
        others = sorted(p.name for p in folder.iterdir() if p.is_dir() and p != metadata.parent
                        and not p.name.startswith(".")) if metadata.parent != folder else []
        if others:  # imagefolder's splits: train/, test/, … (Evaluate reads the test split of the same folder)
            report.format += f"; the {metadata.parent.name} split (the folder also holds {', '.join(others)})"
        return report
    top = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    pictures_or_tables = [p for p in top if p.suffix.lower() in readable_suffixes() | {*CAPTION_SUFFIXES, *DATA_SUFFIXES}]
    # a dataset as Hugging Face publishes it: data/train-00000-of-00002.parquet, …, given by its folder or its data/
    shards = _parquet_shards(folder) if all(SHARD.fullmatch(p.name) for p in pictures_or_tables) else []
    if shards and all(p.suffix.lower() == ".parquet" for p in _nested_tables(folder)):  # else several dataset files
        return _merged(folder, [_read_file(shard, prompt) for shard in shards])
    if any(p.suffix == ".arrow" for p in top) or (folder / "dataset_dict.json").is_file():
        split = "['train']" if (folder / "dataset_dict.json").is_file() else ""
        raise InputError(f"'{folder.name}' is a `datasets` save_to_disk folder (.arrow files), which vlmchat does not "
                         f"read; save it as Parquet: datasets.load_from_disk(FOLDER){split}"
                         ".to_parquet('train.parquet'), and give that file.")
    # LLaMA-Factory's dataset_dir keeps dataset_info.json (its index of the datasets; `file_name` relative to it,
    # possibly in a subfolder): the one dataset it registers with images is read, as that index describes it
    registered = _registered(folder)
    tables = sorted(p for p in top if p.suffix.lower() in DATA_SUFFIXES and p.name != "dataset_info.json")
    pictured = [name for name, entry in registered.items() if "images" in (entry.get("columns") or {})]
    if registered and (pictured or not [p for p in tables if p.name not in registered]):
        chosen = pictured or list(registered)  # LLaMA-Factory's vision datasets, beside text-only ones (identity)
        if len(chosen) > 1:
            raise InputError(f"'{folder.name}/dataset_info.json' registers several datasets"
                             f"{' with images' if pictured else ''} ({', '.join(chosen)}); give the file of the one "
                             "to train on as the dataset path.")
        report = _read_registered(folder / chosen[0], prompt)
        if len(registered) > 1:
            report.format += f" — {chosen[0]}, the dataset dataset_info.json registers with images"
        return report
    if tables and not any(p.suffix.lower() in CAPTION_SUFFIXES and p.name not in registered for p in top):
        if len(tables) > 1:
            raise InputError(f"'{folder.name}' holds several dataset files ({', '.join(p.name for p in tables)}); "
                             "give the one to train on as the dataset path, or upload a .zip holding only it "
                             "and its pictures.")
        return _read_file(tables[0], prompt)
    report = _read_caption_folder(folder, prompt)
    if not report.samples:  # LLaVA's layout: its JSON in a folder beside its image folder (json/ and coco/train2017/)
        nested = _nested_tables(folder)
        if len(nested) == 1:
            with searched_from(folder):
                found = _read_file(nested[0], prompt)
            found.format += f" ({nested[0].relative_to(folder)}, the one dataset file in {folder.name})"
            return found
        if nested:
            raise InputError(f"'{folder.name}' holds no dataset file at its top, and several below it "
                             f"({', '.join(str(p.relative_to(folder)) for p in nested[:5])}); give the one to train "
                             "on as the dataset path.")
    if not report.samples and not report.problems:
        missing = [name for name in _registered_files(folder) if not (folder / name).exists()]
        if missing:
            raise InputError(f"'{folder.name}/dataset_info.json' registers {', '.join(missing)}, which "
                             f"{'is' if len(missing) == 1 else 'are'} not in {folder}; put the dataset file there, or "
                             "fix file_name in dataset_info.json.")
        raise InputError(f"'{folder}' holds no images and no dataset file. Accepted layouts: "
                         + formats.accepted_layouts())
    return report


def _nested_tables(folder: Path) -> list[Path]:
    """Dataset files below the folder's top (at most three levels down): JSON, JSONL, Parquet and imagefolder's
    metadata.csv, not index files. Another .csv is not taken for one: a tagger's tags.csv lies in picture folders."""
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        kind = path.suffix.lower() in (".json", ".jsonl", ".parquet") or path.name.lower() == "metadata.csv"
        if (1 < len(parts) <= 4 and kind and path.is_file()
                and not any(part.startswith(".") for part in parts) and path.name != "dataset_info.json"):
            found.append(path)
    return found


def _registered_files(folder: Path) -> dict[str, dict]:
    """file_name -> entry of every local dataset LLaMA-Factory's dataset_info.json in `folder` registers (its index
    of a dataset_dir; hub-only entries left out), there or not; {} without one."""
    try:
        index = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8-sig"))
        return {entry["file_name"]: entry for entry in index.values() if isinstance(entry, dict)
                and isinstance(entry.get("file_name"), str)}
    except (OSError, ValueError, AttributeError):
        return {}


def _registered(folder: Path) -> dict[str, dict]:
    """`_registered_files` that are there."""
    return {name: entry for name, entry in _registered_files(folder).items() if (folder / name).exists()}


def _registration(path: Path) -> tuple[dict, Path] | None:
    """(entry, dataset_dir) of the dataset_info.json in the file's folder or the two above it that registers it
    (its `file_name`, or a folder holding it), or None."""
    resolved = path.resolve()
    for folder in list(path.parents)[:3]:
        for name, entry in _registered(folder).items():
            target = (folder / name).resolve()
            if target == resolved or (target.is_dir() and target in resolved.parents):
                return entry, folder
    return None


def _read_registered(target: Path, prompt: str) -> DatasetReport:
    """A dataset dataset_info.json registers: its file, or every data file of its folder (LLaMA-Factory allows
    both)."""
    if target.is_file():
        return _read_file(target, prompt)
    files = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise InputError(f"'{target}' (registered in dataset_info.json) holds no .json, .jsonl, .csv or .parquet "
                         "file.")
    return _merged(target, [_read_file(file, prompt) for file in files])


SHARD = re.compile(r".+-\d{5}-of-\d{5}\.parquet", re.IGNORECASE)  # a split's shard as the Hub names it


def _parquet_shards(folder: Path) -> list[Path]:
    """The Parquet files of a Hugging Face dataset folder (its data/ or split folders): the train split's shards,
    else every Parquet file when no file names a train split."""
    found = sorted(p for p in folder.rglob("*.parquet") if not any(part.startswith(".") for part in
                                                                   p.relative_to(folder).parts))
    train = [p for p in found if p.name.startswith("train") or p.parent.name == "train"]
    return train or found


def _formats(names: list[str]) -> str:
    """The formats of several files, each named once: "Hugging Face imagefolder (2 files: train-00000-of-00002.parquet
    … train-00001-of-00002.parquet)" for a dataset's shards, not the same format once per shard."""
    files: dict[str, list[str]] = {}
    for name in names:
        kind, _, file = name.partition(" (")
        files.setdefault(kind, []).append(file[:-1] if file.endswith(")") else "")
    parts = []
    for kind, named in files.items():
        named = list(dict.fromkeys(file for file in named if file))
        shown = named[0] if len(named) == 1 else f"{len(named)} files: {named[0]} … {named[-1]}" if named else ""
        parts.append(f"{kind} ({shown})" if shown else kind)
    return " + ".join(parts)


def _merged(folder: Path, reports: list[DatasetReport]) -> DatasetReport:
    merged = DatasetReport(str(folder), _formats([r.format for r in reports]))
    for report in reports:
        merged.samples += report.samples
        merged.problems += report.problems
    return merged


def _metadata_file(folder: Path) -> Path | None:
    """The imagefolder metadata of `folder` (or of its train/ split when the folder holds only splits)."""
    places = [folder]
    if not any(p.suffix.lower() in readable_suffixes() | set(CAPTION_SUFFIXES) for p in folder.iterdir()):
        places.append(folder / "train")
    for place in places:
        found = [place / name for name in METADATA_FILES if (place / name).is_file()]
        if len(found) > 1:
            raise InputError(f"'{place}' holds both metadata.jsonl and metadata.csv; keep the one to train on.")
        if found:
            return found[0]
        if (place / "metadata.parquet").is_file():
            raise InputError(f"'{place / 'metadata.parquet'}' is Parquet, which vlmchat does not read; save it as "
                             "metadata.jsonl (pandas: read_parquet(...).to_json('metadata.jsonl', orient='records', "
                             "lines=True)) or metadata.csv.")
    return None


def _read_file(path: Path, prompt: str) -> DatasetReport:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, rows = _csv_rows(path)
        if not rows:
            raise InputError(_empty(path, "it has a header but no rows" if header else "it has no rows"))
        registration = _registration(path)  # LLaMA-Factory reads .csv datasets too (an images cell: one path)
        if registration is not None:
            return _read_llamafactory(path, rows, prompt, *registration)
        if formats.image_columns(header):
            return _read_metadata(path, rows, prompt)
        if {"image", "caption"} <= set(header):
            return _read_rows(path, rows, prompt, f"{formats.CAPTIONS} CSV")
        raise InputError(f"{path.name} has the columns {', '.join(header)}, which are no layout vlmchat reads; "
                         f"the CSV layouts are {formats.accepted_layouts('.csv')}.")
    if suffix == ".zip":  # an upload or `finetune --data` is unpacked (a zip holding only a zip, one level further)
        raise InputError(f"'{path.name}' is a zip where a folder or a dataset file is read; unpack it and give its "
                         "folder.")
    if suffix not in (".json", ".jsonl", ".parquet"):
        raise InputError(f"'{path.name}' is neither a folder nor a .json/.jsonl/.csv/.parquet file; see README "
                         "(Fine-tune) for the accepted dataset formats.")
    rows = _parquet_rows(path) if suffix == ".parquet" else _json_rows(path)
    if not rows:
        raise InputError(_empty(path, "it holds no rows"))
    registration = _registration(path)
    if registration is not None:
        return _read_llamafactory(path, rows, prompt, *registration)
    first = next((row for _, row in rows if isinstance(row, dict)), {})
    if {"instruction", "output"} <= set(first) and not formats.row_layout(first):  # LLaMA-Factory's default columns
        return _read_llamafactory(path, rows, prompt, {}, path.parent)
    valid = [row for _, row in rows if not isinstance(row, Exception)]
    kinds = [formats.row_layout(row) for row in valid]
    if valid and not any(kinds):
        keys = ", ".join(valid[0]) if isinstance(valid[0], dict) else type(valid[0]).__name__
        raise InputError(f"{path.name} is in no layout vlmchat reads (its first row has: {keys}). Accepted: "
                         + formats.accepted_layouts(suffix))
    if next((k for k in kinds if k), None) == formats.IMAGEFOLDER:
        return _read_metadata(path, rows, prompt)
    return _read_rows(path, rows, prompt, f"{formats.CAPTIONS} JSONL")


def _read_llamafactory(path: Path, rows: list, prompt: str, entry: dict, dataset_dir: Path) -> DatasetReport:
    """Rows of a dataset LLaMA-Factory's dataset_info.json registers, read as that entry says: its columns and tags,
    ShareGPT or Alpaca formatting, images relative to the dataset_dir (LLaMA-Factory's media_dir default)."""
    if entry.get("ranking"):
        raise InputError(f"{path.name} is registered in dataset_info.json as a preference dataset (ranking: chosen "
                         "and rejected answers), which LoRA fine-tuning does not use; give a dataset of answers.")
    rows = [(line, formats.llamafactory_row(row, entry)) for line, row in rows]
    report = _read_rows(path, rows, prompt, f"{formats.CAPTIONS} JSONL", base=dataset_dir)
    if str(entry.get("formatting", "alpaca")).lower() != "sharegpt" and report.samples:
        report.format = formats.ALPACA
    return report


def _empty(path: Path, detail: str) -> str:
    return (f"{path.name} is empty: {detail}. Each row is one training example, in one of these layouts: "
            + formats.accepted_layouts(path.suffix.lower()))


def _read_rows(path: Path, rows: list, prompt: str, caption_format: str, base: Path | None = None) -> DatasetReport:
    """Conversation rows (ShareGPT, LLaVA, OpenAI) and caption rows, each parsed on its own; images relative to
    `base` (default: the file's folder)."""
    base = base or path.parent
    report = DatasetReport(str(path), "")
    kinds, tried = set(), set()  # the layouts of the usable rows; of every row (named when none is usable)
    for line, row in rows:
        try:
            if isinstance(row, Exception):
                raise InputError(f"not valid JSON ({row})")
            layout = formats.row_layout(row)
            tried.add(formats.conversation_kind(row) if layout == "conversation" else caption_format
                      if layout == formats.CAPTIONS else None)
            if layout == "conversation":
                messages, images, kind = formats.conversation_row(row, base)
            elif layout == formats.CAPTIONS:
                (messages, images), kind = formats.caption_row(row, base, prompt), caption_format
            else:
                raise InputError("not a training row: give it 'messages' (or 'conversations'), or 'image' and "
                                 "'caption'")
            report.samples.append(Sample(messages, images, _source(path.name, line)))
            kinds.add(kind)
        except InputError as exc:
            report.problems.append(_problem(path.name, line, str(exc)))
    kinds = kinds or tried - {None}
    named = sorted(kinds - {formats.TEXT_ONLY}) or sorted(kinds)
    report.format = " + ".join(named) or "JSON rows"
    return report


def _read_metadata(path: Path, rows: list, prompt: str) -> DatasetReport:
    """Hugging Face imagefolder metadata: each row's file_name answered by its caption column."""
    column = formats.text_column([row for _, row in rows if isinstance(row, dict)], path.name)
    report = DatasetReport(str(path.parent), f"{formats.IMAGEFOLDER} ({path.name})")
    name = path.name
    for line, row in rows:
        try:
            if not isinstance(row, dict):
                raise InputError(f"not valid JSON ({row})" if isinstance(row, Exception) else "not a JSON object")
            messages, images = formats.imagefolder_row(row, column, path.parent, prompt)
            report.samples.append(Sample(messages, images, _source(name, line)))
        except InputError as exc:
            report.problems.append(_problem(name, line, str(exc)))
    return report


def _source(file: str, where: int | str) -> str:
    """A row's place: "file:line", or "file: row 17 (id "x")" in a JSON list whose rows share lines (`_json_list`)."""
    return f"{file}:{where}" if isinstance(where, int) else f"{file}: {where}"


def _problem(file: str, where: int | str, message: str) -> Problem:
    return Problem(file, where, message) if isinstance(where, int) else Problem(_source(file, where), None, message)


def _read_caption_folder(folder: Path, prompt: str) -> DatasetReport:
    from ..evaluate.sets import caption_references

    report = DatasetReport(str(folder), formats.CAPTION_FOLDER)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in readable_suffixes()]
    named = [p for p in files if p.suffix.lower() in CAPTION_SUFFIXES]
    captions = {p.with_suffix(""): p for p in named}  # sorted: a.txt wins over a.caption where both are there
    unused = [p for p in named if captions[p.with_suffix("")] != p]
    stems = {image.with_suffix("") for image in images}
    several = 0
    for stem, caption in captions.items():
        if stem not in stems:
            report.problems.append(Problem(_rel(caption, folder), None, "caption without an image of the same name"))
    for image in images:  # a.jpg and a.png both take a.txt, as kohya's trainer pairs them
        stem = image.with_suffix("")
        if stem not in captions:
            report.problems.append(Problem(_rel(image, folder), None, f"no caption file {stem.name}.txt"
                                                                        f" (or {stem.name}.caption)"))
            continue
        data = captions[stem].read_bytes()
        try:
            text = data.decode("utf-8-sig")  # Notepad's UTF-8 starts with a BOM
        except UnicodeDecodeError as exc:
            report.problems.append(Problem(_rel(captions[stem], folder), exc.object[:exc.start].count(b"\n") + 1,
                                           not_utf8(exc.object, exc.start)))
            continue
        alternatives = caption_references(text)
        if len(alternatives) > 1:  # short lines are alternatives: kohya's trainer learns the first (Evaluate: each)
            text, several = alternatives[0], several + 1
        try:
            messages, paths = formats.caption_turns(str(image), text, prompt)
        except InputError as exc:
            report.problems.append(Problem(_rel(captions[stem], folder), 1, str(exc)))
            continue
        report.samples.append(Sample(messages, paths, _rel(image, folder)))
    if several:
        report.format += (f" ({counted(several, 'caption file')} with one short caption a line: the first line is "
                          "learned, as kohya's trainer does; Evaluate takes each line as a reference)")
    if unused:  # kohya's trainer reads .caption by default, TagGUI writes .txt: which one trains is not obvious
        used = captions[unused[0].with_suffix("")]
        report.format += (f" ({counted(len(unused), 'picture')} with both a .txt and a .caption file, such as "
                          f"{_rel(used, folder)}: the {used.suffix} is used, {unused[0].suffix} left out)")
    if images and not captions:  # pictures only: the Caption tab makes this layout of them
        report.format += (" (no picture has a caption yet: caption them first, `launch.py caption FOLDER --format "
                          "txt` or the Caption tab with format txt, which writes a .txt beside each picture (in the "
                          "app: a zip of them to download); edit the captions to what the adapter should say, then "
                          "train on that folder or zip)")
    repeats = sorted({part for image in images for part in image.relative_to(folder).parts[:-1]
                      if re.fullmatch(r"\d+_.+", part)})
    if repeats:  # kohya's trainer repeats such a folder N times an epoch; this one counts every picture once
        shown = ", ".join(repeats[:3]) + (", …" if len(repeats) > 3 else "")
        report.format += (f" (kohya repeat folders {shown}: their counts are not applied; every picture counts once "
                          "and the preset sets the steps)")
    return report


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


_TRAILING_COMMA = re.compile(r'("(?:[^"\\]|\\.)*")|,(\s*[\]}])')


def _parquet_rows(path: Path) -> list[tuple[int, object]]:
    """(row number, row) of a Parquet file as `datasets` writes it; each image it holds as bytes (the Image feature's
    {"bytes", "path"}) is written to a file once and named by its path, as an eval set's are."""
    from ..evaluate.set_formats import Embedded, RowProblem, plain
    from ..evaluate.sets import embedded_file, parquet_records

    checked: dict = {}

    def files(value, label: str):
        value = plain(value)
        if isinstance(value, dict) and set(value) <= {"bytes", "path"} and "bytes" in value:
            data = plain(value.get("bytes"))
            if not isinstance(data, (bytes, bytearray)) or not data:
                return value.get("path")  # not embedded: the file it names
            try:
                return embedded_file(Embedded(label, bytes(data), str(value.get("path") or "")), checked)
            except RowProblem:  # kept as data, so the image check names the row and says it does not decode
                return "data:application/octet-stream;base64," + base64.b64encode(data).decode()
        if isinstance(value, dict):
            return {key: files(item, label) for key, item in value.items()}
        if isinstance(value, list):
            return [files(item, label) for item in value]
        return value

    def row(record: dict, line: int):
        found = files(record, f"{path.name}:{line}")
        if "image" in found and not {"file_name", "caption", "messages", "conversations"} & set(found):
            found["file_name"] = found.pop("image")  # an imagefolder on the Hub: the image column and its captions
        return found

    return [(line, row(record, line)) for line, record in enumerate(parquet_records(path, path.name), 1)]


def _json_rows(path: Path) -> list[tuple[int, object]]:
    """(line, row) pairs of a JSON list, a single JSON object or JSON Lines; a bad JSONL line is its exception."""
    text = path.read_text(encoding="utf-8-sig")
    start = text.lstrip()
    if start.startswith("["):
        try:
            return _json_list(text)
        except ValueError:
            pass
        try:  # LLaVA's own example has a trailing comma; JSON forbids it, people copy it
            return _json_list(_TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), text))
        except ValueError as exc:
            raise InputError(f"{path.name} is not valid JSON ({exc}); fix the line it names.") from None
    if path.suffix.lower() == ".json" and start.startswith("{"):
        try:
            return [(text[:len(text) - len(start)].count("\n") + 1, json.loads(text))]
        except ValueError:
            pass  # not one object: JSON Lines in a .json file
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except ValueError as exc:
                rows.append((number, exc))
    return rows


def _json_list(text: str) -> list[tuple[int | str, object]]:
    """The items of a top-level JSON list, each with the line it starts on; where items share a line (a minified
    list), each with its place in the list instead: 'row 17 (id "xyz")'."""
    decoder, rows = json.JSONDecoder(), []
    skip = re.compile(r"\s*")
    pos = skip.match(text, text.index("[") + 1).end()
    line, counted = 1, 0
    while pos < len(text) and text[pos] != "]":
        item, end = decoder.raw_decode(text, pos)
        line, counted = line + text.count("\n", counted, pos), pos
        rows.append((line, item))
        pos = skip.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = skip.match(text, pos + 1).end()
        elif pos >= len(text) or text[pos] != "]":
            raise json.JSONDecodeError("expected ',' or ']' after an item", text, pos)
    if pos >= len(text) or text[pos + 1:].strip():
        raise json.JSONDecodeError("the list does not end with ']' alone", text, min(pos, len(text) - 1))
    if len({line for line, _ in rows}) == len(rows):
        return rows
    return [(f"row {number}{_row_id(item)}", item) for number, (_, item) in enumerate(rows, 1)]


def _row_id(row) -> str:
    """' (id "xyz")' for a row with an id (LLaVA's), else ''."""
    name = row.get("id") if isinstance(row, dict) else None
    usable = isinstance(name, (str, int)) and not isinstance(name, bool)
    return f" (id {json.dumps(name, ensure_ascii=False)})" if usable else ""


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and (line, row) pairs of a CSV file; line is where a (possibly multi-line) record starts."""
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    header, rows, line = [], [], 0
    try:
        for record in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if not header:
                header = [name.strip() for name in record]
                continue
            cells = record + [""] * (len(header) - len(record))
            rows.append((start, {name: cell for name, cell in zip(header, cells) if name}))
    except csv.Error as exc:
        raise InputError(f"{path.name} is not a readable CSV file (line {reader.line_num}: {exc}).") from None
    return header, rows


def _check_images(report: DatasetReport) -> DatasetReport:
    """Move samples whose images are missing or do not decode into the problem list."""
    good = []
    for sample in report.samples:
        problem = next(filter(None, (_image_problem(image, index) for index, image in enumerate(sample.images, 1))),
                       "")
        if not problem:
            good.append(sample)
            continue
        file, _, line = sample.source.rpartition(":")
        report.problems.append(Problem(file, int(line), problem) if file and line.isdigit()
                               else Problem(sample.source, None, problem))
    report.samples = good
    # file order, as they are fixed (row 9 before row 10 where rows are named by number)
    natural = lambda text: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]  # noqa: E731
    report.problems.sort(key=lambda problem: (natural(problem.file), problem.line or 0))
    return report


def _image_problem(image: str, index: int) -> str:
    """Why the sample's `index`-th image cannot be used ('' when it can)."""
    if is_data_url(image):
        return _decoded(image, f"image {index} (data: URL)")[0]
    return _file_decoded(image)[0]


def picture_size(path: str) -> tuple[int, int] | None:
    """(width, height) of the picture file at `path` as the run loads it; None when it does not load."""
    return _file_decoded(path)[1]


def _file_decoded(path: str) -> tuple[str, tuple[int, int] | None]:
    """`_decoded` of a file, once while it stays the same (the plan reads the dataset again whenever a control of
    the Fine-tune tab changes, and asks for the pictures' sizes)."""
    try:
        stat = Path(path).stat()
    except OSError:
        stat = None
    return _file_decoded_as(path, stat.st_mtime_ns if stat else 0, stat.st_size if stat else -1)


@functools.lru_cache(maxsize=100_000)
def _file_decoded_as(path: str, mtime_ns: int, size: int) -> tuple[str, tuple[int, int] | None]:
    return _decoded(path, None)


def _decoded(image: str, name: str | None) -> tuple[str, tuple[int, int] | None]:
    """(why the image cannot be used or '', its size) through the one loader every entry point uses."""
    from ..images import load_image

    try:
        return "", load_image(image, name=name).size
    except InputError as exc:
        return str(exc), None


def split(samples: list[Sample], train_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A seeded train/validation split; at least one training sample, no validation below 2 samples."""
    if len(samples) < 2 or train_fraction >= 1.0:
        return list(samples), []
    order = list(samples)
    random.Random(seed).shuffle(order)
    cut = min(len(order) - 1, max(1, round(len(order) * train_fraction)))
    return order[:cut], order[cut:]


def dataset_hash(samples: list[Sample]) -> str:
    """sha256 over every sample's messages and image bytes: the same data gives the same hash."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(json.dumps(sample.messages, sort_keys=True, ensure_ascii=False).encode())
        for image in sample.images:
            digest.update(decode_data_url(image) if is_data_url(image) else Path(image).read_bytes())
    return digest.hexdigest()


def image_label(image: str) -> str:
    """How an image is shown in a preview: its path, or 'data: URL image (png, 12.3 KB)' without the bytes."""
    if not is_data_url(image):
        return image
    header, _, payload = image.partition(",")
    kind = header[5:].split(";")[0].rpartition("/")[2] or "unknown type"
    size = len(payload) * 3 / 4 if header.lower().endswith(";base64") else len(payload)
    return f"data: URL image ({kind}, {size / 1024:.1f} KB)"  # no '/': the preview shows Path(label).name


def preview_rows(report: DatasetReport, count: int = 5) -> list[dict]:
    """The first `count` samples as {source, images, prompt, answer} for a preview table."""
    rows = []
    for sample in report.samples[:count]:
        text = lambda role: " / ".join(  # noqa: E731
            p["text"] + ("" if role == "user" or formats.learned(m) else " (weight 0: not learned)")
            for m in sample.messages if m["role"] == role for p in m["content"] if p.get("text"))
        rows.append({"source": sample.source, "images": [image_label(i) for i in sample.images],
                     "prompt": text("user"), "answer": text("assistant")})
    return rows
