"""The Chat tab: saved conversations, an adapter per browser session, streaming with Stop, edit and regenerate.

Everything a chat needs lives in the session (a gr.State holding the chat, see vlmchat/chats.py) or
comes with the request: the adapter menu's value, the generation settings and the system prompt.
Nothing here changes the process: the Adapters tab's Activate only sets the adapter new sessions
start with (and that an API call naming none gets).

A turn that failed (a file that is not a picture, a stopped answer, no picture for a model that needs
one) is shown once and never sent back to the model. Every chat in the tab is saved as it happens
(vlmchat/chats.py, one folder per login) and listed newest first; a reload reopens the chat the tab
had open (the browser tab remembers its id in sessionStorage).
"""

from __future__ import annotations

import html
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterator

import gradio as gr

from ..chats import ChatStore, answered_turns, new_chat, now, stats_line
from ..errors import ContextLengthError, VlmchatError
from ..lora.runtime import BASE, is_base
from ..models.answers import EMPTY_ANSWER
from ..models.conversation import chat_messages, for_local_model
from ..models.families import IMAGE_DETAILS
from ..models.manager import GenerationParams, ModelManager, is_endpoint
from ..settings import MAX_NEW_TOKENS, MAX_TEMPERATURE, MIN_TOP_P, PROJECT_ROOT, Settings
from .sharing import shown_text, verbatim
from .users import user_folder

ERROR_MARK = "⚠️ "
STOPPED_NOTE = "⏹ *Stopped: this question and answer are left out of the conversation (its picture stays in it).*"
SESSION_KEY = "vlmchat-chat"  # sessionStorage: the chat a browser tab has open, reopened on reload
# Chat answers (the tab's and /chat) that run at once, together: each holds one of Gradio's 40 worker threads while
# it streams, so a few stay for every other action even when many chats wait on a slow endpoint.
ANSWERS = {"concurrency_id": "chat-answers", "concurrency_limit": 16}
EXAMPLES = PROJECT_ROOT / "examples"
# The first screen's examples (examples/README.md describes the pictures): (question, picture).
CHAT_EXAMPLES = [("Describe the image.", "red-circle.png"), ("What color is the shape?", "blue-square.png"),
                 ("What shape is this?", "green-triangle.png"),
                 ("Describe the image. Answer in Spanish.", "yellow-circle.png"),
                 ("Describe the image.", "grace-hopper.jpg")]
# Examples the demo cannot answer, said on the example: its confident "a red triangle" for a photo read as a broken
# app (outside reviewer).
FOR_REAL_MODELS = {"grace-hopper.jpg": "a photo, for a real model: the demo knows only shapes"}


def example_label(text: str, picture: str) -> str:
    """'Describe the image. (red-circle.png)', and why the demo answers it wrongly where it cannot."""
    return f"{text} ({'; '.join(filter(None, (picture, FOR_REAL_MODELS.get(picture))))})"


def user_turn(message: dict | str | None) -> dict:
    """A chat's user turn from a message {"text", "files": [path or file dict]} (or plain text)."""
    if isinstance(message, str) or message is None:
        message = {"text": message or "", "files": []}
    images = []
    for file in message.get("files") or []:
        path = file if isinstance(file, (str, Path)) else (file.get("path") if isinstance(file, dict) else None)
        if path:
            name = file.get("orig_name") if isinstance(file, dict) else None
            images.append({"path": str(path), "name": name or Path(path).name})
    return {"role": "user", "text": message.get("text") or "", "images": images, "time": now()}


def cached_copies(files) -> list[Path]:
    """The folders where Gradio keeps its copies of `files` (served by /gradio_api/file=): one per content, named by
    its hash, holding the upload and every copy shown or offered for download of that content."""
    from gradio.processing_utils import hash_file
    from gradio.utils import get_upload_folder

    cache = Path(get_upload_folder())
    return [cache / hash_file(file) for file in map(Path, files) if file.is_file()]


