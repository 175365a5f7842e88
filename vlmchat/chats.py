"""Saved conversations: one folder per chat, written as it happens, reopened after a reload or a restart.

Layout, under `<outputs>/chats/` (or `<outputs>/users/<user>/chats/` when the app has a login, see
ui/users.py):

    <chat id>/chat.json        the conversation (format below), written atomically (files.py)
    <chat id>/images/<sha>.png  copies of its pictures, named by their content's sha256
    <chat id>/export/...        Markdown / JSON exports, made on request

A chat in memory (what the Chat tab and the /chat endpoint pass around) is a dict:

    {"id": "20250101-120000-ab12cd" or None (not saved yet), "title": str, "renamed": bool,
     "created": ISO time, "updated": ISO time, "system": system prompt, "adapter": last adapter used,
     "revision": how many times it was saved (so a save sees what another tab saved meanwhile),
     "messages": [
        {"role": "user", "text": str, "images": [{"path": local file, "name": shown name, "sha256": hex}]},
        {"role": "assistant", "text": str, "status": "ok" | "error" | "stopped" | "pending",
         "adapter": "base" or a name, "model": model id, "tokens": int, "seconds": float,
         "read": True where an error came after the question and its pictures were read}, ...]}

On disk an image is {"file": "images/<sha>.<ext>", "name", "sha256"}; the picture of a turn that
failed before it was read (not an image, too large) is not copied and keeps only its name. Only user
turns answered with status "ok" are ever sent back to the model, with the pictures of stopped turns
and of turns that failed after reading them (see `answered_turns`).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import InputError
from .files import sha256_of, write_bytes_atomic, write_text_atomic

FORMAT = "vlmchat-chat/1"
CHAT_FILE = "chat.json"
ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
TITLE_LENGTH = 60


def now() -> str:
    """The current time as an ISO 8601 UTC string (sorts as it reads)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_chat(system: str = "") -> dict:
    """An empty, unsaved chat."""
    return {"id": None, "title": "", "renamed": False, "created": None, "updated": None, "system": system,
            "adapter": None, "revision": 0, "messages": []}


def keeps_pictures(answer: dict | None) -> bool:
    """A left-out turn whose pictures were read: stopped, or failed after reading them (an endpoint down, an
    empty answer). Its pictures stay in the conversation; a picture that could not be read does not."""
    return answer is not None and (answer.get("status") == "stopped" or bool(answer.get("read")))


def answered_turns(messages: list[dict]) -> list[dict]:
    """The user turns answered with status "ok", each followed by its answer; the last user turn too when it
    waits for its answer. A failed, stopped or interrupted turn (and its question) is left out, but pictures it
    read go with the next question when that has none of its own (after Stop, the next question was answered
    about the picture before the stopped one)."""
    kept: list[dict] = []
    carried: list[dict] = []
    for index, message in enumerate(messages):
        if message.get("role") != "user":
            continue
        answer = messages[index + 1] if index + 1 < len(messages) else None
        if answer is not None and not (answer.get("role") == "assistant" and answer.get("status") == "ok"):
            if answer.get("role") == "assistant" and keeps_pictures(answer):
                carried += [image for image in message.get("images") or []
                            if image.get("path") and Path(image["path"]).is_file()]
            continue
        if carried and not message.get("images"):  # a question with a picture of its own moved on from them
            message = {**message, "images": carried}
        carried = []
        kept += [message] if answer is None else [message, answer]
    return kept


def auto_title(chat: dict) -> str:
    """The first answered question of the chat (else its first question), shortened, and its first picture's name
    ("Describe the image. · 📎 cat.jpg": chats that all asked "Describe the image." could not be told apart in the
    list, outside reviewer). A refused turn titled the chat after the picture it refused (tester)."""
    messages = chat["messages"]
    questions = [m for m in messages if m.get("role") == "user"]
    answered = [m for m, answer in zip(messages, messages[1:])
                if m.get("role") == "user" and answer.get("role") == "assistant" and answer.get("status") == "ok"]
    for message in answered or questions:
        text = " ".join((message.get("text") or "").split())
        picture = "📎 " + message["images"][0].get("name", "image") if message.get("images") else ""
        if text and picture:
            room = TITLE_LENGTH - len(picture) - 3
            text = text if len(text) <= room else text[:max(room - 1, 10)] + "…"
            return f"{text} · {picture}"
        if text:
            return text if len(text) <= TITLE_LENGTH else text[:TITLE_LENGTH - 1] + "…"
        if picture:
            return picture
    return "New chat"


def _image_suffix(path: Path) -> str:
    from PIL import Image

    from .images import format_suffix

    try:
        with Image.open(path) as image:
            return format_suffix(image.format or "") or ".png"
    except OSError:  # the turn's answer decoded it already; this only picks the file name's ending
        return ".png"


