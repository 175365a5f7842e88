"""How each eval-set layout's rows become questions: detection (first match wins), one converter per layout.

A converter takes one row (a dict with lower-case keys, or the cells of a headerless CSV row) and the
file's name, and returns a `Draft` or raises `RowProblem` saying why the row cannot be used. Image
paths stay as the row gives them; `sets.py` resolves them against the file's folder and decodes them.
An image stored in the row itself (Hugging Face `datasets`' Image feature, which Parquet files such as
MMMU's hold as {"bytes": ..., "path": ...}) becomes an `Embedded`; `sets.py` writes it to a file.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CAPTION_QUESTION = "Describe the image."
OPTION_COLUMNS = "abcde"
PLACEHOLDER = re.compile(r"<image\s*(\d+)>")
BARE_PLACEHOLDER = re.compile(r"\s*<image>\s*")  # LLaVA's and LLaMA-Factory's, one per picture in order
IMAGE_COLUMN = re.compile(r"image_(\d+)")
MMLU_SPLIT_SUFFIX = re.compile(r"_(test|val|dev)$")
_MMMU_ID = re.compile(r"(?:dev|validation|test)_(.+)_\d+")
_STRING_LITERAL = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""", re.S)
_LIST_GAP = re.compile(r"\s*,?\s*")
_DRESSED_LETTER = re.compile(r"[(\[]?\s*([A-Za-z])\s*[)\].:]?")  # "(B)", "B.", "B)", "[B]"


class RowProblem(Exception):
    """One row cannot be used; the message says why."""


@dataclass(frozen=True)
class Embedded:
    """An image whose bytes the row holds (the `datasets` Image feature's {"bytes": ..., "path": ...})."""

    label: str                               # where the row holds it, for messages: "image_2", "image", "images 2"
    data: bytes = field(repr=False)
    name: str = ""                           # the file name the dataset gives it ("path"), if any


@dataclass(frozen=True)
class Draft:
    """A row read into the item's fields, image paths still as the row gives them (or the embedded images)."""

    question: str
    images: tuple[str | Embedded, ...] = ()
    options: tuple[str, ...] = ()
    answer: int | None = None
    references: tuple[str, ...] = ()
    subject: str = ""


@dataclass(frozen=True)
class Layout:
    """One accepted layout: its name (shown in EvalSet.format) and how one row becomes a Draft."""

    name: str
    captions: bool
    convert: Callable[[Any, str], Draft]


# ---------------------------------------------------------------- values