def forget_copies(folders) -> None:
    """Remove Gradio's copies in `folders` (from `cached_copies`): a deleted chat's, a replaced export's."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def waiting_for_answer(chat: dict) -> bool:
    """True when the chat ends with a user turn that has no answer yet."""
    return bool(chat["messages"]) and chat["messages"][-1].get("role") == "user"


class ChatTurns:
    """What one chat turn does, shared by the Chat tab and the /chat endpoint (no layout here)."""

    def __init__(self, manager: ModelManager, settings: Settings):
        self.manager, self.settings = manager, settings
        self.max_bytes = settings.server.max_upload_mb * 2**20

    def _said(self, exc: Exception, *typed) -> str:
        """A failed turn's text: it is kept in the chat (and its exports), so it is said as a shared app says
        things (no server folder; what the caller typed as typed)."""
        return shown_text(self.settings, str(exc), tuple(value or "" for value in typed))

    def default_adapter(self) -> str:
        """The adapter a new session (or a request naming none) starts with: the Adapters tab's active one."""
        return self.manager.active_adapter or BASE

    def adapter_for(self, name: str | None) -> str:
        """`name` ('' = the default), attached if needed; InputError if the registry has no such usable adapter."""
        name = (name or "").strip() or self.default_adapter()
        if is_base(name):
            return BASE
        self.manager.attach_named_adapter(name)
        return name

    def store(self, request) -> ChatStore:
        """The saved chats of the request's login (everyone's when the app has no login)."""
        return ChatStore(user_folder(self.settings.paths.resolve("outputs"), request) / "chats")

    def empty_turn(self, status: str) -> dict:
        """An assistant turn with no text yet, of the loaded model."""
        info = self.manager.info
        return {"role": "assistant", "text": "", "status": status, "adapter": None,
                "model": info.shown if info else None, "time": now()}

    def answer(self, chat: dict, adapter: str | None, max_new_tokens=256, temperature=0.0, top_p=1.0,
               seed=-1, stop: threading.Event | None = None, image_detail: str = "") -> Iterator[dict]:
        """Answer the chat's last user turn with `adapter` ('' = the one the chat used last, else the default):
        an assistant turn is appended and yielded as it grows.

        It ends with status "ok" (with tokens, seconds and the adapter used), "error" (its text, starting
        with ERROR_MARK, says what to do) or "stopped" (the reader closed the stream). The first yield is
        the empty turn once the question has been checked, so a caller may save the chat then.
        """
        if not waiting_for_answer(chat):
            return
        turn = self.empty_turn("pending")
        stop = _TurnStop(turn, stop or threading.Event())
        try:
            params = GenerationParams(int(max_new_tokens), float(temperature), float(top_p), int(seed),
                                      image_detail=image_detail or "")
            turn["adapter"] = chat["adapter"] = self.adapter_for(adapter or chat.get("adapter"))
            messages = chat_messages(answered_turns(chat["messages"]), chat.get("system") or "", self.max_bytes)
            if not is_endpoint(turn["adapter"]):
                messages = for_local_model(self.manager, messages, "attach one (📎)")
        except VlmchatError as exc:
            said = self._said(exc, adapter, image_detail)
            if _deleted_elsewhere(chat):  # its pictures went with it: "check the path" meant nothing here
                said = ("This chat was deleted in another tab or window, and its pictures with it; it is kept here as "
                        "a new chat: attach the picture again to go on.")
            turn.update(status="error", text=ERROR_MARK + said)
            chat["messages"].append(turn)
            yield turn
            return
        turn["system"] = chat.get("system") or ""  # the prompt it answered under (the chat keeps only the last)
        chat["messages"].append(turn)
        stream = None
        try:
            yield turn
            stream = self.manager.stream_answer(messages, params, stop,
                                                adapter=None if is_base(turn["adapter"]) else turn["adapter"])
            found = None
            for found in stream:
                if turn["status"] != "pending":  # stopped from outside (the Stop button's handler)
                    break
                turn["text"] = found.text
                if not found.done:
                    yield turn
            if turn["status"] == "pending":
                text = turn["text"].strip()
                if not text:
                    turn.update(status="error", read=True, text=ERROR_MARK + EMPTY_ANSWER)
                else:
                    turn.update(status="ok", text=text, tokens=found.completion_tokens,
                                seconds=round(found.latency_s, 3))
                    if is_endpoint(turn["adapter"]):  # what answered, and what it cost (the record said "demo")
                        turn.update(model=self.manager.endpoint(turn["adapter"]).entry.model, cost_usd=found.cost_usd)
                yield turn
        except VlmchatError as exc:
            if turn["status"] != "pending":  # stopped while an endpoint's answer was awaited: it stays "stopped"
                return  # (the endpoint's later timeout replaced it, and the chat was saved so; API reviewer)
            # the pictures were read (a conversation too long for the model is not sent again with them)
            turn.update(status="error", text=ERROR_MARK + self._said(exc, adapter, image_detail),
                        read=not isinstance(exc, ContextLengthError))
            yield turn
        except GeneratorExit:
            if turn["status"] == "pending":
                turn["status"] = "stopped"
            raise
        finally:
            stop.set()
            if stream is not None:
                stream.close()


