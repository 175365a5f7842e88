"""Dataset layouts: how one row of each accepted format becomes a training conversation.

Every parser takes a row and the folder its image paths are relative to, and returns the
processor-format messages (`{"type": "image"}` parts + text) with the images those parts stand for
(local paths, or `data:` URLs decoded later by `vlmchat.images.load_image`); a row that cannot be
used raises InputError saying what is wrong and how to fix it. Each layout follows its own docs:

- LLaMA-Factory ShareGPT (data/README.md): `messages`/`conversations` whose string contents carry
  `<image>` placeholders, one per path in `images`;
- LLaVA-Instruct JSON (LLaVA docs/Finetune_Custom_Data.md): `conversations` (`from`/`value`) and
  `image`, a path or a list; `<image>` at the start or end of the first human turn, or absent
  (the images then go first); rows without `image` are text-only;
- OpenAI messages and OpenAI vision fine-tuning JSONL: contents that are lists of `text` /
  `image_url` (`{"url": "data:image/jpeg;base64,...", "detail": ...}`) / `image` parts; the guide
  puts a question and its image in two consecutive user messages, which are merged into one;
- Hugging Face imagefolder (`metadata.jsonl`/`metadata.csv`): `file_name` + a text column;
- vlmchat's own `caption --format jsonl|csv` output: `image` + `caption`;
- image folder with `.txt` captions: read in datasets.py, turned into turns by `caption_turns`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from ..errors import InputError
from ..files import any_picture_below, check_inside, is_windows_path, picture_by_name
from ..images import is_data_url

PLACEHOLDER = "<image>"
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}
TEXT_COLUMNS = ("text", "caption", "description")  # imagefolder: the caption column, first found
# imagefolder's image columns, as `datasets` reads metadata: file_name, any *_file_name (one image each), and
# file_names / *_file_names (a list of images each)
IMAGE_COLUMN = re.compile(r"(?:\w+_)?file_names?")


def image_columns(keys) -> list[str]:
    """The imagefolder image columns among `keys`, in their order."""
    return [key for key in keys if isinstance(key, str) and IMAGE_COLUMN.fullmatch(key)]

CAPTION_FOLDER = "image folder with .txt captions"
SHAREGPT = "ShareGPT (LLaMA-Factory)"
LLAVA = "LLaVA-Instruct JSON"
OPENAI = "OpenAI messages"
OPENAI_VISION = "OpenAI vision fine-tuning JSONL"
TEXT_ONLY = "conversations without images (ShareGPT / LLaVA)"
ALPACA = "Alpaca (LLaMA-Factory)"
IMAGEFOLDER = "Hugging Face imagefolder"
CAPTIONS = "vlmchat caption"


@dataclass(frozen=True)
class Layout:
    """An accepted layout as the user is told about it: its name, file types and a one-line example."""

    name: str
    suffixes: tuple[str, ...]
    example: str


LAYOUTS = (
    Layout(CAPTION_FOLDER, (), "a folder holding cat.jpg and cat.txt ('a cat on a sofa')"),
    Layout(f"{IMAGEFOLDER} (metadata.jsonl / metadata.csv)", (".jsonl", ".csv"),
           '{"file_name": "cat.jpg", "text": "a cat on a sofa"} (CSV: file_name,text)'),
    Layout(f"{CAPTIONS} JSONL / CSV", (".jsonl", ".csv"),
           '{"image": "cat.jpg", "caption": "a cat on a sofa"} (CSV: image,caption)'),
    Layout(LLAVA, (".json",), '[{"id": "1", "image": "cat.jpg", "conversations": [{"from": "human", "value": '
                              '"<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]}]'),
    Layout(SHAREGPT, (".json", ".jsonl"), '{"messages": [{"role": "user", "content": "<image>What is this?"}, '
                                          '{"role": "assistant", "content": "A cat."}], "images": ["cat.jpg"]}'),
    Layout(f"{OPENAI} / vision fine-tuning JSONL", (".jsonl",),
           '{"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": '
           '"image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}]}, {"role": "assistant", "content": '
           '"A cat."}]}'),
)


def accepted_layouts(suffix: str | None = None) -> str:
    """One line: the layouts a file with `suffix` (any file or folder when None) may hold, an example each."""
    chosen = [layout for layout in LAYOUTS if suffix is None or suffix in layout.suffixes] or LAYOUTS
    return "; ".join(f"{layout.name}: {layout.example}" for layout in chosen)


def row_layout(row) -> str | None:
    """Which kind of row this is (conversation, caption or imagefolder metadata), None when none."""
    if not isinstance(row, dict):
        return None
    if "messages" in row or "conversations" in row:
        return "conversation"
    if "image" in row and "caption" in row:
        return CAPTIONS
    if image_columns(row):
        return IMAGEFOLDER
    return None


def _found_by_name(value: str, base: Path, path: Path) -> str | None:
    """A picture whose path leads nowhere, found by its file name below `base` (`picture_by_name`), or None."""
    found = picture_by_name(base, path.name, value)
    return None if found is None else str(found)


def image_reference(value, base: Path, what: str = "image") -> str:
    """A local image path (relative to `base`, else to `base/images`, else its file name in `base`: pictures picked
    with the dataset file in a browser arrive without their folders) or a data: URL; web URLs are refused.

    Under `finding_by_name`, a path that leads nowhere (absolute on the machine the dataset was made on, Windows',
    relative to LLaVA's separate image folder, its name in another case) is looked up by its file name below `base`."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what} names no file; give a path relative to the dataset file, or a data: URL")
    value = value.strip()
    if is_data_url(value):
        return value
    shown = value if len(value) <= 80 else value[:77] + "..."
    if value.lower().startswith(("http://", "https://")):
        raise InputError(f"{what} '{shown}' is a web address and web URLs are not fetched: "
                         "download the image first and use a local path or a data: URL")
    if is_windows_path(value):
        path = Path(PureWindowsPath(value).name)
        found = _found_by_name(value, base, path)
        if found is None:
            raise InputError(f"{what} '{shown}' is a Windows path of the machine the dataset was made on, and no file "
                             f"named {path.name} is in {base} or below: make the image paths relative to the dataset "
                             "file (e.g. images/cat.jpg) and put the pictures there")
        return found
    path = Path(value.removeprefix("file://").replace("\\", "/")).expanduser()
    if path.is_absolute():
        try:
            check_inside(path, base, shown, _embedded_folder())
        except InputError:  # a shared app: the upload may still hold a picture of that name
            found = _found_by_name(value, base, path)
            if found is None:
                raise
            return found
        if _exists(path):
            return str(path)
        found = _found_by_name(value, base, path)
        if found is None:
            raise InputError(f"{what} '{shown}' was not found, nor a file named {path.name} in {base} or below: an "
                             "absolute path of another machine? Make the image paths relative to the dataset file "
                             "(e.g. images/cat.jpg) and put the pictures there")
        return found
    for candidate in (base / path, base / "images" / path, base / path.name):
        check_inside(candidate, base, shown)
        if _exists(candidate):
            return str(candidate)
    if len(value) > 260:  # longer than paths get: base64 that lost its data: prefix?
        raise InputError(f"{what} '{shown}' was not found (is it base64 without its data:image/...;base64, prefix?)")
    found = _found_by_name(value, base, path)
    if found is not None:
        return found
    places = (f"neither {base / path} nor {base / 'images' / path} exists" if path.parts[0] != "images"
              else f"{base / path} does not exist")  # not …/images/images/x.png, which reads like a bug
    # a bare name and no picture at all below the file's folder: LLaVA's json/llava_instruct_150k.json given, its
    # pictures in coco/ beside json/ (or a dataset file uploaded without its pictures)
    if len(path.parts) == 1 and not any_picture_below(base):
        raise InputError(f"{what} '{value}' was not found: {base} holds no picture at all. Uploading, pick the "
                         "pictures with the dataset file, or upload a .zip; on this computer, where the pictures are "
                         "in a folder beside the dataset file's (LLaVA's json/ beside coco/train2017/), give the "
                         "folder holding both: the one dataset file below it is read, and its pictures are found "
                         "by their file names")
    raise InputError(f"{what} '{value}' was not found: {places}, nor a file of that name below {base} (paths are "
                     f"relative to {base}: the dataset file's folder, or dataset_info.json's where that registers it; "
                     "a dataset uploaded as separate files keeps no folders: upload a .zip to keep them)")


def _embedded_folder() -> Path:
    """Where pictures a Parquet dataset holds as bytes are written (read as files from there)."""
    from ..evaluate.sets import embedded_image_folder

    return embedded_image_folder()


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to be a path, e.g. base64 without its data: prefix
        return False


def caption_turns(image: str | tuple[str, ...], caption, prompt: str) -> tuple[tuple, tuple[str, ...]]:
    """A user turn (the image or images, then `prompt`) answered by `caption`: the shape of every captioning
    layout."""
    if not isinstance(caption, str) or not caption.strip():
        raise InputError("empty caption")
    images = (image,) if isinstance(image, str) else tuple(image)
    user = [{"type": "image"} for _ in images] + ([{"type": "text", "text": prompt}] if prompt else [])
    messages = ({"role": "user", "content": user},
                {"role": "assistant", "content": [{"type": "text", "text": caption.strip()}]})
    return messages, images


def caption_row(row: dict, base: Path, prompt: str) -> tuple[tuple, tuple[str, ...]]:
    """A row of vlmchat's `caption --format jsonl|csv` output: {"image": path, "caption": text}."""
    return caption_turns(image_reference(row.get("image"), base), row.get("caption"), prompt)


def text_column(rows: list[dict], file: str) -> str:
    """The imagefolder metadata column holding the captions: text/caption/description, or the one text column."""
    columns = list(dict.fromkeys(key for row in rows if isinstance(row, dict) for key in row))
    if not image_columns(columns):
        raise InputError(f"{file} has no file_name column; Hugging Face imagefolder metadata names each image "
                         "in file_name (or *_file_name, file_names), relative to the metadata file")
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    candidates = [c for c in columns if not IMAGE_COLUMN.fullmatch(c) and _is_text(rows, c)]
    if len(candidates) == 1:
        return candidates[0]
    found = f"its columns are {', '.join(columns)}"
    if candidates:
        found = f"{', '.join(candidates)} could each be it"
    raise InputError(f"{file} has no caption column that vlmchat can pick ({found}); name the caption column 'text'")


def _is_text(rows: list[dict], column: str) -> bool:
    values = [row.get(column) for row in rows if isinstance(row, dict) and row.get(column) not in (None, "")]
    return bool(values) and all(isinstance(v, str) for v in values) and not all(_is_number(v) for v in values)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def imagefolder_row(row: dict, column: str, base: Path, prompt: str) -> tuple[tuple, tuple[str, ...]]:
    """A Hugging Face imagefolder metadata row: its images (`image_columns`, relative to the metadata file, in
    column order), `column` its caption."""
    images = []
    for key in image_columns(row):
        value = row[key]
        if key.endswith("_names"):
            if not isinstance(value, list) and value not in (None, ""):
                raise InputError(f"'{key}' must be a list of files (a column named *file_names holds several)")
            images += [image_reference(one, base, key) for one in value or []]
        elif value not in (None, ""):
            images.append(image_reference(value, base, key))
    if not images:
        raise InputError(f"no {' or '.join(image_columns(row)) or 'file_name'}")
    caption = row.get(column)
    if caption is not None and not isinstance(caption, str):
        raise InputError(f"'{column}' is {type(caption).__name__}, not text")
    return caption_turns(tuple(images), caption, prompt)


def conversation_kind(row: dict) -> str:
    """Which layout a row with 'messages'/'conversations' is written in (OpenAI-style parts, LLaVA, ShareGPT or
    text only), read from its shape alone: named even when the row itself cannot be used."""
    turns = row.get("messages", row.get("conversations"))
    if isinstance(turns, list) and not all(isinstance(_content(t), str) for t in turns):
        return OPENAI
    if row.get("image") is not None:
        return LLAVA
    return SHAREGPT if row.get("images") else TEXT_ONLY


def conversation_row(row: dict, base: Path) -> tuple[tuple, tuple[str, ...], str]:
    """(messages, images, layout) of a ShareGPT, LLaVA or OpenAI-style row with 'messages'/'conversations'."""
    turns = row.get("messages", row.get("conversations"))
    if not isinstance(turns, list) or not turns:
        raise InputError("no 'messages' (or 'conversations') list")
    kind = conversation_kind(row)
    if kind == OPENAI:
        messages, images = _openai(turns, base, row.get("images"))
        return _with_system(row, messages), images, OPENAI_VISION if any(is_data_url(i) for i in images) else OPENAI
    if kind == LLAVA:
        if row.get("images"):
            raise InputError("both 'image' (LLaVA) and 'images' (ShareGPT) are set; keep one")
        return *_llava(row["image"], turns, base), LLAVA
    messages, images = _sharegpt(row.get("images") or [], turns, base)
    return _with_system(row, messages), images, SHAREGPT if images else TEXT_ONLY


def _with_system(row: dict, messages: tuple) -> tuple:
    """`messages` after the row's own `system` prompt (LLaMA-Factory's ShareGPT column), where it has one and the
    conversation does not start with a system message already."""
    system = row.get("system")
    if not isinstance(system, str) or not system.strip() or (messages and messages[0]["role"] == "system"):
        return messages
    return ({"role": "system", "content": [{"type": "text", "text": system.strip()}]}, *messages)


def _content(turn):
    return turn.get("content", turn.get("value")) if isinstance(turn, dict) else None


def _role(turn, index: int) -> str:
    role = ROLES.get(str(turn.get("role", turn.get("from", ""))).lower())
    if role is None:
        raise InputError(f"message {index + 1} has role {turn.get('role', turn.get('from'))!r}; "
                         "use user/assistant/system (or human/gpt)")
    return role


def _split_placeholders(turns: list) -> list[dict]:
    """String turns as messages, each `<image>` becoming an image part where it stood."""
    messages = []
    for index, turn in enumerate(turns):
        content = []
        for i, piece in enumerate(_content(turn).split(PLACEHOLDER)):
            if i:
                content.append({"type": "image"})
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
        messages.append({"role": _role(turn, index), "content": content})
    return messages


def _paths(value, key: str, dicts: bool = False) -> list:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) or (dicts and isinstance(p, dict)) for p in paths):
        raise InputError(f"'{key}' must be a path or a list of paths")
    return paths


