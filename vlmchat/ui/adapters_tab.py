"""The Adapters tab (list, load, activate, import, export, rename, delete) and the Compare tab."""

from __future__ import annotations

import functools

import threading
from pathlib import Path

import gradio as gr

from ..lora import store as registry
from ..evaluate.compare import (NO_IMAGE, TALLY_HEADERS, VOTES, compare_stream, figures, new_comparison,
                                read_votes, record_vote, tally)
from ..errors import InputError, VlmchatError
from ..images import load_image
from ..lora.runtime import BASE, is_base
from ..models.manager import GenerationParams, ModelManager
from ..settings import Settings
from .chat_tab import CHAT_EXAMPLES, EXAMPLES
from .errors import said
from .sharing import refuse_server_paths, shown_text, verbatim
from .users import login_of, refuse_anothers_adapter, user_folder

COLUMNS = ["name", "status", "base model", "created", "trained on", "metrics", "notes"]
DEFAULT_GONE = " It was the default: new chats now start with the base model."


class AdapterActions:
    """What the Adapters and Compare tabs do, kept free of layout so the API endpoints share it."""

    def __init__(self, manager: ModelManager, settings: Settings):
        self.manager, self.settings = manager, settings
        self.folder = settings.paths.resolve("adapters")

    def _model(self):
        info = self.manager.info
        if info is None:
            raise gr.Error("No model is loaded; load one in the Model tab first.")
        return info.model_id, info.source, info.architecture

    def status(self, adapter: registry.AdapterInfo) -> str:
        """'default' (what new chats start with), 'loaded', 'available' or 'disabled: why'."""
        reason = registry.incompatibility(adapter, *self._model()) if self.manager.info else adapter.problem
        if reason:
            return f"disabled: {reason}"
        if adapter.name == self.manager.active_adapter:
            return "default"
        return "loaded" if adapter.name in self.manager.adapter_names() else "available"

    def table(self) -> list[list[str]]:
        rows = []
        for a in registry.list_adapters(self.folder):
            trained_on = a.dataset.get("name", "") if isinstance(a.dataset, dict) else str(a.dataset)
            metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in (a.metrics or {}).items() if not isinstance(v, (dict, list)))
            rows.append([a.name, self.status(a), a.base_model, a.created, trained_on, metrics, a.notes])
        return rows

    def names(self) -> list[str]:
        """Every adapter folder's name (usable or not)."""
        return [a.name for a in registry.list_adapters(self.folder)]

    def load(self, name: str) -> str:
        if is_base(name):
            raise gr.Error("Choose an adapter first.")
        try:
            self.manager.attach_named_adapter(name)
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None
        return f"Loaded '{name}' (resident: {', '.join(self.manager.adapter_names())})."

    def activate(self, name: str) -> str:
        """Make `name` the default adapter: what new Chat sessions start with and what API calls naming no
        adapter use. Open chats keep the adapter their own menu shows."""
        if is_base(name):
            self.manager.activate_adapter(None)
            return ("New chats (and API calls that name no adapter) now start with the base model; "
                    "chats already open keep their own adapter.")
        if name not in self.manager.adapter_names():
            self.load(name)
        self.manager.activate_adapter(name)
        return (f"New chats (and API calls that name no adapter) now start with adapter '{name}'; "
                "chats already open keep their own adapter.")

    def is_default(self, name: str) -> bool:
        """True when `name` is the adapter new chats start with."""
        return bool(name) and name == self.manager.active_adapter

    def unload(self, name: str) -> str:
        resident = self.manager.adapter_names()
        if name not in resident:  # it said "Unloaded 'x'." of one never loaded
            return f"'{name}' is not loaded; nothing to unload (resident: {', '.join(resident) or 'none'})."
        was_default = self.is_default(name)
        self.manager.unload_adapter(name)
        return f"Unloaded '{name}'." + (DEFAULT_GONE if was_default else "")

    def ensure_loaded(self, name: str) -> None:
        try:
            self.manager.attach_named_adapter(name)
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None


