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


def nothing_given(settings: Settings, uploads: str, path: str) -> str:
    """What to do when nothing was given: upload `uploads`, or (unless the app is shared) give `path`. On a shared app
    the advice to type a path, which is refused there, followed an upload over the size limit (tester)."""
    return f"Upload {uploads} first." if settings.server.exposed else f"Upload {uploads}, or give {path}."


def refuse_upload_and_path(upload, typed: str | None) -> None:
    """Raise gr.Error when a file is uploaded and a path typed too: the upload was used and the path ignored, unsaid
    (blind tester)."""
    if upload and typed and typed.strip():
        raise gr.Error("A file is uploaded and a path is typed: clear the one not to use (the upload's ✕, or the "
                       "path box), then try again.")


TEMP_NAME = "$TMPDIR"  # what the temp folder is called in answers (no Markdown or HTML meaning, unlike "<temp>")
PATH_CHAR = r"[\w.~/:-]"  # a character that may stand before a path inside a longer path or a URL
PATH_END = r"(?=/|(?![\w.~-])|\.(?![\w~-]))"  # where a path may go on or stop (a sentence's full stop may follow)


def started_folder(settings: Settings) -> Path | None:
    """The folder (resolved) of the model the app was started with by `--model FOLDER`, or None (the demo, a catalog
    model or a hub id): a shared app names it by its name (`ModelInfo.shown`)."""
    model = Path(settings.model.id).expanduser()
    if settings.model.id == DEMO_MODEL_ID or catalog_entry(settings, settings.model.id) is not None or \
            not model.is_dir():
        return None
    return model.resolve()


def _server_roots(settings: Settings) -> tuple[re.Pattern, dict[str, str]]:
    """One pattern for the app's folders (outputs, adapters, models, the project, the temp folder, each as
    configured and resolved, and the folder of a model started with `--model FOLDER`, named by its name as
    `ModelInfo.shown` names it), the innermost first, matched only where a path starts and ends: not inside a
    longer path or a URL (`https://example.com/tmp/a` is left alone), not as the start of a longer name
    (`/tmpfiles`)."""
    import tempfile

    from ..settings import PROJECT_ROOT

    roots = {settings.paths.resolve("outputs"): "outputs", settings.paths.resolve("adapters"): "adapters",
             settings.paths.resolve("models"): "models", PROJECT_ROOT: ".", Path(tempfile.gettempdir()): TEMP_NAME}
    model = started_folder(settings)
    if model is not None:
        roots[model] = model.name
    forms = {form.rstrip("/"): name for root, name in roots.items() for form in (str(root), str(Path(root).resolve()))}
    ordered = sorted((form for form in forms if form), key=len, reverse=True)
    pattern = re.compile(rf"(?<!{PATH_CHAR})(?:{'|'.join(map(re.escape, ordered))}){PATH_END}")
    return pattern, forms  # forms: each absolute form -> the name shown


def _shown(text: str, roots: tuple[re.Pattern, dict[str, str]], typed: tuple[str, ...] = ()) -> str:
    """`text` with the app's folders named relative to them, except where a path the caller typed is echoed back in
    quotes ("'/x' is not …", "(got '/x')"), so that an answer does not tell which typed paths are the app's folders.
    Only a quoted echo is kept: typing "/" or "/tmp" must not leave the paths that contain it as they are, nor
    typing a guess of a folder keep the app's own mention of that folder as it is (a yes/no answer to the guess)."""
    kept: list[str] = []

    def keep(match: re.Match) -> str:
        kept.append(match.group(0))
        return f"\0{len(kept) - 1}\0"

    for value in sorted({value for value in typed if "/" in value}, key=len, reverse=True):
        text = re.sub(rf"(?<=['\"‘“]){re.escape(value)}(?=['\"’”])", keep, text)
    pattern, names = roots
    text = pattern.sub(lambda match: names[match.group(0)], text)
    return re.sub("\0(\\d+)\0", lambda match: kept[int(match.group(1))], text) if kept else text


def shown_text(settings: Settings, text: str, typed: tuple[str, ...] = ()) -> str:
    """`text` as someone on another machine may read it: while the app is reachable from other machines, the
    absolute paths of its folders become names relative to them (`outputs/...`; `typed`: what the caller typed, as
    `_shown`); locally `text` is unchanged. For text made outside a handler's answer (a chat's saved turn, a
    toast); answers pass `ShownOutside`."""
    if not settings.server.exposed or not text:
        return text
    return _shown(text, _server_roots(settings), typed)