def _sharegpt(images, turns: list, base: Path) -> tuple[tuple, tuple[str, ...]]:
    images = _paths(images, "images")
    placeholders = sum(_content(t).count(PLACEHOLDER) for t in turns)
    if placeholders != len(images):
        fix = "they must match"
        if not images:
            fix = ("list the image files in 'images' (LLaMA-Factory) or 'image' (LLaVA), relative to the "
                   "dataset file, or remove the placeholders")
        raise InputError(f"{placeholders} {PLACEHOLDER} placeholder{'s' * (placeholders != 1)} but {len(images)} "
                         f"image{'s' * (len(images) != 1)}; {fix}")
    messages = _split_placeholders(turns)
    check_turns(messages)
    _picture_first(messages)
    return tuple(messages), tuple(image_reference(p, base) for p in images)


def _llava(images, turns: list, base: Path) -> tuple[tuple, tuple[str, ...]]:
    images = _paths(images, "image")
    placeholders = sum(_content(t).count(PLACEHOLDER) for t in turns)
    if placeholders not in (0, len(images)):
        raise InputError(f"{placeholders} {PLACEHOLDER} placeholder{'s' * (placeholders != 1)} but {len(images)} "
                         f"image{'s' * (len(images) != 1)} in 'image'; put one "
                         f"{PLACEHOLDER} per image in the first human turn, or none (the images then go first)")
    messages = _split_placeholders(turns)
    if not placeholders:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is not None:
            first_user["content"][:0] = [{"type": "image"} for _ in images]
    check_turns(messages)
    _picture_first(messages)
    return tuple(messages), tuple(image_reference(p, base) for p in images)