def plain(value: Any) -> Any:
    """numpy scalars and arrays (as Parquet rows hold them) as Python values."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) else value


def blank(value: Any) -> bool:
    """None, NaN, or a string of spaces: a cell with nothing in it."""
    value = plain(value)
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def text_of(value: Any) -> str:
    """A cell as stripped text ('' when blank)."""
    return "" if blank(value) else str(plain(value)).strip()


def shorten(value: Any, width: int = 40) -> str:
    """A value as short text for a message."""
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def parse_list(value: Any) -> list | None:
    """A list, or its string form: JSON, a Python literal, or numpy's "['a' 'b']"; None when it is none of them."""
    value = plain(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        parsed = json.loads(text)
        if isinstance(parsed, list):
            return parsed
    except ValueError:
        pass
    # String lists are split token by token: ast.literal_eval would join numpy's "['a' 'b']" into ['ab'].
    strings = _string_list(text[1:-1])
    if strings is not None:
        return strings
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return list(parsed) if isinstance(parsed, (list, tuple)) else None


def _string_list(inner: str) -> list[str] | None:
    literals = list(_STRING_LITERAL.finditer(inner))
    if not literals:
        return [] if not inner.strip() else None
    gaps = [inner[:literals[0].start()]] + [inner[a.end():b.start()] for a, b in zip(literals, literals[1:])]
    if gaps[0].strip() or not all(_LIST_GAP.fullmatch(gap) for gap in gaps[1:] + [inner[literals[-1].end():]]):
        return None
    try:
        return [ast.literal_eval(match.group()) for match in literals]
    except (ValueError, SyntaxError):
        return None


def answer_index(raw: Any, options: list[str], accept: tuple[str, ...] = ("letter", "text", "index")) -> int:
    """The index of the correct option from a letter ("B"), an option's exact text or a 0-based index."""
    raw = plain(raw)
    if blank(raw):
        raise RowProblem("no answer")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        if "index" in accept and float(raw).is_integer() and 0 <= int(raw) < len(options):
            return int(raw)
        raise RowProblem(f"answer {raw} is not among the options ({_listing(options)}; an index counts from 0)")
    given = str(raw).strip()
    if given == "?":
        raise RowProblem("the answer is hidden ('?': a test split published without its answers); use the "
                         "validation or dev split")
    meanings: dict[int, str] = {}
    if "text" in accept and given in options:
        meanings.setdefault(options.index(given), "the option's text")
    if "index" in accept and given.isdigit() and int(given) < len(options):
        meanings.setdefault(int(given), "an index from 0")
    if "letter" in accept and len(given) == 1 and given.upper() in LETTERS[:len(options)]:
        meanings.setdefault(LETTERS.index(given.upper()), "a letter")
    if not meanings:  # as people write them: "(B)", "B.", an option's text in another case
        meanings = _loose_meanings(given, options, accept)
    if len(meanings) == 1:
        index = next(iter(meanings))
        twins = [LETTERS[i] for i, option in enumerate(options) if option.strip() == options[index].strip()]
        if len(twins) > 1:
            raise RowProblem(f"the answer, '{shorten(options[index])}', is options {' and '.join(twins)}: the same "
                             "text twice cannot be scored apart; keep one of them")
        return index
    if not meanings and "letter" not in accept:
        raise RowProblem(f"answer '{shorten(given)}' is not among the options ({_listing(options)})")
    if not meanings:
        wanted = "a letter" if accept == ("letter",) else "a letter, the option's text or an index from 0"
        match = f"; '{shorten(given)}' is option {LETTERS[options.index(given)]}'s text" if given in options else ""
        raise RowProblem(f"answer '{shorten(given)}' is not among the options ({_listing(options)}): "
                         f"this layout wants {wanted}{match}")
    readings = " or ".join(f"{LETTERS[i]} (as {why})" for i, why in sorted(meanings.items()))
    raise RowProblem(f"answer '{given}' could mean {readings}; write the option's letter instead")


def _loose_meanings(given: str, options: list[str], accept: tuple[str, ...]) -> dict[int, str]:
    """A dressed-up letter ("(B)", "B.") or an option's text in another case or spacing, where only one fits."""
    dressed = _DRESSED_LETTER.fullmatch(given)
    if "letter" in accept and dressed and dressed.group(1).upper() in LETTERS[:len(options)]:
        return {LETTERS.index(dressed.group(1).upper()): "a letter"}
    fold = lambda text: " ".join(text.split()).casefold()  # noqa: E731
    folded = [i for i, option in enumerate(options) if fold(option) == fold(given)]
    return {folded[0]: "the option's text"} if "text" in accept and len(folded) == 1 else {}


def _listing(options: list[str]) -> str:
    return ", ".join(f"{LETTERS[i]}: '{shorten(option, 30)}'" for i, option in enumerate(options))


def _require_options(options: list[str]) -> list[str]:
    if len(options) < 2:
        raise RowProblem(f"fewer than 2 options ({len(options)} given)")
    if len(options) > len(LETTERS):
        raise RowProblem(f"{len(options)} options; at most {len(LETTERS)} can be lettered")
    return options


def _question(row: dict) -> str:
    question = text_of(row.get("question"))
    if not question:
        raise RowProblem("no question")
    return question


def image_value(value: Any, label: str) -> str | Embedded | None:
    """One image cell: a path, embedded bytes (`datasets`' {"bytes", "path"} or bare bytes), or None when blank."""
    value = plain(value)
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Embedded(label, bytes(value)) if len(value) else None
    if blank(value):
        return None
    if isinstance(value, dict) and set(value) <= {"bytes", "path"}:
        data, path = plain(value.get("bytes")), value.get("path")
        path = text_of(path) if isinstance(path, str) else ""
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data):
            return Embedded(label, bytes(data), path)
        if blank(data) or isinstance(data, (bytes, bytearray, memoryview)):
            return path or None  # no bytes: `datasets` keeps only the path of an image it did not embed
        raise RowProblem(f"{label} holds image data, not a file path, and its 'bytes' is {_kind(data)}, not binary "
                         "image bytes; save the images as files and give their paths (relative to this file), or "
                         "read the dataset's own Parquet files")
    raise RowProblem(f"{label} is {_kind(value)}, not a file path or an image; give the image's path (relative to "
                     "this file)")


