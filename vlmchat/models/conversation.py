"""Chat history in, processor messages out.

Gradio (and API callers) send history in several shapes: content as a string, a file dict,
a list mixing strings, file dicts and typed parts. This module turns any of them into the
processor's message format, with images decoded, so every image stays in context across turns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from ..errors import InputError
from ..images import load_image

def _file_path(part: Any) -> str | None:
    """The local path a content part refers to, if it is a file."""
    if isinstance(part, (str, Path)):
        return None
    if isinstance(part, dict):
        if part.get("type") in ("file", "image") and isinstance(part.get("file"), dict):
            return part["file"].get("path")
        if part.get("type") == "image" and isinstance(part.get("image"), (str, Path)):
            return str(part["image"])
        return part.get("path")
    path = getattr(part, "path", None)  # gradio FileData and similar objects
    if path is None and hasattr(part, "value"):  # a gradio component placed in history
        value = part.value
        path = value.get("path") if isinstance(value, dict) else getattr(value, "path", None)
    return path


def _parts(content: Any) -> Iterable[Any]:
    if isinstance(content, (list, tuple)):
        for item in content:
            yield from _parts(item) if isinstance(item, (list, tuple)) else [item]
    elif content is not None:
        yield content


def _convert_part(part: Any, max_bytes: int | None) -> dict | None:
    if isinstance(part, str):
        return {"type": "text", "text": part} if part.strip() else None
    if isinstance(part, dict) and part.get("type") == "text":
        return _convert_part(part.get("text") or "", max_bytes)
    if isinstance(part, dict) and isinstance(part.get("image"), Image.Image):
        return {"type": "image", "image": load_image(part["image"])}
    path = _file_path(part)
    if not path:
        return None
    return {"type": "image", "image": load_image(path, name=Path(path).name, max_bytes=max_bytes)}


def to_processor_content(content: Any, max_bytes: int | None = None) -> list[dict]:
    """Content parts of one message as [{"type": "image", "image": PIL}, {"type": "text", "text": str}]."""
    converted = (_convert_part(part, max_bytes) for part in _parts(content))
    return [part for part in converted if part is not None]


def to_processor_messages(history: list[dict], message: dict | str | None = None,
                          max_bytes: int | None = None) -> list[dict]:
    """Processor messages for a chat `history` plus the new `message` ({"text", "files"} or str)."""
    messages: list[dict] = []
    for item in history or []:
        role = item.get("role") if isinstance(item, dict) else None
        if role not in ("user", "assistant", "system"):
            continue
        content = to_processor_content(item.get("content"), max_bytes)
        if not content:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(content)  # gradio stores a file and its text as two messages
        else:
            messages.append({"role": role, "content": content})
    if message is not None:
        if isinstance(message, str):
            message = {"text": message, "files": []}
        files = [f if isinstance(f, (str, Path)) else _file_path(f) for f in message.get("files") or []]
        parts = [{"path": str(f)} for f in files if f] + [message.get("text") or ""]
        content = to_processor_content(parts, max_bytes)
        if not content:
            raise InputError("The message is empty; type a question or attach an image.")
        if messages and messages[-1]["role"] == "user":
            messages[-1]["content"].extend(content)
        else:
            messages.append({"role": "user", "content": content})
    if not messages or messages[-1]["role"] != "user":
        raise InputError("The message is empty; type a question or attach an image.")
    return messages


def chat_messages(turns: list[dict], system: str = "", max_bytes: int | None = None) -> list[dict]:
    """Processor messages for saved-chat turns ({"role", "text", "images": [{"path", "name"}]}, see
    vlmchat/chats.py), after a system prompt if one is given. The last turn must be the user's."""
    messages: list[dict] = []
    if system and system.strip():
        messages.append({"role": "system", "content": [{"type": "text", "text": system.strip()}]})
    for turn in turns:
        if turn.get("role") not in ("user", "assistant"):
            continue
        images = [{"type": "image", "image": load_image(image["path"], name=image.get("name"), max_bytes=max_bytes)}
                  for image in turn.get("images") or [] if image.get("path")]
        content = images + to_processor_content(turn.get("text") or "")
        if content:
            messages.append({"role": turn["role"], "content": content})
    if not messages or messages[-1]["role"] != "user":
        raise InputError("The message is empty; type a question or attach an image.")
    return messages


def from_last_picture(messages: list[dict]) -> list[dict]:
    """The system prompt and the conversation from the newest user message with a picture on: for a model that
    was trained on one picture per chat (it would mix the old picture's shape with the new one's colour)."""
    start = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"
                  and has_image([messages[i]])), None)
    if start is None:
        return messages
    return [m for m in messages[:start] if m["role"] == "system"] + messages[start:]


def picture_count(messages: list[dict]) -> int:
    """How many pictures the processor `messages` carry."""
    return sum(isinstance(part, dict) and part.get("type") == "image" for message in messages
               if not isinstance(message["content"], str) for part in message["content"])


def has_image(messages: list[dict]) -> bool:
    """True when any of the processor `messages` carries a picture."""
    return picture_count(messages) > 0


NEEDS_IMAGE_KEY = "needs_image"  # in the model's vlmchat_recipe.json: it answers only about a picture
ONE_PICTURE_KEY = "one_picture_per_chat"  # ... and was trained on one picture per chat: a new one starts afresh


def model_flag(manager, key: str) -> bool:
    """A flag of the loaded model's folder recipe (NEEDS_IMAGE_KEY, ONE_PICTURE_KEY: the demo's are set)."""
    from ..finetune.recipe import read_recipe

    info = manager.info
    if info is None or not Path(info.source).is_dir():
        return False
    return bool(read_recipe(info.source).get(key))


def for_local_model(manager, messages: list[dict], attach: str = "attach one") -> list[dict]:
    """The processor `messages` as the loaded model is asked them (Chat and /v1 alike): from the newest picture on
    where it saw one picture per chat (ONE_PICTURE_KEY); an InputError where it answers only about a picture
    (NEEDS_IMAGE_KEY) and there is none, instead of an invented answer. `attach`: how the asker adds a picture."""
    who = manager.info.shown if manager.info else "This model"
    if model_flag(manager, ONE_PICTURE_KEY):
        messages = from_last_picture(messages)
        pictures = picture_count(messages)
        if pictures > 1:  # it would mix them up ("a blue circle" for a red circle and a blue square)
            raise InputError(f"{who} reads one picture at a time: send the {pictures} pictures one by one (each "
                             "new picture starts afresh).")
    if not has_image(messages) and model_flag(manager, NEEDS_IMAGE_KEY):
        raise InputError(f"{who} answers only about a picture: "
                         f"{attach} to your question and send it again.")
    return messages
