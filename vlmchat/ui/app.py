"""The whole web UI: a status line with what is loaded and why, and one tab per feature."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from ..models.families import profile_for
from ..models.manager import ModelManager
from ..settings import Settings
from .adapters_tab import AdapterActions, build_adapters_tab, build_compare_tab
from .caption_tab import build_caption_tab
from .chat_tab import build_chat_tab
from .errors import quiet_user_errors
from .evaluate_tab import build_evaluate_tab
from .finetune_tab import build_finetune_tab
from .model_tab import build_model_tab


# Gradio keeps every upload and every file it shows or offers for download in its cache, where /gradio_api/file=
# serves it, until told otherwise: checked hourly, what is older than a day goes (a saved chat shows the copies in its
# own folder, which Gradio copies again when the chat is opened). Any login could otherwise fill the disk.
CACHE_CLEANUP = (3600, 86400)  # Blocks' delete_cache: (every how many seconds, files older than how many seconds)


def signed_in(request) -> dict:
    """"Signed in as NAME · Log out" where the app has logins (Gradio's /logout ends the session); else hidden."""
    name = getattr(request, "username", None)
    if not name:
        return gr.update(visible=False)
    return gr.update(value=f'<small>Signed in as <b>{html.escape(name)}</b> · <a href="logout">Log out</a></small>',
                     visible=True)


def capability_note(manager: ModelManager) -> str:
    """One line on what the loaded model can do and where to get another."""
    from ..models.resolve import demo_model_path

    if manager.info is None:
        return "Load a model in the Model tab to start."
    if Path(manager.info.source) == demo_model_path(manager.settings):
        from ..demo.about import NOTE

        return NOTE
    return ("Attach a picture in Chat and ask about it, caption pictures or whole folders in Caption, or teach it "
            "your own in Fine-tune; the Model tab loads another model.")


def status_line(manager: ModelManager) -> str:
    """Markdown describing the loaded model, device, dtype and the reason for them, then what the model can do."""
    note = f"  \n{capability_note(manager)}"
    if manager.info is None:
        return "**No model loaded.**" + note
    info = manager.info
    detail = manager.detail()
    # a family that sees every picture at one size says so (Chat's Image detail control points here for why)
    level = detail.detail if profile_for(manager.model).detail is not None else "one size"
    return (f"**Model:** `{info.shown}` ({info.architecture}) · **device:** {info.device} · "
            f"**dtype:** {info.dtype} · **image detail:** {level}"
            f"  \n<small>why: {info.reason}; {detail.reason}</small>" + note)


def _banner(notices: list[str]):
    return gr.update(value="⚠️ " + " ".join(notices), visible=True) if notices else gr.update(visible=False)


def build_app(manager: ModelManager, settings: Settings, notices: list[str] | None = None) -> gr.Blocks:
    """The Gradio Blocks app serving every tab; `notices` (filled by the server, even later) show as a banner."""
    notices = notices if notices is not None else []
    with gr.Blocks(title="vlmchat", delete_cache=CACHE_CLEANUP) as app:
        with gr.Row():
            gr.Markdown("# vlmchat")
            user = gr.HTML(visible=False, elem_id="vlmchat-user")
        banner = gr.Markdown(visible=False, elem_id="vlmchat-banner")
        status = gr.Markdown(status_line(manager), elem_id="vlmchat-status", label="Status")
        adapters = AdapterActions(manager, settings)
        with gr.Tab("Chat"):
            build_chat_tab(manager, settings, adapters)
        with gr.Tab("Caption"):
            build_caption_tab(manager, settings)
        with gr.Tab("Adapters"):
            build_adapters_tab(adapters, settings)
        with gr.Tab("Fine-tune"):
            build_finetune_tab(manager, settings)
        with gr.Tab("Compare"):
            build_compare_tab(adapters, manager, settings)
        with gr.Tab("Evaluate"):
            build_evaluate_tab(manager, settings)
        with gr.Tab("Model"):
            build_model_tab(manager, settings, status, status_line)
        def on_load(request: gr.Request):
            return status_line(manager), _banner(notices), signed_in(request)

        app.load(on_load, outputs=[status, banner, user], api_visibility="undocumented", queue=False)
    return quiet_user_errors(app, settings)
