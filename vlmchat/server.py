"""Serving the web UI: load the model, build the Gradio app, bind where settings say."""

from __future__ import annotations

import os

from .manager import ModelManager
from .settings import Settings


def serve(settings: Settings, block: bool = True):
    """Load the configured model and serve the UI; returns the exit code (or the app if not blocking)."""
    manager = ModelManager(settings)
    print("vlmchat: loading", settings.model.id, "...", flush=True)
    info = manager.load()
    print("vlmchat:", info.summary(), flush=True)
    # A local tool does not phone home.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from .ui.app import build_app

    app = build_app(manager, settings)
    server = settings.server
    app.queue(default_concurrency_limit=server.concurrency_limit, max_size=server.max_queue)
    auth = tuple(server.auth.split(":", 1)) if server.auth else None
    app.launch(
        server_name=server.host, server_port=server.port, share=server.share, auth=auth,
        max_file_size=f"{server.max_upload_mb}mb", prevent_thread_lock=not block, show_error=True,
        quiet=False,
    )
    return app if not block else 0
