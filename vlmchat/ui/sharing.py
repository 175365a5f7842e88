"""What the UI refuses when the app is reachable from other machines."""

from __future__ import annotations

import gradio as gr

from ..settings import Settings


def refuse_server_paths(settings: Settings, what: str) -> None:
    """Raise gr.Error when the app is shared: nobody else may make it read folders of this computer."""
    if settings.server.exposed:
        raise gr.Error(f"This app is reachable from other machines, so {what} from a folder path on the "
                       "server is turned off; upload the files instead.")


def check_batch_upload(settings: Settings, paths: list) -> None:
    """Raise gr.Error when uploaded files together exceed server.max_batch_upload_mb."""
    import os

    total = sum(os.path.getsize(p) for p in paths if p and os.path.isfile(p))
    limit = settings.server.max_batch_upload_mb * 2**20
    if total > limit:
        raise gr.Error(f"These uploads add up to {total / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit "
                       "for one batch; upload fewer files at a time or raise server.max_batch_upload_mb.")
