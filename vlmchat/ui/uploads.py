"""Datasets and eval sets uploaded through the UI or the API: each login's own folder, one upload endpoint."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..finetune.uploads import PREFIX, store_upload, uploads_folder
from ..settings import Settings
from .errors import guard
from .sharing import nothing_given, refuse_server_paths, refuse_upload_and_path
from .users import user_folder


def user_uploads(settings: Settings, request) -> Path:
    """The folder of the request's own uploads (the uploads folder itself when nobody logs in)."""
    return user_folder(uploads_folder(settings), request)


def given_data(settings: Settings, upload, typed: str | None, request, kind: str, use: str, uploads: str,
               path: str) -> str:
    """The reference to the data a tab was given: an `upload` stored among the request's own uploads
    ('upload:<id>'), or the `typed` path (a server path is refused on a shared app, an earlier upload's reference
    is not); gr.Error when both or neither were given. `use` names the use in the shared app's refusal ("training"),
    `uploads` / `path` what to give instead."""
    refuse_upload_and_path(upload, typed)
    if upload:
        return store_upload(upload, settings, user_uploads(settings, request), kind)
    if typed and typed.strip():
        if not typed.strip().startswith(PREFIX):
            refuse_server_paths(settings, use)
        return typed.strip()
    raise gr.Error(nothing_given(settings, uploads, path))


def upload_endpoint(settings: Settings, api_name: str, description: str, kind: str = "dataset") -> None:
    """An API endpoint `api_name(file) -> 'upload:<id>'` storing the file among the caller's own uploads."""
    upload = gr.File(visible=False)
    reference = gr.Textbox(visible=False, label="reference")

    def store(file, request: gr.Request = None) -> str:
        return store_upload(file, settings, user_uploads(settings, request), kind)

    upload.upload(guard(store), upload, reference, api_name=api_name, api_description=description)
