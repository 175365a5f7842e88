"""The whole web UI: a status line with what is loaded and why, and one tab per feature."""

from __future__ import annotations

import gradio as gr

from ..manager import ModelManager
from ..settings import Settings
from .chat_tab import build_chat_tab


def status_line(manager: ModelManager) -> str:
    """Markdown describing the loaded model, device, dtype and the reason for them."""
    if manager.info is None:
        return "**No model loaded.**"
    info = manager.info
    return (f"**Model:** `{info.model_id}` ({info.architecture}) · **device:** {info.device} · "
            f"**dtype:** {info.dtype}  \n<small>why: {info.reason}</small>")


def build_app(manager: ModelManager, settings: Settings) -> gr.Blocks:
    """The Gradio Blocks app serving every tab."""
    with gr.Blocks(title="vlmchat") as app:
        gr.Markdown("# vlmchat")
        status = gr.Markdown(status_line(manager), elem_id="vlmchat-status")
        with gr.Tab("Chat"):
            build_chat_tab(manager, settings)
        app.load(lambda: status_line(manager), outputs=status, api_visibility="undocumented", queue=False)
    return app