class _TurnStop:
    """An answer's stop: `event` set, or its turn no longer pending (the Stop button's handler marks it so, from
    another thread, and the stream sees it while it waits for its next piece)."""

    def __init__(self, turn: dict, event: threading.Event):
        self.turn, self.event = turn, event

    def is_set(self) -> bool:
        return self.event.is_set() or self.turn["status"] != "pending"

    def set(self) -> None:
        self.event.set()


def _deleted_elsewhere(chat: dict) -> bool:
    """True when the saved chat's folder is gone (deleted in another tab) while this tab still shows it."""
    kept = [Path(image["path"]) for message in chat["messages"] for image in message.get("images") or []
            if image.get("path")]
    return bool(chat.get("id")) and any(path.parent.parent.name == chat["id"] and not path.parent.parent.exists()
                                        for path in kept)


def displayed(chat: dict) -> list[tuple[int, dict]]:
    """(index of the chat message, Chatbot message) for each message the Chatbot shows."""
    shown = []
    for index, message in enumerate(chat["messages"]):
        if message.get("role") == "user":
            for image in message.get("images") or []:
                if image.get("path"):
                    shown.append((index, {"role": "user", "content": {"path": image["path"],
                                                                      "alt_text": image.get("name")}}))
                else:
                    shown.append((index, {"role": "user", "content": f"📎 {image.get('name', 'image')} (not kept)"}))
            if message.get("text"):
                shown.append((index, {"role": "user", "content": message["text"]}))
            continue
        text, status = message.get("text") or "", message.get("status")
        if status == "ok" and (stats := stats_line(message)):
            text += f"\n\n<small>{stats}</small>"
        elif status == "stopped":
            text = (text + "\n\n" if text else "") + STOPPED_NOTE
        shown.append((index, {"role": "assistant", "content": text}))
    return shown


def chatbot_value(chat: dict) -> list[dict]:
    """What the Chatbot shows for `chat`."""
    return [message for _, message in displayed(chat)]


def _shown_index(index) -> int:
    """The Chatbot's index of an edited or retried message (a list for grouped messages)."""
    return int(index[0] if isinstance(index, (list, tuple)) else index)


def edit_turn(chat: dict, shown_index, text: str) -> bool:
    """Replace the text of the user turn shown at `shown_index` and drop everything after it; False if
    that message is not a user's text (nothing changes)."""
    shown = displayed(chat)
    position = _shown_index(shown_index)
    if not 0 <= position < len(shown):
        return False
    index, message = shown[position]
    turn = chat["messages"][index]
    if turn.get("role") != "user" or not isinstance(message["content"], str) or message["content"] != turn.get("text"):
        return False
    turn["text"] = text or ""
    _drop_after(chat, index)
    return True