def _kind(value: Any) -> str:
    name = type(value).__name__
    return "text" if isinstance(value, str) else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _images(row: dict, key: str) -> list[str | Embedded]:
    """A column's images: one path or embedded image, a list of them, a JSON-list string or a ';'-separated string."""
    value = plain(row.get(key))
    if blank(value):
        return []
    listed = parse_list(value)
    if listed is None and isinstance(value, str):
        listed = value.split(";")
    if listed is None:
        listed = [value]
        labels = [key]
    else:
        labels = [f"{key} {number}" for number in range(1, len(listed) + 1)]
    images = [image_value(item, label) for item, label in zip(listed, labels)]
    return [image for image in images if image is not None]


# ---------------------------------------------------------------- layouts


def _options(row: dict) -> list[str]:
    for key in ("options", "choices"):
        if not blank(row.get(key)):
            listed = parse_list(row[key])
            if listed is None:
                raise RowProblem(f"{key} is not a list: '{shorten(row[key])}'; write it as a JSON list like "
                                 '["red", "blue"]')
            return [text_of(option) for option in listed]
    columns = [text_of(row.get(letter)) for letter in OPTION_COLUMNS]
    while columns and not columns[-1]:
        columns.pop()
    if "" in columns:
        raise RowProblem(f"option {LETTERS[columns.index('')]} is empty but a later option is given")
    return columns


def _choice_row(row: dict, accept: tuple[str, ...], subject: str) -> Draft:
    question = _question(row)
    options = _require_options(_options(row))
    if "answer" not in row:  # a header's mistake, said as such (each row read "no answer")
        raise RowProblem(f"no 'answer' (the row has: {', '.join(map(str, row))}); give the right option as "
                         "'answer' (its letter, its text or its 0-based index)")
    answer = answer_index(row.get("answer"), options, accept)
    images = _images(row, "image") + _images(row, "images")
    return Draft(_placed(question, len(images)), tuple(images), tuple(options), answer, subject=subject)


def _placed(question: str, pictures: int) -> str:
    """The question without LLaVA's `<image>` placeholders (the pictures go before it) and with `<image n>` written
    "(image n)", as MMMU's; a placeholder without its picture is the row's problem. A question written
    "<image>\nWhat shape is this?" was sent as it was, and the demo's processor refused every row of the set."""
    bare = len(BARE_PLACEHOLDER.findall(question))
    if bare and bare != pictures:
        raise RowProblem(f"the question has {bare} <image> placeholder{'s' if bare != 1 else ''} but the row gives "
                         f"{pictures} picture{'s' if pictures != 1 else ''}; give one picture per <image>")
    beyond = [number for number in PLACEHOLDER.findall(question) if not 1 <= int(number) <= pictures]
    if beyond:
        raise RowProblem(f"placeholder <image {beyond[0]}> but the row gives {pictures} "
                         f"picture{'s' if pictures != 1 else ''} (image / images)")
    return _fill(BARE_PLACEHOLDER.sub(" ", question)).strip()