# What a handler answers in these is text a person or a client reads; files, pictures and chats are served by
# Gradio from their paths (which it turns into URLs) and are left as they are.
TEXT_OUTPUTS = (gr.Textbox, gr.Markdown, gr.HTML, gr.JSON, gr.Code, gr.Dataframe, gr.Label, gr.HighlightedText,
                Api)


def _strings(value) -> list[str]:
    """Every string in `value`, also inside lists and dicts (what a caller typed, e.g. an eval's list of models)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in _strings(item)]
    return []


def verbatim(component):
    """Mark `component` as showing the model's own words (an answer, a caption): the shared app's filter leaves them
    as the model wrote them ("cd /tmp" stays, as it does in Chat). Returns the component."""
    component._vlmchat_verbatim = True
    return component


class ShownOutside:
    """What leaves one handler of a shared app: its text outputs, and its error messages, with the app's folders
    named relative to them (`outputs/...`; the temp folder `$TMPDIR`). Outputs that are also some handler's inputs
    (a title, a dataset reference) go back and forth unchanged."""

    def __init__(self, settings: Settings, outputs: list, inputs: set[int]):
        self.roots = _server_roots(settings)
        self.mask = [isinstance(block, TEXT_OUTPUTS) and block._id not in inputs
                     and not getattr(block, "_vlmchat_verbatim", False) for block in outputs]
        self.ids = [block._id for block in outputs]
        self.typed: tuple[str, ...] = ()

    def for_call(self, args: tuple, kwargs: dict) -> "ShownOutside":
        """This filter for one call: a path the caller typed, echoed back ("'/x' is not …"), is left as typed, so
        that the answer says nothing about which paths are the app's folders."""
        import copy

        call = copy.copy(self)
        call.typed = tuple(_strings([*args, *kwargs.values()]))
        return call

    @classmethod
    def of(cls, settings: Settings, block_fn, inputs: set[int]) -> "ShownOutside | None":
        """The filter for `block_fn` on a shared app (its errors pass it even where none of its outputs is text it
        rewrites: a caption, Compare's answers), None on a local app."""
        return cls(settings, block_fn.outputs, inputs) if settings.server.exposed else None

    def text(self, text: str) -> str:
        return _shown(text, self.roots, self.typed)

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
        if not any(self.mask):  # a chat stream's every step: nothing here to rewrite
            return result
        if len(self.mask) == 1:
            return self.value(result) if self.mask[0] else result
        if isinstance(result, (list, tuple)) and len(result) == len(self.mask):
            return type(result)(self.value(item) if hide else item for item, hide in zip(result, self.mask))
        if isinstance(result, dict) and result and all(hasattr(key, "_id") for key in result):
            hidden = {id_ for id_, hide in zip(self.ids, self.mask) if hide}
            return {key: self.value(item) if key._id in hidden else item for key, item in result.items()}
        return result


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def refuse_model_path(settings: Settings, model: str) -> str:
    """The model to look up for `model` as a login typed or picked it; gr.Error when the app is shared and it is not
    the demo, a catalog model, a hub id or the model the app was started with (by the folder's name the Model menu
    shows for it: picked there, it was refused as a server folder).

    Checked before the model is looked up, so that no answer tells whether a folder exists on the server.
    """
    if not settings.server.exposed or model == DEMO_MODEL_ID or catalog_entry(settings, model) is not None:
        return model
    started = started_folder(settings)
    if started is not None and model == started.name:
        return settings.model.id
    if not HUB_ID.fullmatch(model) or ".." in model or Path(model).expanduser().exists():
        refuse_server_paths(settings, "loading a model", "pick one from the list or type a hub id (owner/name)")
    return model


def check_batch_upload(settings: Settings, paths: list) -> None:
    """Raise gr.Error when uploaded files together exceed server.max_batch_upload_mb."""
    import os

    total = sum(os.path.getsize(p) for p in paths if p and os.path.isfile(p))
    limit = settings.server.max_batch_upload_mb * 2**20
    if total > limit:
        raise gr.Error(f"These uploads add up to {total / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit "
                       "for one batch; upload fewer files at a time or raise server.max_batch_upload_mb.")