def _drop_after(chat: dict, index: int) -> None:
    """Drop the chat's messages after `index`; an answer among them still being written is stopped first (its
    stream sees the status and ends), else an edit or Retry while it streamed left it running unseen."""
    for message in chat["messages"][index + 1:]:
        if message.get("status") == "pending":
            message["status"] = "stopped"
    del chat["messages"][index + 1:]


def retry_turn(chat: dict, shown_index) -> bool:
    """Drop the answer shown at `shown_index` (and all after it) so its question is answered again."""
    shown = displayed(chat)
    position = _shown_index(shown_index)
    if not 0 <= position < len(shown):
        return False
    index = shown[position][0]
    while index >= 0 and chat["messages"][index].get("role") != "user":
        index -= 1
    if index < 0:
        return False
    _drop_after(chat, index)
    return True


def _label(entry: dict) -> str:
    try:
        when = datetime.fromisoformat(entry["updated"].replace("Z", "+00:00")).astimezone().strftime("%d %b %H:%M")
    except ValueError:
        when = ""
    return f"{entry['title']} · {when}" if when else entry["title"]


def build_chat_tab(manager: ModelManager, settings: Settings, adapters) -> None:
    """Lay out the Chat tab inside the current Blocks (and the /chat API endpoint)."""
    turns = ChatTurns(manager, settings)
    gen = settings.generation

    def adapter_choices() -> list[str]:
        """Base, every adapter that fits the loaded model (also one made since start-up), every endpoint."""
        return manager.model_choices() or [BASE]

    chat = gr.State(new_chat())
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=220):
            new_button = gr.Button("New chat", variant="primary", size="sm")
            chat_list = gr.Radio(choices=[], label="Saved chats (newest first)", elem_id="vlmchat-chat-list")
            # Under the list, above the buttons that answer to it: below them, an export's file box pushed it
            # out of the window (a blank Rename looked as if nothing happened: UI tester).
            list_note = gr.Markdown(elem_id="vlmchat-chat-note")
            with gr.Accordion("Rename, delete, export", open=False):
                title = gr.Textbox(label="Title", max_lines=1, elem_id="vlmchat-chat-title")
                rename_button = gr.Button("Rename", size="sm")
                delete_button = gr.Button("Delete this chat", size="sm", variant="stop")
                with gr.Row(visible=False) as confirm_row:
                    confirm_button = gr.Button("Yes, delete it", size="sm", variant="stop")
                    cancel_button = gr.Button("Keep it", size="sm")
                with gr.Row():
                    markdown_button = gr.Button("Export Markdown", size="sm")
                    json_button = gr.Button("Export JSON", size="sm")
                exported = gr.File(label="Export", interactive=False)
            chat_id = gr.Textbox(visible="hidden", max_lines=1, elem_id="vlmchat-chat-id")
        with gr.Column(scale=4):
            # The adapter and the settings share a row, and the chat's height follows the window: on a laptop's
            # 1366 x 650 the question box was at y = 955, below the window (UI tester, at 800 x 700).
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=340):
                    adapter = gr.Dropdown(choices=adapter_choices(), value=turns.default_adapter(),
                                          label="Adapter or endpoint (base = none; this tab only)",
                                          allow_custom_value=True, elem_id="vlmchat-chat-adapter")
                    adapter_note = gr.Markdown(elem_id="vlmchat-chat-adapter-note")
                with gr.Column(scale=3):
                    with gr.Accordion("System prompt and generation settings", open=False):
                        system = gr.Textbox(label="System prompt", lines=2, elem_id="vlmchat-system",
                                            placeholder="Optional: how the model should answer (sent before the "
                                                        "chat).")
                        with gr.Row():
                            max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=gen.max_new_tokens, step=1,
                                                       label="Max new tokens")
                            temperature = gr.Slider(0.0, MAX_TEMPERATURE, value=gen.temperature, step=0.05,
                                                    label="Temperature (0 = greedy)")
                            top_p = gr.Slider(MIN_TOP_P, 1.0, value=gen.top_p, step=0.01, label="Top-p")
                            seed = gr.Number(value=gen.seed, precision=0, label="Seed (-1 = random)")
                            image_detail = gr.Radio(list(IMAGE_DETAILS), value=gen.image_detail,
                                                    label="Image detail", elem_id="vlmchat-image-detail",
                                                    info="low: fewer image tokens, fast on a CPU; auto: by device and "
                                                         "memory (the Model line says why)")
            chatbot = gr.Chatbot(
                height="max(200px, calc(100vh - 480px))", label="Chat", editable="user", elem_id="vlmchat-chatbot",
                group_consecutive_messages=False,
                buttons=["copy", "copy_all"],  # no "share": it works only on Hugging Face Spaces
                examples=[{"text": text, "files": [str(EXAMPLES / picture)],
                           "display_text": example_label(text, picture)}
                          for text, picture in CHAT_EXAMPLES
                          if (EXAMPLES / picture).is_file()])
            textbox = gr.MultimodalTextbox(file_types=["image"], file_count="multiple", sources=["upload"],
                                           placeholder="Attach an image and ask about it…", show_label=False,
                                           submit_btn=True, stop_btn=False, elem_id="vlmchat-chat-input")

    adapter.focus(lambda: gr.update(choices=adapter_choices()), outputs=adapter, api_visibility="undocumented",
                  queue=False)

    def pick_adapter(name: str) -> str:
        try:
            name = turns.adapter_for(name)
        except VlmchatError as exc:
            return ERROR_MARK + str(exc)
        return f"This chat now answers with **{name}** (this browser tab only)."

    adapter.input(pick_adapter, adapter, adapter_note, api_visibility="undocumented")

    def listed(request: gr.Request, current: str | None = None):
        entries = turns.store(request).list()
        count = f"{len(entries)} saved" if entries else "none saved yet"
        return gr.update(choices=[(_label(e), e["id"]) for e in entries], value=current,
                         info=f"{count}; every chat is saved as it goes")

    def opened(state: dict, request: gr.Request, note: str = ""):
        """Every output that shows a chat: chatbot, state, list, title, system, chat id, note, and the export box
        emptied (it offered a deleted or another chat's file)."""
        return (chatbot_value(state), state, listed(request, state["id"]), state.get("title") or "",
                state.get("system") or "", state["id"] or "", note, None)

    shows = [chatbot, chat, chat_list, title, system, chat_id, list_note, exported]

    def on_load(remembered: str, state: dict, request: gr.Request):
        """A page (re)loads: reopen the chat this browser tab had open, else start a new one with the default
        adapter (a chat already begun in this session, e.g. by a quick click, is kept)."""
        if state["messages"] or state["id"]:
            return (gr.update(choices=adapter_choices()), *opened(state, request))
        if not remembered:  # a new tab: its chat is the fresh one it has; sent anyway, this replaced a chat an
            # example clicked at once had begun, when the click's event ran first, and the click was lost (tester)
            return (gr.update(choices=adapter_choices(), value=turns.default_adapter()), gr.skip(), gr.skip(),
                    listed(request), *[gr.skip()] * 5)
        try:
            state = turns.store(request).load(remembered)
        except VlmchatError:
            state = new_chat()
        choice = state.get("adapter") if state["id"] and state.get("adapter") else turns.default_adapter()
        return (gr.update(choices=adapter_choices(), value=choice), *opened(state, request))

    root = gr.context.Context.root_block
    root.load(on_load, [chat_id, chat], [adapter, *shows], api_visibility="undocumented", queue=False,
              js=f"(id, state) => [sessionStorage.getItem('{SESSION_KEY}') || '', state]")
    chat_id.change(None, chat_id, None,
                   js=f"(id) => {{ sessionStorage.setItem('{SESSION_KEY}', id || ''); return []; }}")

    def open_chat(chat_id_: str, request: gr.Request):
        try:
            state = turns.store(request).load(chat_id_)
        except VlmchatError as exc:
            return (gr.update(), *opened(new_chat(), request, ERROR_MARK + str(exc)))
        return (gr.update(value=state["adapter"]) if state.get("adapter") else gr.update(), *opened(state, request))

    def start_new(system_prompt: str, request: gr.Request):
        return opened(new_chat(system_prompt or ""), request)

    def rename(state: dict, new_title: str, request: gr.Request):
        if not state["id"]:
            return opened(state, request, "Send a message first: a chat is saved once it has one.")
        try:
            saved = turns.store(request).rename(state["id"], new_title)
        except VlmchatError as exc:
            return opened(state, request, ERROR_MARK + str(exc))
        state.update(title=saved["title"], renamed=True, revision=saved["revision"])
        cut = (f" (cut to its first {len(saved['title'])} characters)" if " ".join(new_title.split()) != saved["title"]
               else "")
        # a title is text, not markup
        return opened(state, request, f"Renamed to “{html.escape(saved['title'])}”{cut}.")

    rename_button.click(rename, [chat, title], shows, api_visibility="undocumented", queue=False)
    delete_button.click(lambda state: (gr.update(visible=bool(state["id"])),
                                       "" if state["id"] else "No chat is open: open one in the list to delete it."),
                        chat, [confirm_row, list_note], api_visibility="undocumented", queue=False)
    cancel_button.click(lambda: gr.update(visible=False), None, confirm_row, api_visibility="undocumented", queue=False)

    def delete(state: dict, request: gr.Request):
        note = ""
        if state["id"]:
            try:
                store = turns.store(request)
                copies = cached_copies(store.own_files(state["id"]))  # before their content is gone
                store.delete(state["id"])
                forget_copies(copies)
                note = f"Deleted “{html.escape(state.get('title') or 'the chat')}”."
            except VlmchatError as exc:
                note = ERROR_MARK + str(exc)
        return (gr.update(visible=False), *opened(new_chat(state.get("system") or ""), request, note))

    confirm_button.click(delete, chat, [confirm_row, *shows], api_visibility="undocumented", queue=False)

    def export(state: dict, kind: str, request: gr.Request):
        if not state["id"]:
            return None, "Send a message first: there is nothing to export yet."
        try:
            store = turns.store(request)
            exports = (store.path(state["id"]) / "export").glob("*")
            before = set(cached_copies(exports))
            path = store.export(state["id"], kind)
            forget_copies(before - set(cached_copies(path.parent.glob("*"))))  # what an export replaced
            return str(path), ""
        except VlmchatError as exc:
            return None, ERROR_MARK + str(exc)

    for button, kind in ((markdown_button, "markdown"), (json_button, "json")):
        def export_as(state: dict, request: gr.Request, kind: str = kind):
            return export(state, kind, request)
        button.click(export_as, chat, [exported, list_note], api_visibility="undocumented")

    # ---- a turn: take the message (at once), then answer it (queued, streamed) ----

    def take_message(message: dict, state: dict, shown_id: str, request: gr.Request):
        message = message or {}
        if not (message.get("text") or "").strip() and not message.get("files"):  # nothing to send
            return gr.update(), chatbot_value(state), state
        if shown_id and not state["id"] and not state["messages"]:
            # The page shows a saved chat but this session does not know it: the app restarted under an open tab.
            try:
                state = turns.store(request).load(shown_id)
            except VlmchatError:
                pass
        state["messages"].append(user_turn(message))
        busy = gr.update(value=None, interactive=False, submit_btn=False, stop_btn=True)
        return busy, chatbot_value(state), state

    def respond(state: dict, adapter_name: str, max_new_tokens_: float, temperature_: float, top_p_: float,
                seed_: float, system_prompt: str, detail: str, request: gr.Request):
        """Stream the answer to the chat's last question into the Chatbot, saving the chat as it goes."""
        if not waiting_for_answer(state):
            yield chatbot_value(state), state, gr.skip(), gr.skip(), gr.skip()
            return
        state["system"] = system_prompt or ""
        store = turns.store(request)
        answer = turns.answer(state, adapter_name, max_new_tokens_, temperature_, top_p_, seed_, image_detail=detail)
        # The title box is sent only when the title changes (a new chat's first save, a rename in another tab):
        # Gradio sends a stream's last outputs again when it ends, and a title sent there wrote the old one over
        # what the person had begun typing in the box as the answer ended.
        shown = state.get("title") or ""
        try:
            for count, turn in enumerate(answer):
                if count == 0 or turn["status"] != "pending":
                    store.save(state)
                    title_out = gr.skip() if state["title"] == shown else state["title"]
                    shown = state["title"]
                    yield chatbot_value(state), state, listed(request, state["id"]), state["id"], title_out
                else:
                    yield chatbot_value(state), state, gr.skip(), gr.skip(), gr.skip()
        except GeneratorExit:
            answer.close()
            store.save(state)
            raise

    answer_outputs = [chatbot, chat, chat_list, chat_id, title]
    answer_inputs = [chat, adapter, max_new_tokens, temperature, top_p, seed, system, image_detail]
    idle = dict(fn=lambda: gr.update(interactive=True, submit_btn=True, stop_btn=False), inputs=None, outputs=textbox,
                api_visibility="undocumented", queue=False)
    # Clear the file input itself: picking the same file again would otherwise not count as a change.
    reset_files = ("(message, state, id) => { document.querySelectorAll('#vlmchat-chat-input input[type=file]')"
                   ".forEach(i => { i.value = ''; }); return [message, state, id]; }")
    taken = textbox.submit(take_message, [textbox, chat, chat_id], [textbox, chatbot, chat],
                           api_visibility="undocumented", queue=False, js=reset_files)
    # Answers run at once, not one per queue slot: a local one joins the model's batcher (which batches the
    # answers that arrive together; server.max_queue bounds them), an endpoint's waits only on that server.
    # Only the Chatbot shows the answer's progress: an overlay on the saved list would keep it from being clicked
    # while an answer streams (leaving for another chat stops the answer, below).
    answer_event = dict(api_visibility="undocumented", show_progress_on=chatbot, **ANSWERS)
    answering = [taken.then(respond, answer_inputs, answer_outputs, **answer_event)]
    answering[0].then(**idle)

    def on_edit(state: dict, edit: gr.EditData):
        edit_turn(state, edit.index, edit.value if isinstance(edit.value, str) else str(edit.value or ""))
        return chatbot_value(state), state

    def on_retry(state: dict, retry: gr.RetryData):
        retry_turn(state, retry.index)
        return chatbot_value(state), state

    def on_example(state: dict, system_prompt: str, example: gr.SelectData):
        value = example.value if isinstance(example.value, dict) else {"text": str(example.value)}
        fresh = new_chat(system_prompt or "")
        fresh["messages"].append(user_turn({"text": value.get("text") or "", "files": value.get("files") or []}))
        return chatbot_value(fresh), fresh, gr.update(interactive=False, submit_btn=False, stop_btn=True)

    for trigger in (chatbot.edit(on_edit, chat, [chatbot, chat], api_visibility="undocumented", queue=False),
                    chatbot.retry(on_retry, chat, [chatbot, chat], api_visibility="undocumented", queue=False),
                    chatbot.example_select(on_example, [chat, system], [chatbot, chat, textbox],
                                           api_visibility="undocumented", queue=False)):
        event = trigger.then(lambda: gr.update(interactive=False, submit_btn=False, stop_btn=True), None, textbox,
                             api_visibility="undocumented", queue=False).then(
            respond, answer_inputs, answer_outputs, **answer_event)
        answering.append(event)
        event.then(**idle)

    def stop_answer(state: dict, request: gr.Request):
        messages = state["messages"]
        if messages and messages[-1].get("role") == "assistant" and messages[-1].get("status") == "pending":
            messages[-1]["status"] = "stopped"
            turns.store(request).save(state)
        elif waiting_for_answer(state):  # stopped while still queued: the answer never began
            messages.append(turns.empty_turn("stopped"))
            turns.store(request).save(state)
        return chatbot_value(state), state

    textbox.stop(stop_answer, chat, [chatbot, chat], cancels=answering, api_visibility="undocumented",
                 queue=False).then(**idle).then(chatbot_value, chat, chatbot, api_visibility="undocumented",
                                                queue=False)

    # Leaving a chat while its answer streams (New chat, the chat's clear button, another saved chat) stops that
    # answer and keeps what it said in the chat it belongs to; else the stream went on drawing the old chat.
    def leave_for_new(state: dict, system_prompt: str, request: gr.Request):
        stop_answer(state, request)
        return start_new(system_prompt, request)

    def leave_for_saved(state: dict, chat_id_: str, request: gr.Request):
        stop_answer(state, request)
        return open_chat(chat_id_, request)

    for trigger, action, inputs, outputs in ((new_button.click, leave_for_new, system, shows),
                                             (chatbot.clear, leave_for_new, system, shows),
                                             (chat_list.input, leave_for_saved, chat_list, [adapter, *shows])):
        trigger(action, [chat, inputs], outputs, cancels=answering, api_visibility="undocumented",
                queue=False).then(**idle).then(chatbot_value, chat, chatbot, api_visibility="undocumented",
                                               queue=False)

    # ---- the /chat API endpoint: the same turn, the conversation kept in the client's session ----
    with gr.Row(visible=False):
        # No file_types: Gradio would refuse a file it cannot type by name ("Invalid file type: None") before
        # the turn's loader could say what the file is and what to do, as an answer starting with ⚠️.
        api_message = gr.MultimodalTextbox(file_count="multiple", label="message")
        api_message.value = None  # a required parameter: no default message
        api_adapter = gr.Textbox(value="", label="adapter")
        api_system = gr.Textbox(value="", label="system_prompt")
        api_detail = gr.Textbox(value="", label="image_detail")
        api_answer = verbatim(gr.Textbox(label="answer"))  # an error in it is said as ChatTurns._said says it
        api_button = gr.Button("chat")
    api_chat = gr.State(new_chat())

    def chat_api(message, max_new_tokens, temperature, top_p, seed, adapter="", system_prompt="", image_detail="",
                 state=None):
        """Answer `message` ({"text", "files"}) in this session's conversation; `adapter` '' = the one this
        session used last, else the default (the Adapters tab's active one, else base); `system_prompt` is
        sent before the conversation; `image_detail` low / auto / high ('' = settings.toml's)."""
        state = state or new_chat()
        state["system"] = system_prompt or ""
        state["messages"].append(user_turn(message))
        for turn in turns.answer(state, adapter, max_new_tokens, temperature, top_p, seed, image_detail=image_detail):
            yield turn["text"], state

    api_button.click(chat_api, [api_message, max_new_tokens, temperature, top_p, seed, api_adapter, api_system,
                                api_detail, api_chat], [api_answer, api_chat], api_name="chat", **ANSWERS,
                     api_description="Chat about images: message {'text', 'files'} -> the answer text; optional "
                                     "adapter ('' = the default adapter), system_prompt and image_detail (low / auto / high).")
