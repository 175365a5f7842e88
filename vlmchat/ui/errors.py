"""The UI's one edge for errors: a user's mistake becomes a gr.Error and one log line, never a traceback.

A VlmchatError (or a gr.Error a tab raises itself) says what to do; the user sees it, and the server
terminal gets one line "vlmchat: /endpoint: message". Anything else is a bug and keeps Gradio's
traceback. `quiet_user_errors` applies this to every event handler of the app at once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys

import gradio as gr

from ..errors import VlmchatError

log = logging.getLogger("vlmchat.requests")
if not log.handlers:  # one line per user error on the server's terminal, however the app was started
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("vlmchat: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def said(exc: Exception) -> str:
    """The message of a user's mistake (a VlmchatError or a gr.Error a tab raised)."""
    return exc.message if isinstance(exc, gr.Error) else str(exc)


def user_error(exc: Exception, where: str | None = None) -> gr.Error:
    """`exc` (a user's mistake) as a gr.Error whose traceback Gradio does not print; logged as one line
    when `where` (the endpoint) is given."""
    message = said(exc)
    if where is not None:
        log.info("%s: %s", where, message)
    if isinstance(exc, gr.Error):
        exc.print_exception = False
        return exc
    return gr.Error(message, print_exception=False)


def _wrap(action, where: str | None = None, shown=None):
    """`action` (plain, generator or async) with user errors turned into quiet gr.Errors; signature kept.

    With `where` each is logged; `guard` leaves that to `quiet_user_errors`, which knows the endpoint. With
    `shown` (a sharing.ShownOutside) what it answers and its messages pass through that on their way out.
    """
    def filtered(args: tuple, kwargs: dict):
        """What one call answers, as it leaves: through `shown` for this call's inputs, or as it is."""
        return shown.for_call(args, kwargs) if shown is not None else None

    def passed_on(exc: Exception, out):
        """Raise what the caller sees of `exc`: a user's mistake as a quiet gr.Error; anything else as it is,
        except on a shared app (`out` set), where it too passes `out` (an OSError names the path it failed on),
        as Gradio would show it (`show_error`) and with its traceback still printed on the terminal."""
        if isinstance(exc, (VlmchatError, gr.Error)):
            error = user_error(exc, where)
            if out is not None:
                error.message = out.text(error.message)
            raise error from None
        if out is None:
            raise exc
        raise gr.Error(out.text(str(exc) or type(exc).__name__)) from exc

    if inspect.isasyncgenfunction(action):
        @functools.wraps(action)
        async def async_streaming(*args, **kwargs):
            out, inner = filtered(args, kwargs), action(*args, **kwargs)
            try:
                async for item in inner:
                    yield out(item) if out else item
            except Exception as exc:
                passed_on(exc, out)
            finally:  # a stream stopped by its reader is closed at once, as `yield from` would
                await inner.aclose()
        return async_streaming
    if inspect.iscoroutinefunction(action):
        @functools.wraps(action)
        async def asynchronous(*args, **kwargs):
            out = filtered(args, kwargs)
            try:
                result = await action(*args, **kwargs)
            except Exception as exc:
                passed_on(exc, out)
            return out(result) if out else result
        return asynchronous
    if inspect.isgeneratorfunction(action):
        @functools.wraps(action)
        def streaming(*args, **kwargs):
            out, inner = filtered(args, kwargs), action(*args, **kwargs)
            try:
                if out is None:
                    yield from inner
                else:
                    for item in inner:
                        yield out(item)
            except Exception as exc:
                passed_on(exc, out)
            finally:  # a stream stopped by its reader (Stop, a closed page) is closed at once, as `yield from` does
                inner.close()
        return streaming

    @functools.wraps(action)
    def wrapped(*args, **kwargs):
        out = filtered(args, kwargs)
        try:
            result = action(*args, **kwargs)
        except Exception as exc:
            passed_on(exc, out)
        return out(result) if out else result
    return wrapped


def guard(action):
    """`action` with VlmchatErrors turned into gr.Error (signature kept, for gr.api's typing).

    A generator (a streaming handler) raises while it is iterated, not when it is called, so it is
    wrapped as a generator.
    """
    return _wrap(action)


