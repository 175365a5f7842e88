"""Fine-tuning datasets: the three accepted formats, read into samples, checked row by row.

Formats (DESIGN.md):
- a folder of images with same-name `.txt` captions (kohya / TagGUI): one caption turn per image;
- LLaMA-Factory ShareGPT multimodal JSON/JSONL: `messages` (or `conversations`) whose string
  contents carry `<image>` placeholders, and `images`, paths relative to the file;
- OpenAI-style `messages` JSONL whose contents are lists of `{"type": "text"|"image"|"image_url"}` parts.

`read_dataset(path)` returns a `DatasetReport`: the usable samples (in the processor's message
format: `{"type": "image"}` parts + a list of image paths) and every problem with its file and line.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PLACEHOLDER = "<image>"
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}
DEFAULT_CAPTION_PROMPT = "Describe the image."


@dataclass(frozen=True)
class Sample:
    """One training conversation: processor-format messages and the images its image parts stand for."""

    messages: tuple
    images: tuple[str, ...]
    source: str  # "file:line", shown in previews and problem lists


@dataclass(frozen=True)
class Problem:
    """Why one row or file cannot be used."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}{f':{self.line}' if self.line else ''}: {self.message}"


@dataclass
class DatasetReport:
    """What a dataset path holds: its format, usable samples and problems."""

    path: str
    format: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def summary(self, limit: int = 20) -> str:
        """Several lines: counts, then the first `limit` problems."""
        head = f"{self.format}: {len(self.samples)} usable samples, {len(self.problems)} problems."
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
            raise InputError(f"{len(self.problems)} rows of the dataset have problems ({first}). Fix them, or "
                             "choose 'skip invalid rows' (--skip-invalid) to train on the "
                             f"{len(self.samples)} good ones.")
        return self.samples


def read_dataset(path: str | Path, caption_prompt: str = DEFAULT_CAPTION_PROMPT, check_images: bool = True,
                 ) -> DatasetReport:
    """Read a dataset folder or file in any accepted format and check every row."""
    path = Path(path).expanduser()
    if path.is_dir():
        annotations = sorted(p for p in path.iterdir() if p.suffix.lower() in (".json", ".jsonl"))
        if len(annotations) == 1 and not any(p.suffix.lower() == ".txt" for p in path.iterdir()):
            path = annotations[0]
        else:
            report = _read_caption_folder(path, caption_prompt)
            return _check_images(report) if check_images else report
    if not path.is_file():
        raise InputError(f"'{path}' does not exist; give a folder of images with .txt captions, or a .json/.jsonl file.")
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise InputError(f"'{path.name}' is neither a folder nor a .json/.jsonl file; see README (Fine-tune) "
                         "for the accepted dataset formats.")
    report = _read_json_rows(path)
    return _check_images(report) if check_images else report