class ChatStore:
    """The saved chats in one folder (one user's): list, load, save, rename, delete, export."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, chat_id: str) -> Path:
        """The folder of chat `chat_id`; InputError for anything that is not a chat id."""
        if not isinstance(chat_id, str) or not ID_PATTERN.match(chat_id):
            raise InputError(f"'{chat_id}' is not a saved chat; pick one from the list.")
        return self.folder / chat_id

    def _read(self, chat_id: str) -> dict:
        try:
            data = json.loads((self.path(chat_id) / CHAT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(f"The chat '{chat_id}' is gone or unreadable; pick another one from the list.") from None
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise InputError(f"The chat '{chat_id}' is unreadable; pick another one from the list.")
        return data

    def list(self) -> list[dict]:
        """{"id", "title", "updated"} of every saved chat, newest first; unreadable folders are skipped."""
        found = []
        if self.folder.is_dir():
            for folder in self.folder.iterdir():
                if not ID_PATTERN.match(folder.name) or not (folder / CHAT_FILE).is_file():
                    continue
                try:
                    data = self._read(folder.name)
                except InputError:
                    continue
                found.append({"id": folder.name, "title": str(data.get("title") or "New chat"),
                              "updated": str(data.get("updated") or "")})
        return sorted(found, key=lambda c: (c["updated"], c["id"]), reverse=True)

    def load(self, chat_id: str) -> dict:
        """Chat `chat_id` as it is used in memory (image paths made absolute, and checked to lie inside it)."""
        data = self._read(chat_id)
        folder = self.path(chat_id).resolve()
        chat = new_chat() | {k: v for k, v in data.items() if k in new_chat()}
        chat["id"] = chat_id
        messages = []
        for message in data["messages"]:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                continue
            message = dict(message)
            if message["role"] == "user":
                images = []
                for image in message.get("images") or []:
                    entry = {"name": str(image.get("name") or "image")}
                    if image.get("sha256"):
                        entry["sha256"] = str(image["sha256"])
                    file = (folder / str(image.get("file") or "")).resolve() if image.get("file") else None
                    if file is not None and file.is_relative_to(folder) and file.is_file():
                        entry["path"] = str(file)
                    images.append(entry)
                message["images"] = images
            elif message.get("status") == "pending":  # the app stopped while it was answering
                message["status"] = "stopped"
            messages.append(message)
        chat["messages"] = messages
        return chat

    def save(self, chat: dict, touch: bool = True) -> dict:
        """Write `chat` (a new one gets an id and a folder); its pictures are copied in. Returns `chat`,
        updated in place: its id, times, title, revision, and image paths pointing at the copies. Without
        `touch` its time (and so its place in the list) stays as it was.

        Two tabs may have the same chat open. Where the other saved it meanwhile, what it saved is kept: a
        rename there is taken over when the turns saved there are the first of this chat's, and otherwise
        (the other tab went on with turns of its own, or deleted the chat) this chat is saved as a new one,
        titled "... (copy)", instead of overwriting or bringing back what the other tab did."""
        if chat.get("id"):
            self._after_other_tabs(chat)
        if not chat.get("id"):
            chat["id"] = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
            chat["created"] = now()
        folder = self.path(chat["id"])
        if touch or not chat.get("updated"):
            chat["updated"] = now()
        if not chat.get("renamed"):
            chat["title"] = auto_title(chat)
        stored = []
        messages = chat["messages"]
        for index, message in enumerate(messages):
            entry = {k: v for k, v in message.items() if k != "images"}
            if message.get("role") == "user":
                answer = messages[index + 1] if index + 1 < len(messages) else None
                failed = answer is not None and answer.get("status") == "error" and not keeps_pictures(answer)
                images = []
                for image in message.get("images") or []:
                    # A file that was refused is not kept, nor one that is gone (its chat deleted in another tab).
                    if failed or not image.get("path") or not Path(image["path"]).is_file():
                        image.pop("path", None)
                        images.append({"name": image.get("name", "image")})
                        continue
                    images.append(self._keep_image(folder, image))
                entry["images"] = images
            stored.append(entry)
        chat["revision"] = int(chat.get("revision") or 0) + 1
        data = {"format": FORMAT, **{k: v for k, v in chat.items() if k != "messages"}, "messages": stored}
        write_text_atomic(folder / CHAT_FILE, json.dumps(data, ensure_ascii=False, indent=1) + "\n", private=True)
        return chat

    def _after_other_tabs(self, chat: dict) -> None:
        """Take over a rename another tab saved, or make `chat` a new chat where keeping it would undo that tab's
        turns or deletion (see `save`)."""
        mine = int(chat.get("revision") or 0)
        try:
            saved = self._read(chat["id"])
        except InputError:
            saved = None
        if saved is None and mine == 0 or saved is not None and int(saved.get("revision") or 0) == mine:
            return  # nobody else wrote it
        turns = lambda messages: [(m.get("role"), m.get("text"), m.get("status")) for m in messages]  # noqa: E731
        if saved is not None and turns(saved["messages"]) == turns(chat["messages"][:len(saved["messages"])]):
            chat.update(title=saved.get("title") or chat.get("title"), renamed=bool(saved.get("renamed")),
                        revision=int(saved.get("revision") or 0))
            return
        chat.update(id=None, revision=0, renamed=True, title=f"{chat.get('title') or auto_title(chat)} (copy)")

    def _keep_image(self, folder: Path, image: dict) -> dict:
        """The stored form of one picture, copied into `folder/images` first if it is not there yet."""
        source = Path(image["path"])
        images = (folder / "images").resolve()
        if not source.resolve().is_relative_to(images):
            digest = image.get("sha256") or sha256_of(source)
            target = images / f"{digest[:32]}{_image_suffix(source)}"
            if not target.exists():
                write_bytes_atomic(target, source.read_bytes(), private=True)
            image.update(path=str(target), sha256=digest)
        target = Path(image["path"]).resolve()
        return {"file": target.relative_to(folder.resolve()).as_posix(), "name": image.get("name", target.name),
                "sha256": image.get("sha256") or sha256_of(target)}

    def rename(self, chat_id: str, title: str) -> dict:
        """Give chat `chat_id` a title of its own (kept from then on); returns the chat."""
        title = " ".join((title or "").split())[:200]
        if not title:
            raise InputError("Type a title first.")
        chat = self.load(chat_id)
        chat.update(title=title, renamed=True)
        return self.save(chat, touch=False)

    def own_files(self, chat_id: str) -> list[Path]:
        """The files only chat `chat_id` has: its exports (the UI drops the copies it handed out of them). Not its
        pictures: Gradio names a copy by its content, so the same bytes may be another login's or an example's."""
        return list((self.path(chat_id) / "export").glob("*"))

    def delete(self, chat_id: str) -> None:
        """Remove chat `chat_id` and its pictures."""
        folder = self.path(chat_id)
        if not folder.is_dir():
            raise InputError(f"The chat '{chat_id}' is already gone.")
        trash = folder.with_name(f".{folder.name}.deleting")
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)

    def export(self, chat_id: str, kind: str) -> Path:
        """Chat `chat_id` as one self-contained file, kind "markdown" or "json" (pictures embedded as data: URLs)."""
        chat = self.load(chat_id)
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", chat.get("title") or "chat").strip("-")[:40] or "chat"
        target = self.path(chat_id) / "export" / f"{slug}.{'md' if kind == 'markdown' else 'json'}"
        if kind == "markdown":
            text = to_markdown(chat)
        elif kind == "json":
            text = json.dumps(to_portable(chat), ensure_ascii=False, indent=1) + "\n"
        else:
            raise InputError("Export as 'markdown' or 'json'.")
        write_text_atomic(target, text, private=True)
        return target


def _data_url(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    data = Path(path).read_bytes()
    mime = {".jpg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp",
            ".tif": "image/tiff"}.get(Path(path).suffix.lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def stats_line(message: dict) -> str:
    """"12 tokens · 48.0 tokens/s · 0.25 s · adapter: demo-es" for an answer, with "$0.000079" where a priced
    endpoint answered ('' when it has no figures)."""
    parts = []
    tokens, seconds = message.get("tokens"), message.get("seconds")
    if isinstance(tokens, int):
        parts.append(f"{tokens} token{'s' if tokens != 1 else ''}")
        if seconds:
            parts.append(f"{tokens / seconds:.1f} tokens/s")
    if seconds:
        parts.append(f"{seconds:.2f} s")
    if message.get("cost_usd") is not None:
        parts.append(f"${message['cost_usd']:.6f}")
    if message.get("adapter"):
        parts.append(f"adapter: {message['adapter']}")
    return " · ".join(parts)


def to_portable(chat: dict) -> dict:
    """The chat as plain JSON with its pictures embedded (data: URLs) and no local paths."""
    messages = []
    for message in chat["messages"]:
        entry = {k: v for k, v in message.items() if k != "images"}
        if message.get("role") == "user":
            entry["images"] = [{"name": image.get("name"), "sha256": image.get("sha256"),
                                "data_url": _data_url(image.get("path"))} for image in message.get("images") or []]
        messages.append(entry)
    return {"format": FORMAT, **{k: v for k, v in chat.items() if k != "messages"}, "messages": messages}


def to_markdown(chat: dict) -> str:
    """The chat as Markdown: the title, the system prompt, then each turn with its pictures embedded."""
    lines = [f"# {chat.get('title') or 'Chat'}", ""]
    if (chat.get("system") or "").strip():
        lines += [f"*System prompt:* {chat['system'].strip()}", ""]
    for message in chat["messages"]:
        if message.get("role") == "user":
            lines.append("**You:**")
            for image in message.get("images") or []:
                url = _data_url(image.get("path"))
                lines.append(f"![{image.get('name', 'image')}]({url})" if url else f"📎 {image.get('name', 'image')}")
            lines += [message.get("text") or "", ""]
        else:
            status = message.get("status")
            label = "Assistant" + (f" ({status})" if status not in ("ok", None) else "")
            lines += [f"**{label}:**", message.get("text") or ""]
            if "system" in message and message["system"] != (chat.get("system") or ""):  # under another prompt
                lines.append(f"<small>system prompt then: {message.get('system') or 'none'}</small>")
            if stats := stats_line(message):
                lines.append(f"<small>{stats}</small>")
            lines.append("")
    return "\n".join(lines)
