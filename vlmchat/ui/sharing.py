"""What the UI refuses when the app is reachable from other machines."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from ..models.resolve import catalog_entry
from ..settings import DEMO_MODEL_ID, Settings


def refuse_server_paths(settings: Settings, what: str, instead: str = "upload the files instead") -> None:
    """Raise gr.Error when the app is shared: nobody else may make it read folders of this computer.

    The one guard of every input that takes a server path (model, adapter import, caption, fine-tune, eval).
    """
    if settings.server.exposed:
        raise gr.Error(f"This app is reachable from other machines, so {what} from a folder path on the "
                       f"server is turned off; {instead}.")


def without_server_paths(settings: Settings, text: str) -> str:
    """`text` as someone on another machine may read it: while the app is reachable from other machines, the
    absolute paths of its folders (outputs, adapters, models, the project, the temp folder) become names relative
    to them (`outputs/...`); locally `text` is unchanged."""
    if not settings.server.exposed or not text:
        return text
    import tempfile

    from ..settings import PROJECT_ROOT

    roots = {settings.paths.resolve("outputs"): "outputs", settings.paths.resolve("adapters"): "adapters",
             settings.paths.resolve("models"): "models", PROJECT_ROOT: ".", Path(tempfile.gettempdir()): "<temp>"}
    for root, name in sorted(roots.items(), key=lambda pair: -len(str(pair[0]))):  # the longest (innermost) first
        for form in {str(root), str(Path(root).resolve())}:
            text = text.replace(form.rstrip("/") + "/", name + "/").replace(form.rstrip("/"), name)
    return text


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