def build_adapters_tab(actions: AdapterActions, settings: Settings) -> None:
    """Lay out the Adapters tab inside the current Blocks."""
    # widths of the panel, wrapped: the metrics' one long line made the table 2,868 px wide in a 1,214 px panel, its
    # notes off-screen (outside reviewer)
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, label="Adapters",
                         column_widths=["12%", "10%", "14%", "10%", "10%", "32%", "12%"])
    gr.context.Context.root_block.load(actions.table, outputs=table, api_name="table", queue=False)
    with gr.Row():
        choice = gr.Dropdown(choices=actions.names(), label="Adapter", allow_custom_value=True)
        refresh = gr.Button("Refresh", size="sm")
    choice.focus(lambda: gr.update(choices=actions.names()), outputs=choice, api_visibility="undocumented", queue=False)
    with gr.Row():
        load, activate, deactivate, unload = (gr.Button(x) for x in ("Load", "Activate", "Use base", "Unload"))
    message = gr.Markdown()
    with gr.Accordion("Import, export, rename, delete", open=False):
        with gr.Row():
            new_name = gr.Textbox(label="Name for the imported adapter (optional)")
            shared = settings.server.exposed  # others may only upload: no folder of this computer is offered
            folder = gr.Textbox(label="Import from a folder on this computer", visible=not shared)
            upload = gr.File(label="Import a zip" if shared else "…or import a zip", file_types=[".zip"])
            hub_id = gr.Textbox(label="…or a hub id (owner/name)")
        import_button = gr.Button("Import")
        with gr.Row():
            export_button = gr.Button("Export as zip")
            exported = gr.File(label="Exported adapter", interactive=False)
        with gr.Row():
            rename_to = gr.Textbox(label="Rename to")
            rename_button = gr.Button("Rename")
        with gr.Row():
            confirm = gr.Textbox(label="Type the adapter's name to confirm deletion")
            delete_button = gr.Button("Delete", variant="stop")
        # said beside these buttons: on the line above the accordion, 670 px up, a Rename refused looked silent
        managed = gr.Markdown(elem_id="vlmchat-adapters-managed")

    def refreshed(note: str = "", **selected):
        """[table, menu, message] after an action; `value=`: what the menu shows now (a renamed or deleted adapter
        stayed chosen under its old name, and Load then said there was no such adapter)."""
        return actions.table(), gr.update(choices=actions.names(), **selected), note

    def told(action):
        """`action` for the buttons whose outputs are [table, choice, a message line]: a mistake is said on the message
        line with what to do, and the table and menu stay as they are (not replaced by Gradio's Error badges).
        Its signature is kept: Gradio hands a `request` only to a handler whose signature asks for it (rename and
        delete got none, so every login's own adapters read as "trained by another login")."""
        @functools.wraps(action)
        def wrapped(*args, **kwargs):
            try:
                return action(*args, **kwargs)
            except (VlmchatError, gr.Error) as exc:
                return gr.skip(), gr.skip(), f"⚠️ {said(exc)}"
        return wrapped

    outputs = [table, choice, message]
    refresh.click(lambda: refreshed(), outputs=outputs, api_visibility="undocumented")
    for button, action in ((load, actions.load), (activate, actions.activate), (unload, actions.unload)):
        button.click(told(lambda n, a=action: refreshed(a(n))), inputs=choice, outputs=outputs,
                     api_visibility="undocumented")
    deactivate.click(told(lambda: refreshed(actions.activate(BASE))), outputs=outputs, api_visibility="undocumented")

    @told
    def do_import(name, path, zipped, repo_id, request: gr.Request = None):
        owner = user_folder(Path("."), request).name if login_of(request) else ""  # the importer's, or everyone's
        given = [what for what, value in (("a zip", zipped), ("a hub id", repo_id), ("a folder", path)) if value]
        if len(given) > 1:  # one was imported and the other left, silently
            raise gr.Error(f"Give one thing to import; {' and '.join(given)} were given. Clear the others.")
        if zipped:
            info = registry.import_zip(zipped, actions.folder, name or None, owner)
        elif repo_id:
            info = registry.import_from_hub(repo_id, actions.folder, name or None, owner=owner)
        elif path:
            refuse_server_paths(settings, "adapter import")
            info = registry.import_folder(path, actions.folder, name or None, owner)
        else:
            raise gr.Error("Upload a zip or give a hub id to import." if settings.server.exposed else
                           "Give a folder, a zip or a hub id to import.")
        state = actions.status(info)  # as the table shows it
        return refreshed(f"Imported '{info.name}'." + (f" It does not fit the loaded model, so it is listed as "
                                                       f"{state}." if state.startswith("disabled") else ""))

    managing = [table, choice, managed]
    import_button.click(do_import, [new_name, folder, upload, hub_id], managing, api_visibility="undocumented")

    def export(name: str, request: gr.Request = None):
        try:
            refuse_anothers_adapter(actions.folder, name, request, "export")
            shown = (lambda text: shown_text(settings, text)) if settings.server.exposed else None  # no server path
            return str(registry.export_zip(actions.folder, name, settings.paths.resolve("outputs"), shown)), ""
        except (VlmchatError, gr.Error) as exc:
            return None, f"⚠️ {said(exc)}"

    export_button.click(export, choice, [exported, managed], api_visibility="undocumented")

    def rename(name: str, to: str, request: gr.Request = None):
        refuse_anothers_adapter(actions.folder, name, request, "rename")
        was_default = actions.is_default(name)
        renamed = registry.rename_adapter(actions.folder, name, to).name
        actions.unload(name)  # resident under its old name, it would still answer to it
        if was_default:  # the default follows the adapter to its new name
            actions.activate(renamed)
            return refreshed(f"Renamed to '{renamed}' (still the default for new chats; a chat open on "
                             f"'{name}' needs '{renamed}' chosen in its menu).", value=renamed)
        return refreshed(f"Renamed to '{renamed}'.", value=renamed)

    def delete(name: str, confirmation: str, request: gr.Request = None):
        refuse_anothers_adapter(actions.folder, name, request, "delete")
        was_default = actions.is_default(name)
        registry.delete_adapter(actions.folder, name, confirmation)
        actions.unload(name)
        return refreshed(f"Deleted '{name}'." + (DEFAULT_GONE if was_default else ""), value=None)

    rename_button.click(told(rename), [choice, rename_to], managing, api_visibility="undocumented")
    delete_button.click(told(delete), [choice, confirm], managing, api_visibility="undocumented")

    def list_adapters() -> list[str]:
        """Names of the adapters in the adapters folder."""
        return actions.names()

    gr.api(list_adapters, api_name="list_adapters")

    def activate_adapter(name: str) -> str:
        """Load (if needed) and make an adapter the default: new Chat sessions start with it and /chat calls
        that name no adapter use it ('base' or '' = none); open chats keep their own."""
        return actions.activate(name)

    gr.api(activate_adapter, api_name="activate_adapter")


