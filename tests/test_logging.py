"""A user's mistake is one line in the server's terminal (app.log here), never a traceback; a bug keeps its traceback."""

from __future__ import annotations

import time

import gradio as gr
import pytest

from vlmchat.errors import InputError
from vlmchat.ui.errors import _wrap, guard


@pytest.fixture(scope="module")
def launched(app):
    """The session's launched app (conftest.py): a test reads only what the app wrote after the test began."""
    return app


def _refused(client, *args, api_name):
    with pytest.raises(Exception) as raised:
        client.predict(*args, api_name=api_name)
    return str(raised.value)


def _wait_for(app, text, since=0, timeout=10.0):
    """The app's output from character `since` on, once `text` is in it (or the timeout is over)."""
    deadline = time.monotonic() + timeout
    while text not in app.output()[since:] and time.monotonic() < deadline:
        time.sleep(0.1)
    return app.output()[since:]


@pytest.mark.slow
def test_user_mistakes_are_one_line_each_in_the_server_output(launched, tmp_path):
    from gradio_client import Client, handle_file

    since = len(launched.output())  # the app may have served other tests before
    client = Client(launched.url, verbose=False)
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("this is text, not a picture", encoding="utf-8")

    shown = _refused(client, "no-such-adapter", api_name="/activate_adapter")
    assert "no adapter named 'no-such-adapter'" in shown
    shown = _refused(client, handle_file(str(not_a_picture)), "", "base", api_name="/caption")
    assert "'notes.png' is not an image vlmchat can read" in shown
    shown = _refused(client, str(tmp_path), {"learning_rate": "fast"}, api_name="/finetune_plan")
    assert "learning_rate must be between" in shown

    output = _wait_for(launched, "learning_rate", since)
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert [line for line in lines if "no-such-adapter" in line] == [
        "vlmchat: /activate_adapter: There is no adapter named 'no-such-adapter' in "
        f"{launched.log.name.rsplit('/', 1)[0]}/adapters (renamed or deleted?); choose one of: demo-es."]
    assert len([line for line in lines if "'notes.png' is not an image" in line]) == 1
    assert len([line for line in lines if line.startswith("vlmchat: /finetune_plan: learning_rate must be")]) == 1


def test_a_bug_keeps_its_traceback_and_a_mistake_does_not(caplog):
    def bug():
        raise ZeroDivisionError("a bug")

    def mistake():
        raise InputError("Upload an image first.")

    with pytest.raises(ZeroDivisionError):
        _wrap(bug, "/x")()
    with pytest.raises(gr.Error) as raised:
        _wrap(mistake, "/x")()
    assert raised.value.message == "Upload an image first." and raised.value.print_exception is False


def test_guard_converts_streaming_handlers_when_iterated():
    def stream():
        yield "partial"
        raise InputError("That file is empty.")

    chunks = guard(stream)()
    assert next(chunks) == "partial"
    with pytest.raises(gr.Error) as raised:
        next(chunks)
    assert raised.value.message == "That file is empty." and raised.value.print_exception is False