def vlmchat_row(row: dict, file_name: str) -> Draft:
    """vlmchat rows: question, options (list or A-E columns), answer as letter, text or index, image(s)."""
    return _choice_row(row, ("letter", "text", "index"), text_of(row.get("subject")))


def hf_mmlu_row(row: dict, file_name: str) -> Draft:
    """cais/mmlu rows: question, subject, choices, answer = index (ClassLabel A-D)."""
    return _choice_row(row, ("index", "letter"), text_of(row.get("subject")).replace("_", " "))


def mmlu_subject(file_name: str) -> str:
    """'abstract_algebra_test.csv' -> 'abstract algebra'."""
    stem = file_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return MMLU_SPLIT_SUFFIX.sub("", stem).replace("_", " ")


def mmlu_cells(cells: list[str], file_name: str) -> Draft:
    """MMLU's own CSV row (hendrycks/test): question, the options, the answer letter; no header. Picture files
    named in cells after the answer (question,A,B,C,D,answer,picture.png) go with the question."""
    cells, pictures = split_pictures(cells)
    if len(cells) < 3:
        raise RowProblem(f"{len(cells)} cells; an MMLU row is question,A,B,C,D,answer")
    question = cells[0].strip()
    if not question:
        raise RowProblem("no question")
    last = cells[-1].strip()
    if not (len(last) == 1 and last.upper() in LETTERS):  # "answer 'star' is not among the options" hid this
        raise RowProblem(f"its last cell '{shorten(last)}' is not an answer letter: an MMLU row is "
                         "question,A,B,C,D,answer (is the answer missing?)")
    options = _require_options([cell.strip() for cell in cells[1:-1]])
    return Draft(_placed(question, len(pictures)), pictures, tuple(options), answer_index(last, options, ("letter",)),
                 subject=mmlu_subject(file_name))


_PICTURE_FILE = re.compile(r"[^\n]+\.(?:png|jpe?g|gif|webp|bmp|tiff?)", re.IGNORECASE)


