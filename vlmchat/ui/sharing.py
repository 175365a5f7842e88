"""What the UI refuses when the app is reachable from other machines."""

from __future__ import annotations

import gradio as gr

from ..settings import Settings


def refuse_server_paths(settings: Settings, what: str) -> None:
    """Raise gr.Error when the app is shared: nobody else may make it read folders of this computer."""
    if settings.server.exposed:
        raise gr.Error(f"This app is reachable from other machines, so {what} from a folder path on the "
                       "server is turned off; upload the files instead.")
