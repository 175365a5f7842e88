"""Datasets and eval sets uploaded through the UI or the API: each login's own folder, one upload endpoint."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..finetune.uploads import store_upload, uploads_folder
from ..settings import Settings
from .errors import guard
from .users import user_folder


def user_uploads(settings: Settings, request) -> Path:
    """The folder of the request's own uploads (the uploads folder itself when nobody logs in)."""
    return user_folder(uploads_folder(settings), request)


def upload_endpoint(settings: Settings, api_name: str, description: str, kind: str = "dataset") -> None:
    """An API endpoint `api_name(file) -> 'upload:<id>'` storing the file among the caller's own uploads."""
    upload = gr.File(visible=False)
    reference = gr.Textbox(visible=False, label="reference")

    def store(file, request: gr.Request = None) -> str:
        return store_upload(file, settings, user_uploads(settings, request), kind)

    upload.upload(guard(store), upload, reference, api_name=api_name, api_description=description)