def split_pictures(cells: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """(the MMLU cells, the picture files named after them) of a headerless row."""
    end = len(cells)
    while end > 1 and (not cells[end - 1].strip() or _PICTURE_FILE.fullmatch(cells[end - 1].strip())):
        end -= 1
    return cells[:end], tuple(cell.strip() for cell in cells[end:] if cell.strip())


def mmmu_row(row: dict, file_name: str) -> Draft:
    """MMMU rows: <image n> placeholders in question and options, image_1..image_7 (paths or embedded images),
    options as a list or its string form ("['$6', '$7']", as MMMU's Parquet files hold them), answer letter."""
    if text_of(row.get("question_type")).lower() == "open":
        raise RowProblem("open question, not multiple choice")
    question = _question(row)
    if blank(row.get("options")):
        raise RowProblem("fewer than 2 options (0 given)")
    listed = parse_list(row["options"])
    if listed is None:
        raise RowProblem(f"options is not a list: '{shorten(row['options'])}'")
    options = _require_options([text_of(option) for option in listed])
    given = _image_columns(row)
    referred: list[int] = []
    for part in [question, *options]:
        for number in PLACEHOLDER.findall(part):
            if int(number) not in referred:
                referred.append(int(number))
    for number in referred:
        if number not in given:
            raise RowProblem(f"placeholder <image {number}> but no image_{number}")
    unused = sorted(set(given) - set(referred))
    if referred and unused:
        raise RowProblem(f"image_{unused[0]} is given but neither question nor options has <image {unused[0]}>")
    pictured = [option for option in options if not PLACEHOLDER.sub("", option).strip()]
    if pictured:  # scored as the text "(image 3)" the answer would be a coin flip
        raise RowProblem(f"its options are pictures ({', '.join(pictured[:4])}); options are scored as text, so "
                         "such a question cannot be asked this way")
    order = referred or sorted(given)
    question, options = _fill(question), [_fill(option) for option in options]
    answer = answer_index(row.get("answer"), options, ("letter",))
    return Draft(question, tuple(given[n] for n in order), tuple(options), answer, subject=_mmmu_subject(row))


def _image_columns(row: dict) -> dict[int, str | Embedded]:
    given = {}
    for key, value in row.items():
        match = IMAGE_COLUMN.fullmatch(key)
        image = image_value(value, key) if match else None
        if image is not None:
            given[int(match.group(1))] = image
    return given


def _fill(text: str) -> str:
    return PLACEHOLDER.sub(lambda match: f"(image {match.group(1)})", text)


def _mmmu_subject(row: dict) -> str:
    if text_of(row.get("subject")):
        return text_of(row.get("subject"))
    match = _MMMU_ID.fullmatch(text_of(row.get("id")))
    return match.group(1).replace("_", " ") if match else ""


def caption_row(row: dict, file_name: str) -> Draft:
    """Caption rows: image (or file_name) and caption, captions (a list) or text."""
    images = _images(row, "image") or _images(row, "file_name")
    if not images:
        raise RowProblem("no image")
    if len(images) > 1:
        raise RowProblem(f"{len(images)} images; a caption row has one")
    references: list[str] = []
    for key in ("captions", "caption", "text"):
        value = row.get(key)
        listed = parse_list(value) if key == "captions" or isinstance(plain(value), (list, tuple)) else None
        references += [text_of(v) for v in listed] if listed is not None else [text_of(value)]
    references = [reference for reference in references if reference]
    if not references:
        raise RowProblem("no caption")
    return Draft(CAPTION_QUESTION, tuple(images), references=tuple(references))


VLMCHAT = Layout("vlmchat", False, vlmchat_row)
MMLU = Layout("MMLU", False, mmlu_cells)
HF_MMLU = Layout("HF MMLU", False, hf_mmlu_row)
MMMU = Layout("MMMU", False, mmmu_row)
CAPTIONS = Layout("caption", True, caption_row)
IMAGEFOLDER_CAPTIONS = Layout("Hugging Face imagefolder", True, caption_row)  # metadata rows: file_name + text

ACCEPTED = ("vlmchat rows (question; options as a list or A-E columns; answer as letter, option text or 0-based "
            "index; optional image/images; subject)",
            "MMLU's own headerless CSV (question,A,B,C,D,answer; a picture file may follow the answer), one file "
            "per subject or a folder of them",
            "Hugging Face MMLU rows (question, subject, choices, answer index)",
            "MMMU rows (question with <image n>, options, answer letter, image_1..image_7 as paths or embedded "
            "images as in Hugging Face's Parquet files; a folder of subject subfolders of Parquet files)",
            "caption sets (a folder of images with same-name .txt captions, or rows of image and caption)")


def is_mmlu_row(cells: list[str]) -> bool:
    """Does a CSV row look like MMLU's headerless question,A,B,C,D,answer (last cell a fitting letter)?"""
    cells = split_pictures(cells)[0]
    answer = cells[-1].strip().upper() if cells else ""
    return len(cells) >= 4 and len(answer) == 1 and answer in LETTERS[:len(cells) - 2]


def detect_layout(keys: set[str], questions: Iterable[str]) -> Layout | None:
    """The layout that rows with these (lower-case) keys are in, or None."""
    if "question" not in keys:
        has_caption = keys & {"caption", "captions", "text"}
        if not (keys & {"image", "file_name"} and has_caption):
            return None
        return IMAGEFOLDER_CAPTIONS if "image" not in keys else CAPTIONS
    if "question_type" in keys or any(IMAGE_COLUMN.fullmatch(key) for key in keys):
        return MMMU
    if not keys & {"image", "images"} and any(PLACEHOLDER.search(question) for question in questions):
        return MMMU
    if "choices" in keys:
        return HF_MMLU
    if "options" in keys or keys & set(OPTION_COLUMNS):
        return VLMCHAT
    return None
