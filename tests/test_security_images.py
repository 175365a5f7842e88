"""Pathological pictures are refused from their header, before they cost memory, with vlmchat's own message.

Memory is measured as the peak RSS of a child process that loads the shipped demo model and
captions one picture, exactly as the Caption tab does (a 1 x 20000 PNG of 121 bytes used to take
3.5 GB there). The bad files are also sent to the launched app's /caption and /chat
endpoints, which must answer each with vlmchat's message (never Gradio's, never a temp path) and
then still answer a good picture.
"""

import io
import json
import re
import struct
import subprocess
import sys
import tracemalloc
import zlib

import pytest
from gradio_client import Client, handle_file
from PIL import Image, features

from conftest import ROOT, write_settings
from vlmchat.errors import InputError
from vlmchat.images import MAX_ASPECT, MAX_SIDE, load_image


def _png(width: int, height: int, mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def _bad_crc(data: bytes) -> bytes:
    """The PNG with its IHDR checksum broken."""
    crc_at = 8 + 8 + 13  # signature, IHDR length+type, IHDR data
    (crc,) = struct.unpack(">I", data[crc_at:crc_at + 4])
    return data[:crc_at] + struct.pack(">I", crc ^ 0xFFFF) + data[crc_at + 4:]


@pytest.mark.parametrize("size, message", [((1, 20000), "too thin"), ((20000, 1), "too thin"),
                                           ((1, 60000), "too thin"), ((MAX_SIDE + 8, 1000), "too large"),
                                           ((MAX_SIDE * 2, MAX_SIDE * 2), "too many pixels|too large")])
def test_extreme_shapes_are_refused_from_the_header(size, message):
    data = _png(*size)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=message):
            load_image(data, name="odd.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(data) + 2 * 2**20  # nothing decoded: about the file's own bytes


def test_shapes_within_the_limits_still_load():
    assert load_image(_png(MAX_ASPECT * 10, 10, "RGB")).size == (MAX_ASPECT * 10, 10)
    assert load_image(Image.new("RGB", (300, 200))).size == (300, 200)
    with pytest.raises(InputError, match="too thin"):
        load_image(Image.new("RGB", (1, 500)))


CAPTION_ONE = """
import json, resource, sys
from vlmchat.caption.run import caption_image
from vlmchat.models.manager import ModelManager
from vlmchat.settings import load_settings
manager = ModelManager(load_settings(sys.argv[1]))
manager.load()
try:
    answer = caption_image(manager, sys.argv[2])
except Exception as exc:
    answer = f"{type(exc).__name__}: {exc}"
print(json.dumps({"answer": answer, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _caption_in_child(settings, image) -> dict:
    done = subprocess.run([sys.executable, "-c", CAPTION_ONE, str(settings), str(image)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_thin_picture_costs_no_more_memory_than_a_normal_one(tmp_path, picture_files):
    settings = write_settings(tmp_path)
    normal = _caption_in_child(settings, picture_files[("red", "circle")])
    assert normal["answer"] == "a red circle"
    for height in (20000, 60000):
        thin = tmp_path / f"thin-{height}.png"
        thin.write_bytes(_png(1, height))
        result = _caption_in_child(settings, thin)
        assert result["answer"].startswith("InputError:") and "too thin" in result["answer"]
        ratio = result["peak_kib"] / normal["peak_kib"]
        print(f"1 x {height}: peak RSS {result['peak_kib'] / 1024:.0f} MiB vs normal "
              f"{normal['peak_kib'] / 1024:.0f} MiB (x{ratio:.2f})")
        assert ratio <= 1.2


BAD_FILES = {
    "empty.png": (b"", "is empty"),
    "text.png": (b"hello, I am a text file named .png", "not an image vlmchat can read"),
    "bad-crc.png": (_bad_crc(_png(40, 30, "RGB")), "the file is damaged"),
    "huge.png": (_png(20000, 20000), "too many pixels|too large"),
    "thin.png": (_png(1, 20000), "too thin"),
}


def _ask(client, endpoint, path) -> str:
    """The answer of /caption or /chat to the picture at `path`: the text, or the error it raised."""
    try:
        if endpoint == "/chat":  # Chat shows a problem as a ⚠️ reply in the conversation
            return client.predict({"text": "Describe the image.", "files": [handle_file(str(path))]}, api_name="/chat")
        return client.predict(handle_file(str(path)), "", "base", api_name="/caption")
    except Exception as exc:  # noqa: BLE001 - the error is the answer under test
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("endpoint", ["/caption", "/chat"])
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_every_image_endpoint_answers_bad_files_with_vlmchat_messages(app, tmp_path, picture_files, name, endpoint):
    data, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    client = Client(app.url, verbose=False)
    text = _ask(client, endpoint, path)
    assert name in text and re.search(message, text), text
    assert "preprocess" not in text and "/tmp" not in text and "gradio" not in text.lower(), text
    good = _ask(client, endpoint, picture_files[("blue", "square")])
    assert good.strip() == "a blue square"  # the app is alive and answering


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_caption_finds_every_format_chat_reads(tmp_path, picture_files):
    from vlmchat.caption.io import find_images

    picture = Image.open(picture_files[("red", "circle")])
    for suffix in (".avif", ".png", ".jpeg", ".webp", ".qoi"):
        picture.save(tmp_path / f"picture{suffix}")
    (tmp_path / "notes.txt").write_text("not a picture")
    found = find_images([tmp_path])
    assert sorted(p.suffix for p in found.images) == [".avif", ".jpeg", ".png", ".qoi", ".webp"]
    assert load_image(tmp_path / "picture.avif").size == picture.size


def test_an_image_box_made_again_for_a_session_still_answers_bad_files_with_vlmchat_messages(demo_settings, tmp_path):
    """Gradio answers a session whose Image was updated (an example clicked in Compare) with a new Image made from
    the block's arguments; a check set on the app's block was not on it, and a text file uploaded as a picture met
    Gradio's raw "Could not preprocess input component ... UnidentifiedImageError" (blind tester, in Chromium)."""
    import gradio as gr
    from gradio.data_classes import ImageData

    from vlmchat.models.manager import ModelManager
    from vlmchat.ui.app import build_app

    app = build_app(ModelManager(demo_settings), demo_settings)
    compare = next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == "vlmchat-compare-image")
    again = type(compare)(**{**compare.constructor_args, "render": False})  # what Gradio makes for the session
    text = tmp_path / "text.png"
    text.write_text("not a picture")
    with pytest.raises(gr.Error, match="'text.png' is not an image vlmchat can read"):
        again.preprocess(ImageData(path=str(text), orig_name="text.png"))
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (demo_settings.server.max_upload_mb * 2**20 + 1))
    with pytest.raises(gr.Error, match="limit"):
        again.preprocess(ImageData(path=str(big), orig_name="big.png"))