def _openai(turns: list, base: Path, listed=None) -> tuple[tuple, tuple[str, ...]]:
    """Messages with text and image parts; a bare {"type": "image"} part stands for the next file of the row's
    `images` list (`listed`: TRL's and Hugging Face's conversational vision layout)."""
    listed = [] if listed is None else [_listed_path(value) for value in _paths(listed, "images", dicts=True)]
    bare = sum(1 for turn in turns if isinstance(_content(turn), list) for part in _content(turn)
               if isinstance(part, dict) and part.get("type") == "image" and not _names_image(part))
    if listed and bare and bare != len(listed):
        raise InputError(f"{bare} image parts without a file of their own but {len(listed)} files in 'images'; "
                         "they must match")
    listed = iter(listed)
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
                named = _part_reference(part) if _names_image(part) or bare == 0 else next(listed, None)
                images.append(image_reference(named if named is not None else _part_reference(part), base,
                                              f"message {index + 1}'s image"))
                content.append({"type": "image"})
            else:
                raise InputError(f"message {index + 1}: unknown content part {kind!r}; use text, image or image_url")
        role = _role(turn, index)
        if role == "user" and messages and messages[-1]["role"] == "user":
            messages[-1]["content"].extend(content)  # OpenAI's guide: the question, then its image, as two messages
        else:
            messages.append({"role": role, "content": content, **_weight(turn, role, index)})
    check_turns(messages)
    _picture_first(messages)
    return tuple(messages), tuple(images)


