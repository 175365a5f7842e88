"""The launched app, driven through gradio_client as an API user would."""

import pytest
from gradio_client import Client, handle_file

ERROR_MARK = "⚠️"


@pytest.fixture
def client(app):
    return Client(app.url, verbose=False)


def _say(client, text, *files):
    return client.predict({"text": text, "files": [handle_file(str(f)) for f in files]}, api_name="/chat")


@pytest.mark.parametrize("key", [("red", "circle"), ("blue", "square"), ("yellow", "triangle")])
def test_chat_describes_an_image(client, picture_files, key):
    assert _say(client, "Describe the image.", picture_files[key]).strip() == f"a {key[0]} {key[1]}"


def test_multi_turn_keeps_the_image_in_context(client, picture_files):
    assert _say(client, "What shape is this?", picture_files[("green", "triangle")]).strip() == "triangle"
    assert _say(client, "What color is the shape?").strip() == "green"


def test_new_chat_forgets_the_image(client, picture_files):
    _say(client, "Describe the image.", picture_files[("green", "square")])
    client.reset_session()
    assert _say(client, "Describe the image.", picture_files[("blue", "circle")]).strip() == "a blue circle"


def _not_an_image(folder):
    path = folder / "notes.png"
    path.write_text("this is text, not a picture")
    return path


def _empty(folder):
    path = folder / "empty.png"
    path.write_bytes(b"")
    return path


def _truncated(folder):
    from PIL import Image

    path = folder / "cut.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(path)
    path.write_bytes(path.read_bytes()[:80])
    return path


@pytest.mark.parametrize("make_file, message", [
    (_not_an_image, "not an image"),
    (_empty, "empty"),
    (_truncated, "truncated or corrupt"),
    (None, "The message is empty"),
])
def test_bad_input_gets_a_clear_message_and_the_next_request_works(client, tmp_path, picture_files,
                                                                  make_file, message):
    files = [make_file(tmp_path)] if make_file else []
    answer = _say(client, "Describe the image." if files else "", *files)
    assert answer.startswith(ERROR_MARK) and message in answer
    assert "Traceback" not in answer
    # the failed turn is not resent: the same session answers the next good request correctly
    assert _say(client, "Describe the image.", picture_files[("red", "square")]).strip() == "a red square"