def said_vote(entry: dict) -> str:
    """A recorded vote in words: 'demo-es (right) is better than base'."""
    left, right = f"**{entry['left']}** (left)", f"**{entry['right']}** (right)"
    return {"left": f"{left} is better than {right}", "right": f"{right} is better than {left}",
            "tie": f"a tie between {left} and {right}"}.get(entry["vote"], f"both bad: {left} and {right}")


def compare_sides(manager: ModelManager) -> tuple[list[str], str]:
    """(every model Compare can name, the right side's default: the newest adapter that fits, else the next choice)."""
    sides = manager.model_choices() or [BASE]
    created = {a.name: a.created for a in registry.list_adapters(manager.settings.paths.resolve("adapters"))}
    adapters = [side for side in sides if side in created]
    if adapters:
        return sides, max(adapters, key=lambda name: _moment(created[name]))
    return sides, sides[1] if len(sides) > 1 else BASE


def _moment(created: str) -> float:
    """An adapter's ISO creation time as a number (0 when unreadable); offsets differ, so strings do not sort."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(created)
    except ValueError:
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def build_compare_tab(actions: AdapterActions, manager: ModelManager, settings: Settings) -> None:
    """Lay out the Compare tab: one picture and question, two sides, one vote per comparison
    (outputs/compare_votes.jsonl; with a login, the login's own under outputs/users/<name>/) and the
    tally of the votes so far."""
    def log(request) -> Path:
        return user_folder(settings.paths.resolve("outputs"), request) / "compare_votes.jsonl"

    max_bytes = settings.server.max_upload_mb * 2**20
    sides, newest = compare_sides(manager)
    with gr.Row():
        image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload"], height=280,
                         elem_id="vlmchat-compare-image")
        with gr.Column():
            prompt = gr.Textbox(value="Describe the image.", label="Prompt")
            seed = gr.Number(value=0, precision=0, label="Seed (same for both sides)")
            with gr.Row():  # any model choice, also an adapter trained since the page was built (checked on use)
                left = gr.Dropdown(choices=sides, value=BASE, label="Left", allow_custom_value=True)
                right = gr.Dropdown(choices=sides, value=newest, label="Right", allow_custom_value=True)
            run = gr.Button("Compare", variant="primary")
    examples = [[str(EXAMPLES / picture), text] for text, picture in CHAT_EXAMPLES[:3]
                if (EXAMPLES / picture).is_file()]
    example_list = gr.Examples(examples, [image, prompt], label="Examples (click one to compare)")
    for side in (left, right):
        side.focus(lambda: gr.update(choices=manager.model_choices() or [BASE]), outputs=side,
                   api_visibility="undocumented", queue=False)
    with gr.Row():
        left_text = verbatim(gr.Textbox(label="Left answer", lines=6, interactive=False))
        right_text = verbatim(gr.Textbox(label="Right answer", lines=6, interactive=False))
    cost = gr.Markdown(label="Time, tokens and cost", elem_id="vlmchat-compare-figures")
    with gr.Row():
        # Nothing to vote on until a comparison has finished: a vote clicked while the answers still streamed
        # was refused with a message, the answers on screen.
        vote_buttons = [gr.Button(f"{v.capitalize()} is better" if v in ("left", "right") else v.capitalize(),
                                  interactive=False) for v in VOTES]
    voted = gr.Markdown(elem_id="vlmchat-compare-voted")
    with gr.Accordion("Votes so far", open=False):
        standings = gr.Dataframe(headers=TALLY_HEADERS, interactive=False,
                                 elem_id="vlmchat-compare-tally",
                                 label="Per side: wins, losses and ties (one vote per comparison)")
    comparison = gr.State(None)  # the last comparison of this session, what a vote is about

    def compare_tally(request: gr.Request = None) -> list[list]:
        """Wins, losses and ties per side (base or adapter), one vote per comparison (this login's own)."""
        return tally(read_votes(log(request)))

    gr.context.Context.root_block.load(compare_tally, outputs=standings, api_name="compare_tally", queue=False)
    # each page opens on base vs the newest adapter: the one just trained, not the first by name
    def newest_right():
        choices, value = compare_sides(manager)
        return gr.update(choices=choices, value=value)

    gr.context.Context.root_block.load(newest_right, outputs=right, api_visibility="undocumented", queue=False)

    def compare(image, prompt, left, right, seed=0):
        """Answers of `left` and `right` ('base' or adapter names) to one image and prompt."""
        stop = threading.Event()
        try:
            if not image:
                raise InputError(NO_IMAGE)
            left, right, seed = left or BASE, right or BASE, int(seed or 0)
            picture = load_image(image, max_bytes=max_bytes)
            actions.ensure_loaded(left)
            actions.ensure_loaded(right)
            params = GenerationParams(max_new_tokens=settings.generation.max_new_tokens, seed=seed)
            record = new_comparison(image, prompt or "", left, right, seed,
                                    model=manager.info.shown if manager.info else None,
                                    max_new_tokens=params.max_new_tokens)
            for left_answer, right_answer in compare_stream(manager, picture, prompt or "", left, right, params, stop):
                yield left_answer.text, right_answer.text, None
            left_text, right_text = left_answer.text.strip(), right_answer.text.strip()
            if "error" in (left_answer.finish_reason, right_answer.finish_reason):  # nothing to vote on; the side
                worked = [figures(a) for a in (left_answer, right_answer) if a.finish_reason != "error"]  # that
                yield left_text, right_text, {"figures": " · ".join(worked)} if worked else None  # answered: its cost
                return
            yield left_text, right_text, record | {"left_text": left_text, "right_text": right_text,
                                                   "figures": f"{figures(left_answer)} · {figures(right_answer)}"}
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None
        finally:
            stop.set()

    def cleared():
        """No answers, figures or vote on screen, and nothing to vote on, until the new comparison has finished
        (a comparison that fails leaves nothing a vote could be counted for, nor the last one's figures)."""
        return "", "", None, "", "", *[gr.update(interactive=False) for _ in vote_buttons]

    shown = [left_text, right_text, comparison, voted, cost, *vote_buttons]
    # No validator: compare() says what is wrong (a validator's failing image preprocessing came back as a
    # bare HTTP 400 without a message).
    # always_last: a second example clicked while the first still ran was dropped, its picture shown beside the
    # first one's answers (verifying reviewer); now it runs when the first is done
    run.click(cleared, None, shown, api_visibility="undocumented", queue=False).then(
        compare, [image, prompt, left, right, seed], [left_text, right_text, comparison], api_name="compare",
        trigger_mode="always_last")

    def votable(record):
        """The comparison's figures, and the vote buttons enabled only for a finished comparison."""
        done = bool(record and "left_text" in record)
        return (record or {}).get("figures", ""), *[gr.update(interactive=done) for _ in vote_buttons]

    comparison.change(votable, comparison, [cost, *vote_buttons], api_visibility="undocumented", queue=False)
    for side in (left, right):  # the answers shown are no longer the sides the menus name: a vote for "Left" went to
        side.input(cleared, None, shown, api_visibility="undocumented", queue=False)  # the old left (reviewer)
    for changed in (image.upload, image.clear):  # nor the picture; and Compare pressed with no picture left Gradio's
        changed(cleared, None, shown, api_visibility="undocumented", queue=False)  # Error badges on both answers
    example_list.load_input_event.then(cleared, None, shown, api_visibility="undocumented", queue=False).then(
        compare, [image, prompt, left, right, seed], [left_text, right_text, comparison],
        api_visibility="undocumented", trigger_mode="always_last")  # a clicked example runs at once

    for button, vote in zip(vote_buttons, VOTES):
        def on_vote(record, request: gr.Request, vote=vote):
            try:
                entry = record_vote(log(request), vote, record)
            except VlmchatError as exc:
                return f"⚠️ {exc}", gr.skip()
            same = (" A side compared with itself counts for nothing in *Votes so far*."
                    if entry["left"] == entry["right"] else "")
            return (f"Recorded: {said_vote(entry)} (one vote per comparison: voting again replaces it).{same}"
                    ), compare_tally(request)
        button.click(on_vote, comparison, [voted, standings], api_visibility="undocumented")