def _weight(turn: dict, role: str, index: int) -> dict:
    """{"weight": 0} for an assistant message OpenAI's format marks as not to be learned (`"weight": 0`: the turn
    stays in the conversation, out of the loss), else {}; only 0 and 1 are allowed, as OpenAI allows."""
    if "weight" not in turn:
        return {}
    weight = turn["weight"]
    if role != "assistant" or isinstance(weight, bool) or weight not in (0, 1):
        raise InputError(f"message {index + 1}: 'weight' is {weight!r}; only an assistant message may have one, "
                         "and it is 0 (not learned) or 1 (learned)")
    return {"weight": 0} if weight == 0 else {}


def learned(message: dict) -> bool:
    """True for an answer the adapter learns (every assistant message but those with weight 0)."""
    return message["role"] == "assistant" and message.get("weight", 1) != 0


def _part_reference(part: dict):
    value = _named(part)
    if not isinstance(value, str) or not value:
        raise InputError('an image part names no image; use {"type": "image_url", "image_url": {"url": '
                         '"data:image/png;base64,..."}} or {"type": "image", "image": "path"}, or list the '
                         "files in the row's 'images', one per {\"type\": \"image\"} part")
    return value


def _named(part: dict):
    value = part.get("image") or part.get("path") or part.get("url") or part.get("image_url")
    return value.get("url") or value.get("path") if isinstance(value, dict) else value


