"""The Adapters tab (list, load, activate, import, export, rename, delete) and the Compare tab."""

from __future__ import annotations

import threading

import gradio as gr

from ..lora import store as registry
from ..evaluate.compare import VOTES, compare_stream, record_vote
from ..errors import VlmchatError
from ..lora.runtime import BASE, is_base
from ..models.manager import GenerationParams, ModelManager
from ..settings import Settings
from .sharing import refuse_server_paths

COLUMNS = ["name", "status", "base model", "created", "trained on", "metrics", "notes"]


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
        """'active', 'loaded', 'available' or 'disabled: why'."""
        reason = registry.incompatibility(adapter, *self._model()) if self.manager.info else adapter.problem
        if reason:
            return f"disabled: {reason}"
        if adapter.name == self.manager.active_adapter:
            return "active"
        return "loaded" if adapter.name in self.manager.adapter_names() else "available"

    def table(self) -> list[list[str]]:
        rows = []
        for a in registry.list_adapters(self.folder):
            trained_on = a.dataset.get("name", "") if isinstance(a.dataset, dict) else str(a.dataset)
            metrics = ", ".join(f"{k}={v}" for k, v in (a.metrics or {}).items())
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
        if is_base(name):
            self.manager.activate_adapter(None)
            return "Chat now uses the base model (no adapter)."
        if name not in self.manager.adapter_names():
            self.load(name)
        self.manager.activate_adapter(name)
        return f"Chat now uses adapter '{name}'."

    def unload(self, name: str) -> str:
        self.manager.unload_adapter(name)
        return f"Unloaded '{name}'."

    def ensure_loaded(self, name: str) -> None:
        try:
            self.manager.attach_named_adapter(name)
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None


def _guard(action):
    """Run an action; VlmchatErrors become gr.Error with their message."""
    def wrapped(*args):
        try:
            return action(*args)
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None
    return wrapped


def build_adapters_tab(actions: AdapterActions, settings: Settings) -> None:
    """Lay out the Adapters tab inside the current Blocks."""
    table = gr.Dataframe(headers=COLUMNS, value=actions.table, interactive=False, wrap=True, label="Adapters")
    with gr.Row():
        choice = gr.Dropdown(choices=actions.names(), label="Adapter", allow_custom_value=False)
        refresh = gr.Button("Refresh", size="sm")
    with gr.Row():
        load, activate, deactivate, unload = (gr.Button(x) for x in ("Load", "Activate", "Use base", "Unload"))
    message = gr.Markdown()
    with gr.Accordion("Import, export, rename, delete", open=False):
        with gr.Row():
            new_name = gr.Textbox(label="Name for the imported adapter (optional)")
            folder = gr.Textbox(label="Import from a folder on this computer")
            upload = gr.File(label="…or import a zip", file_types=[".zip"])
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

    def refreshed(note: str = ""):
        names = actions.names()
        return actions.table(), gr.update(choices=names), note

    outputs = [table, choice, message]
    refresh.click(lambda: refreshed(), outputs=outputs, api_visibility="undocumented")
    for button, action in ((load, actions.load), (activate, actions.activate), (unload, actions.unload)):
        button.click(lambda n, a=action: refreshed(a(n)), inputs=choice, outputs=outputs, api_visibility="undocumented")
    deactivate.click(lambda: refreshed(actions.activate(BASE)), outputs=outputs, api_visibility="undocumented")

    @_guard
    def do_import(name, path, zipped, repo_id):
        if zipped:
            info = registry.import_zip(zipped, actions.folder, name or None)
        elif repo_id:
            info = registry.import_from_hub(repo_id, actions.folder, name or None)
        elif path:
            refuse_server_paths(settings, "adapter import")
            info = registry.import_folder(path, actions.folder, name or None)
        else:
            raise gr.Error("Give a folder, a zip or a hub id to import.")
        return refreshed(f"Imported '{info.name}'.")

    import_button.click(do_import, [new_name, folder, upload, hub_id], outputs, api_visibility="undocumented")
    export_button.click(_guard(lambda n: str(registry.export_zip(actions.folder, n, settings.paths.resolve("outputs")))),
                        choice, exported, api_visibility="undocumented")
    rename_button.click(_guard(lambda n, to: refreshed(f"Renamed to '{registry.rename_adapter(actions.folder, n, to).name}'.")),
                        [choice, rename_to], outputs, api_visibility="undocumented")
    delete_button.click(_guard(lambda n, c: (registry.delete_adapter(actions.folder, n, c), actions.unload(n),
                                             refreshed(f"Deleted '{n}'."))[-1]),
                        [choice, confirm], outputs, api_visibility="undocumented")

    def list_adapters() -> list[str]:
        """Names of the adapters in the adapters folder."""
        return actions.names()

    gr.api(list_adapters, api_name="list_adapters")

    def activate_adapter(name: str) -> str:
        """Load (if needed) and activate an adapter for Chat; 'base' or '' deactivates."""
        return actions.activate(name)

    gr.api(activate_adapter, api_name="activate_adapter")


def build_compare_tab(actions: AdapterActions, manager: ModelManager, settings: Settings) -> None:
    """Lay out the Compare tab: one question, two sides, votes logged to outputs/compare_votes.jsonl."""
    log = settings.paths.resolve("outputs") / "compare_votes.jsonl"
    sides = [BASE] + actions.names()
    with gr.Row():
        image = gr.Image(type="pil", label="Image", sources=["upload"], height=280)
        with gr.Column():
            prompt = gr.Textbox(value="Describe the image.", label="Prompt")
            seed = gr.Number(value=0, precision=0, label="Seed (same for both sides)")
            with gr.Row():
                left = gr.Dropdown(choices=sides, value=BASE, label="Left")
                right = gr.Dropdown(choices=sides, value=(sides[1] if len(sides) > 1 else BASE), label="Right")
            run = gr.Button("Compare", variant="primary")
    for side in (left, right):  # adapters trained or imported since the page was built show up too
        side.focus(lambda: gr.update(choices=[BASE] + actions.names()), outputs=side,
                   api_visibility="undocumented", queue=False)
    with gr.Row():
        left_text = gr.Textbox(label="Left answer", lines=6, interactive=False)
        right_text = gr.Textbox(label="Right answer", lines=6, interactive=False)
    with gr.Row():
        vote_buttons = [gr.Button(f"{v.capitalize()} is better" if v in ("left", "right") else v.capitalize())
                        for v in VOTES]
    voted = gr.Markdown()

    def compare(image, prompt, left, right, seed=0):
        """Answers of `left` and `right` ('base' or adapter names) to one image and prompt."""
        stop = threading.Event()
        try:
            actions.ensure_loaded(left)
            actions.ensure_loaded(right)
            params = GenerationParams(max_new_tokens=settings.generation.max_new_tokens, seed=int(seed or 0))
            yield from compare_stream(manager, image, prompt or "", left or BASE, right or BASE, params, stop)
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None
        finally:
            stop.set()

    run.click(compare, [image, prompt, left, right, seed], [left_text, right_text], api_name="compare")

    for button, vote in zip(vote_buttons, VOTES):
        def on_vote(prompt, left, right, seed, left_answer, right_answer, vote=vote):
            entry = _guard(record_vote)(log, vote, {
                "prompt": prompt, "left": left, "right": right, "seed": seed, "left_text": left_answer,
                "right_text": right_answer, "model": manager.info.model_id if manager.info else None,
                "max_new_tokens": settings.generation.max_new_tokens})
            return f"Recorded: {entry['vote']} ({log.name})."
        button.click(on_vote, [prompt, left, right, seed, left_text, right_text], voted, api_visibility="undocumented")