def _read_caption_folder(folder: Path, prompt: str) -> DatasetReport:
    report = DatasetReport(str(folder), "image folder with .txt captions")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = {p.with_suffix(""): p for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
    captions = {p.with_suffix(""): p for p in files if p.suffix.lower() == ".txt"}
    for stem, caption in captions.items():
        if stem not in images:
            report.problems.append(Problem(_rel(caption, folder), None, "caption without an image of the same name"))
    for stem, image in images.items():
        if stem not in captions:
            report.problems.append(Problem(_rel(image, folder), None, f"no caption file {stem.name}.txt"))
            continue
        text = captions[stem].read_text(encoding="utf-8", errors="replace").strip()
        if not text:
            report.problems.append(Problem(_rel(captions[stem], folder), 1, "empty caption"))
            continue
        user = [{"type": "image"}] + ([{"type": "text", "text": prompt}] if prompt else [])
        messages = ({"role": "user", "content": user},
                    {"role": "assistant", "content": [{"type": "text", "text": text}]})
        report.samples.append(Sample(messages, (str(image),), _rel(image, folder)))
    return report


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _rows(path: Path):
    """(line, row) pairs of a JSONL file or a JSON list (line = item number there), or InputError."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path.name} is not valid JSON ({exc}); fix the line it names.") from None
        return list(enumerate(data, start=1)), "item"
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except ValueError as exc:
                rows.append((number, exc))
    return rows, "line"


def _read_json_rows(path: Path) -> DatasetReport:
    rows, unit = _rows(path)
    report = DatasetReport(str(path), "")
    kinds = set()
    for number, row in rows:
        try:
            if isinstance(row, Exception):
                raise InputError(f"not valid JSON ({row})")
            sample, kind = _parse_row(row, path, f"{path.name}:{number}")
            kinds.add(kind)
            report.samples.append(sample)
        except InputError as exc:
            report.problems.append(Problem(path.name, number, str(exc)))
    report.format = " + ".join(sorted(kinds)) or "JSON rows"
    if unit == "item":
        report.format += " (line = item number)"
    return report


def _parse_row(row, path: Path, source: str) -> tuple[Sample, str]:
    if not isinstance(row, dict):
        raise InputError("a row must be a JSON object with 'messages'")
    turns = row.get("messages", row.get("conversations"))
    if not isinstance(turns, list) or not turns:
        raise InputError("no 'messages' (or 'conversations') list")
    if all(isinstance(_content(t), str) for t in turns):
        return _parse_sharegpt(row, turns, path, source), "ShareGPT (LLaMA-Factory)"
    return _parse_openai(turns, path, source), "OpenAI messages"


def _content(turn):
    return turn.get("content", turn.get("value")) if isinstance(turn, dict) else None


def _role(turn, index: int) -> str:
    role = ROLES.get(str(turn.get("role", turn.get("from", ""))).lower())
    if role is None:
        raise InputError(f"message {index + 1} has role {turn.get('role', turn.get('from'))!r}; "
                         "use user/assistant/system (or human/gpt)")
    return role


def _parse_sharegpt(row: dict, turns: list, path: Path, source: str) -> Sample:
    images = row.get("images", []) or []
    if isinstance(images, str):
        images = [images]
    placeholders = sum(_content(t).count(PLACEHOLDER) for t in turns)
    if placeholders != len(images):
        raise InputError(f"{placeholders} {PLACEHOLDER} placeholders but {len(images)} images; they must match")
    messages = []
    for index, turn in enumerate(turns):
        pieces = _content(turn).split(PLACEHOLDER)
        content = []
        for i, piece in enumerate(pieces):
            if i:
                content.append({"type": "image"})
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
        messages.append({"role": _role(turn, index), "content": content})
    _check_turns(messages)
    return Sample(tuple(messages), tuple(_image_path(p, path) for p in images), source)


def _parse_openai(turns: list, path: Path, source: str) -> Sample:
    messages, images = [], []
    for index, turn in enumerate(turns):
        raw = _content(turn)
        parts = [{"type": "text", "text": raw}] if isinstance(raw, str) else raw
        if not isinstance(parts, list):
            raise InputError(f"message {index + 1}: content must be a string or a list of parts")
        content = []
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if str(part.get("text", "")).strip():
                    content.append({"type": "text", "text": str(part["text"]).strip()})
            elif kind in ("image", "image_url"):
                images.append(_image_path(_image_reference(part), path))
                content.append({"type": "image"})
            else:
                raise InputError(f"message {index + 1}: unknown content part {kind!r}; use text, image or image_url")
        messages.append({"role": _role(turn, index), "content": content})
    _check_turns(messages)
    return Sample(tuple(messages), tuple(images), source)


def _image_reference(part: dict) -> str:
    value = part.get("image") or part.get("path") or part.get("url") or part.get("image_url")
    if isinstance(value, dict):
        value = value.get("url") or value.get("path")
    if not isinstance(value, str) or not value:
        raise InputError("an image part names no file; use {\"type\": \"image\", \"image\": \"path\"}")
    if value.startswith(("http://", "https://", "data:")):
        raise InputError("images must be local files (URLs and data: URIs are not fetched); save them beside the file")
    return value.removeprefix("file://")


def _image_path(reference: str, annotation: Path) -> str:
    path = Path(reference).expanduser()
    return str(path if path.is_absolute() else (annotation.parent / path))


def _check_turns(messages: list[dict]) -> None:
    """Roles alternate user/assistant (after an optional system message) and end with a non-empty answer."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not body:
        raise InputError("no user message")
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise InputError(f"roles must alternate user, assistant, …; message {index + 1} is {message['role']}")
        if expected == "assistant" and not any(p.get("text") for p in message["content"]):
            raise InputError(f"empty answer in message {index + 1}")
    if body[-1]["role"] != "assistant":
        raise InputError("the conversation must end with an assistant answer")


def _check_images(report: DatasetReport) -> DatasetReport:
    """Move samples whose images are missing or do not decode into the problem list."""
    from ..images import load_image

    good = []
    for sample in report.samples:
        try:
            for image in sample.images:
                load_image(image)
            good.append(sample)
        except InputError as exc:
            file, _, line = sample.source.rpartition(":")
            report.problems.append(Problem(file or sample.source, int(line) if line.isdigit() else None, str(exc)))
    report.samples = good
    return report


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
            digest.update(Path(image).read_bytes())
    return digest.hexdigest()


def preview_rows(report: DatasetReport, count: int = 5) -> list[dict]:
    """The first `count` samples as {source, images, prompt, answer} for a preview table."""
    rows = []
    for sample in report.samples[:count]:
        text = lambda role: " / ".join(  # noqa: E731
            p["text"] for m in sample.messages if m["role"] == role for p in m["content"] if p.get("text"))
        rows.append({"source": sample.source, "images": list(sample.images), "prompt": text("user"),
                     "answer": text("assistant")})
    return rows