def _names_image(part: dict) -> bool:
    return isinstance(_named(part), str) and bool(_named(part))


def _listed_path(value):
    """A path from a row's `images` list: a string, or a `datasets` Image dict that kept its file's path."""
    return value.get("path") if isinstance(value, dict) else value


def _picture_first(messages: list[dict]) -> None:
    """A user turn with one picture gets it before its text, as Chat, Caption and Evaluate ask: an adapter trained
    on rows written text-first (OpenAI's own guide, `<image>` at the end) answered nothing useful there. Several
    pictures keep the order their text refers to."""
    for message in messages:
        pictures = [part for part in message["content"] if part["type"] == "image"]
        if message["role"] == "user" and len(pictures) == 1:
            message["content"] = pictures + [part for part in message["content"] if part["type"] != "image"]


def check_turns(messages: list[dict]) -> None:
    """Roles alternate user/assistant (after an optional system message) and end with a non-empty answer."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not body:
        raise InputError("no user message")
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise InputError(f"roles must alternate user, assistant, …; message {index + 1} is {message['role']}")
        if expected == "assistant" and any(p["type"] == "image" for p in message["content"]):
            raise InputError(f"message {index + 1} is an answer holding an image; images belong in user messages")
        if expected == "assistant" and not any(p.get("text") for p in message["content"]):
            raise InputError(f"empty answer in message {index + 1}")
    if body[-1]["role"] != "assistant":
        raise InputError("the conversation must end with an assistant answer")
    if not any(map(learned, body)):
        raise InputError("every answer has weight 0, so nothing would be learned; give one of them weight 1")


def llamafactory_row(row, entry: dict):
    """A row of a dataset LLaMA-Factory's dataset_info.json registers, as the ShareGPT row vlmchat reads: its
    `columns` and `tags` renamed to the defaults, and Alpaca rows (instruction, input, output, optional history and
    system) made a conversation as LLaMA-Factory's converter makes it (instruction and input joined by a newline).
    What does not fit is left for the row reader to name."""
    if not isinstance(row, dict):
        return row
    columns = entry.get("columns") if isinstance(entry.get("columns"), dict) else {}
    column = lambda key, default: row.get(columns.get(key, default))  # noqa: E731
    out = {"images": column("images", "images"), "system": column("system", "system")}
    if str(entry.get("formatting", "alpaca")).lower() == "sharegpt":
        tags = entry.get("tags") if isinstance(entry.get("tags"), dict) else {}
        roles = {tags.get(key): role for key, role in (("user_tag", "user"), ("assistant_tag", "assistant"),
                                                       ("system_tag", "system")) if tags.get(key)}
        role_tag, content_tag = tags.get("role_tag", "from"), tags.get("content_tag", "value")

        def turn(value):
            if not isinstance(value, dict):
                return value
            role = value.get(role_tag, value.get("role", value.get("from")))
            return {"role": roles.get(role, role),
                    "content": value.get(content_tag, value.get("content", value.get("value")))}

        turns = column("messages", "conversations")
        out["messages"] = [turn(value) for value in turns] if isinstance(turns, list) else turns
        return out
    history = column("history", "history") if "history" in columns else None
    messages = []
    for pair in history if isinstance(history, list) else []:
        if isinstance(pair, list) and len(pair) == 2:
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    asked = "\n".join(str(part) for part in (column("prompt", "instruction"), column("query", "input"))
                      if isinstance(part, str) and part)
    messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": column("response", "output")}]
    return {**out, "messages": messages}
