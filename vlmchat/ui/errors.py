"""The UI's one edge for errors: a VlmchatError (a user's mistake, with what to do) becomes a gr.Error."""

from __future__ import annotations

import functools
import inspect

import gradio as gr

from ..errors import VlmchatError


def guard(action):
    """`action` with VlmchatErrors turned into gr.Error (signature kept, for gr.api's typing).

    A generator (a streaming handler) raises while it is iterated, not when it is called, so it is
    wrapped as a generator.
    """
    if inspect.isgeneratorfunction(action):
        @functools.wraps(action)
        def streaming(*args, **kwargs):
            try:
                yield from action(*args, **kwargs)
            except VlmchatError as exc:
                raise gr.Error(str(exc)) from None
        return streaming

    @functools.wraps(action)
    def wrapped(*args, **kwargs):
        try:
            return action(*args, **kwargs)
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None
    return wrapped