def _decode_checked(preprocess, max_bytes: int | None = None):
    """gr.Image's `preprocess` method made to refuse a file over `max_bytes` before Gradio decodes it, and to report a
    file it cannot decode as images.py does, quietly."""
    import os

    from ..images import load_image

    def refused(path: str, name, limit: int | None):
        try:
            load_image(path, name=name, max_bytes=limit)
        except VlmchatError as reason:
            return user_error(reason, "image upload")
        return None

    @functools.wraps(preprocess)
    def checked(self, payload):
        path, name = getattr(payload, "path", None), getattr(payload, "orig_name", None)
        if path and max_bytes and os.path.isfile(path) and os.path.getsize(path) > max_bytes:
            raise refused(path, name, max_bytes) from None  # the size is checked before anything is read
        try:
            return preprocess(self, payload)
        except Exception as exc:
            error = refused(path, name, None) if path else None
            if error is None:
                raise
            raise error from None
    return checked


def _check_images(max_bytes: int | None) -> None:
    """Every gr.Image's preprocess `_decode_checked`, with `max_bytes` the upload limit. Set on the class, not on the
    app's Image blocks: a session whose Image was updated (an example clicked) answers with a new Image made from
    the block's arguments, and a non-image uploaded to Compare then met Gradio's raw "Could not preprocess input
    component ... UnidentifiedImageError" naming server temp paths (blind tester)."""
    original = getattr(gr.Image.preprocess, "_vlmchat_original", gr.Image.preprocess)
    gr.Image.preprocess = _decode_checked(original, max_bytes)
    gr.Image.preprocess._vlmchat_original = original


def _checked_quietly(block, preprocess):
    """`block`'s preprocess with Gradio's own refusals of a value (a file of a type it does not take, a number out of
    its range) said as user errors, one log line: they printed a traceback. A Slider's or Number's says the
    control's name and range (Gradio's "Value 5.0 is greater than maximum value 2.0." named neither)."""
    low, high = getattr(block, "minimum", None), getattr(block, "maximum", None)
    numeric = isinstance(block, (gr.Slider, gr.Number))
    bounded = numeric and (low is not None or high is not None)
    name = (block.label or "The value").split(" (")[0] if numeric else ""
    bounds = (f"from {low:g} to {high:g}" if low is not None and high is not None
              else f"at least {low:g}" if low is not None else f"at most {high:g}") if bounded else ""

    @functools.wraps(preprocess)
    def checked(payload):
        try:
            return preprocess(payload)
        except gr.exceptions.Error as exc:
            said = f"{name} must be {bounds} (got {payload})." if bounded else exc.message
            raise user_error(gr.Error(said), "input") from None
        except (TypeError, ValueError):  # a seed of "abc" through the API: Gradio's "Could not preprocess input"
            if not numeric:
                raise
            said = f"{name} must be a number{' ' + bounds if bounds else ''} (got {repr(payload)[:40]})."
            raise user_error(gr.Error(said), "input") from None
    return checked


def quiet_user_errors(app: gr.Blocks, settings=None) -> gr.Blocks:
    """Every handler and every input of `app`: user errors become one log line, bugs keep tracebacks. With
    `settings`, a picture uploaded to an image input is held to server.max_upload_mb, and while the app is
    reachable from other machines what the handlers answer names no server folder."""
    from .sharing import ShownOutside

    inputs = {block._id for block_fn in app.fns.values() for block in block_fn.inputs}
    for block_fn in app.fns.values():
        if block_fn.fn is not None and not getattr(block_fn.fn, "_vlmchat_quiet", False):
            where = f"/{block_fn.api_name}" if isinstance(block_fn.api_name, str) else block_fn.name
            shown = ShownOutside.of(settings, block_fn, inputs) if settings is not None else None
            block_fn.fn = _wrap(block_fn.fn, where, shown)
            block_fn.fn._vlmchat_quiet = True
    _check_images(settings.server.max_upload_mb * 2**20 if settings is not None else None)
    for block in app.blocks.values():
        if isinstance(block, gr.Image):
            continue
        if block._id in inputs and hasattr(block, "preprocess") and not getattr(block.preprocess, "_vlmchat_quiet",
                                                                                   False):
            block.preprocess = _checked_quietly(block, block.preprocess)
            block.preprocess._vlmchat_quiet = True
    return app
