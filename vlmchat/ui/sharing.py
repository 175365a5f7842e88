"""What the UI refuses when the app is reachable from other machines."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
from gradio.components.api_component import Api  # what gr.api's endpoints answer with

from ..models.resolve import catalog_entry
from ..settings import DEMO_MODEL_ID, Settings


def refuse_server_paths(settings: Settings, what: str, instead: str = "upload the files instead") -> None:
    """Raise gr.Error when the app is shared: nobody else may make it read folders of this computer.

    The one guard of every input that takes a server path (model, adapter import, caption, fine-tune, eval).
    """
    if settings.server.exposed:
        raise gr.Error(f"This app is reachable from other machines, so {what} from a folder path on the "
                       f"server is turned off; {instead}.")


def _server_roots(settings: Settings) -> list[tuple[str, str]]:
    """(absolute form, name shown) of the app's folders, the innermost first: outputs, adapters, models, the
    project, the temp folder, each as configured and resolved."""
    import tempfile

    from ..settings import PROJECT_ROOT

    roots = {settings.paths.resolve("outputs"): "outputs", settings.paths.resolve("adapters"): "adapters",
             settings.paths.resolve("models"): "models", PROJECT_ROOT: ".", Path(tempfile.gettempdir()): "<temp>"}
    forms = {(form.rstrip("/"), name) for root, name in roots.items() for form in (str(root), str(Path(root).resolve()))}
    return sorted(forms, key=lambda pair: -len(pair[0]))


def _replaced(text: str, roots: list[tuple[str, str]]) -> str:
    for form, name in roots:
        text = text.replace(form + "/", name + "/").replace(form, name)
    return text


# What a handler answers in these is text a person or a client reads; files, pictures and chats are served by
# Gradio from their paths (which it turns into URLs) and are left as they are.
TEXT_OUTPUTS = (gr.Textbox, gr.Markdown, gr.HTML, gr.JSON, gr.Code, gr.Dataframe, gr.Label, gr.HighlightedText,
                Api)


class ShownOutside:
    """What leaves one handler of a shared app: its text outputs, and its error messages, with the app's folders
    named relative to them (`outputs/...`; the temp folder `<temp>`). Outputs that are also some handler's inputs
    (a title, a dataset reference) go back and forth unchanged."""

    def __init__(self, settings: Settings, outputs: list, inputs: set[int]):
        self.roots = _server_roots(settings)
        self.mask = [isinstance(block, TEXT_OUTPUTS) and block._id not in inputs for block in outputs]
        self.ids = [block._id for block in outputs]
        self.typed: tuple[str, ...] = ()

    def for_call(self, args: tuple, kwargs: dict) -> "ShownOutside":
        """This filter for one call: a path the caller typed, echoed back ("'/x' is not …"), is left as typed, so
        that the answer says nothing about which paths are the app's folders."""
        import copy

        call = copy.copy(self)
        typed = [value for value in [*args, *kwargs.values()] if isinstance(value, str) and "/" in value]
        call.typed = tuple(sorted(set(typed), key=len, reverse=True))
        return call

    @classmethod
    def of(cls, settings: Settings, block_fn, inputs: set[int]) -> "ShownOutside | None":
        """The filter for `block_fn`, or None where nothing it answers needs one (a local app; chat streams)."""
        if not settings.server.exposed:
            return None
        shown = cls(settings, block_fn.outputs, inputs)
        return shown if any(shown.mask) else None

    def text(self, text: str, typed: tuple[str, ...] | None = None) -> str:
        typed = self.typed if typed is None else typed
        if typed and typed[0] in text:
            return typed[0].join(self.text(part, typed[1:]) for part in text.split(typed[0]))
        return _replaced(text, self.roots) if not typed else self.text(text, typed[1:])

    def value(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.value(item) for item in value) if type(value) in (list, tuple) else value
        if hasattr(value, "columns") and hasattr(value, "to_dict"):  # a pandas DataFrame
            each = getattr(value, "map", None) or value.applymap  # DataFrame.map from pandas 2.1, applymap before
            return each(lambda item: self.text(item) if isinstance(item, str) else item)
        return value

    def __call__(self, result):
        """`result` as Gradio takes it from a handler: one value for one output, a tuple or list for several, or
        a dict keyed by output component."""
        if len(self.mask) == 1:
            return self.value(result) if self.mask[0] else result
        if isinstance(result, (list, tuple)) and len(result) == len(self.mask):
            return type(result)(self.value(item) if hide else item for item, hide in zip(result, self.mask))
        if isinstance(result, dict) and result and all(hasattr(key, "_id") for key in result):
            hidden = {id_ for id_, hide in zip(self.ids, self.mask) if hide}
            return {key: self.value(item) if key._id in hidden else item for key, item in result.items()}
        return result


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def refuse_model_path(settings: Settings, model: str) -> None:
    """Raise gr.Error when the app is shared and `model` is not the demo, a catalog model or a hub id.

    Checked before the model is looked up, so that no answer tells whether a folder exists on the server.
    """
    if not settings.server.exposed or model == DEMO_MODEL_ID or catalog_entry(settings, model) is not None:
        return
    if not HUB_ID.fullmatch(model) or ".." in model or Path(model).expanduser().exists():
        refuse_server_paths(settings, "loading a model", "pick one from the list or type a hub id (owner/name)")


def check_batch_upload(settings: Settings, paths: list) -> None:
    """Raise gr.Error when uploaded files together exceed server.max_batch_upload_mb."""
    import os

    total = sum(os.path.getsize(p) for p in paths if p and os.path.isfile(p))
    limit = settings.server.max_batch_upload_mb * 2**20
    if total > limit:
        raise gr.Error(f"These uploads add up to {total / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit "
                       "for one batch; upload fewer files at a time or raise server.max_batch_upload_mb.")
