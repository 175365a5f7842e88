"""Chat history in the shapes Gradio and API callers send, converted to processor messages."""

import pytest
from PIL import Image

from vlmchat.models.conversation import to_processor_messages
from vlmchat.errors import InputError


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "shape.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(path)
    return str(path)


def _kinds(message):
    return [part["type"] for part in message["content"]]


def test_new_message_with_files_and_text(image_file):
    messages = to_processor_messages([], {"text": "Describe the image.", "files": [image_file, image_file]})
    assert len(messages) == 1 and _kinds(messages[0]) == ["image", "image", "text"]
    assert isinstance(messages[0]["content"][0]["image"], Image.Image)


@pytest.mark.parametrize("history_content", [
    lambda p: [{"path": p}, "Describe the image."],                                  # gradio API state
    lambda p: [{"type": "file", "file": {"path": p}}, {"type": "text", "text": "Describe the image."}],
    lambda p: [{"file": {"path": p}, "type": "image"}, "Describe the image."],
])
def test_images_stay_in_context_across_turns(image_file, history_content):
    history = [{"role": "user", "content": history_content(image_file)},
               {"role": "assistant", "content": "a red square"}]
    messages = to_processor_messages(history, {"text": "What color is the shape?", "files": []})
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert _kinds(messages[0]) == ["image", "text"]
    assert messages[1]["content"] == [{"type": "text", "text": "a red square"}]


def test_gradio_split_messages_are_merged(image_file):
    history = [{"role": "user", "content": {"path": image_file}},
               {"role": "user", "content": "Describe the image."},
               {"role": "assistant", "content": [{"type": "text", "text": "a red square"}]}]
    messages = to_processor_messages(history, "And its colour?")
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert _kinds(messages[0]) == ["image", "text"]


@pytest.mark.parametrize("message", [{"text": "", "files": []}, {"text": "   "}, ""])
def test_empty_message_is_refused(message):
    with pytest.raises(InputError, match="empty"):
        to_processor_messages([], message)


def test_a_non_image_attachment_is_refused(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(InputError, match="not an image"):
        to_processor_messages([], {"text": "hi", "files": [str(notes)]})
