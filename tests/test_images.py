"""Every kind of picture a user may send either decodes to upright RGB or raises a clear InputError."""

import io

import numpy as np
import pytest
from PIL import Image

from vlmchat.errors import InputError
from vlmchat.images import MAX_PIXELS, load_image


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _red_square() -> Image.Image:
    return Image.new("RGB", (40, 20), (255, 0, 0))


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"hello, I am a text file", "is not an image"),
    (_png_bytes(_red_square())[:60], "truncated or corrupt"),
])
def test_bad_bytes_give_a_clear_message(data, message):
    with pytest.raises(InputError, match=message):
        load_image(data, name="upload.png")


@pytest.mark.parametrize("data, said, not_said", [
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIC/HEIF", "damaged"),
    (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00" + bytes(64), "Most Compatible", "damaged"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', "export it as PNG", "damaged"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG drawing", "damaged"),
])
def test_a_heic_photo_or_an_svg_is_named_with_what_to_do(data, said, not_said):
    """A HEIC photo named .jpg was told "If it is one of these, the file is damaged" (tester)."""
    with pytest.raises(InputError, match=said) as refused:
        load_image(data, name="photo.jpg")
    assert not_said not in str(refused.value)


def test_missing_file_and_size_limit(tmp_path):
    with pytest.raises(InputError, match="was not found"):
        load_image(tmp_path / "nope.png")
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes(_red_square()))
    with pytest.raises(InputError, match="over the 0 MB limit"):
        load_image(path, max_bytes=10)


def test_decompression_bomb_is_refused():
    side = int(MAX_PIXELS ** 0.5) + 200
    bomb = _png_bytes(Image.new("1", (side, side)))  # tiny file, huge picture
    with pytest.raises(InputError, match="too many pixels"):
        load_image(bomb)


def _cmyk():
    return Image.new("CMYK", (8, 8), (0, 255, 255, 0))


def _sixteen_bit():
    return Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16))


def _rgba():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent: should become white
    return image


def _palette():
    return _red_square().convert("P")


@pytest.mark.parametrize("make, fmt, expected", [
    (_cmyk, "JPEG", (255, 0, 0)),
    (_sixteen_bit, "PNG", (255, 255, 255)),
    (_rgba, "PNG", (255, 255, 255)),
    (_palette, "PNG", (255, 0, 0)),
    (_red_square, "WEBP", (255, 0, 0)),
    (_red_square, "BMP", (255, 0, 0)),
])
def test_unusual_modes_become_rgb(make, fmt, expected):
    image = load_image(_png_bytes(make(), fmt))
    assert image.mode == "RGB"
    assert np.allclose(image.getpixel((4, 4)), expected, atol=12)


def test_animation_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 255), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert np.allclose(load_image(buffer.getvalue()).getpixel((1, 1)), (0, 0, 255), atol=8)


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    upright = load_image(_png_bytes(image, "JPEG", exif=exif))
    assert upright.size == (20, 40)


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "I;16")])
def test_a_picture_larger_than_any_processor_reads_is_shrunk_as_it_is_decoded(tmp_path, fmt, mode):
    """A 64-megapixel picture is shrunk to WORKING_PIXELS (Qwen2-VL's max_pixels, the most a supported processor
    reads), its shape kept; it went on whole (a 7999 x 7999 PNG of 265 KB raised the app's peak by 886 MB)."""
    from vlmchat.images import WORKING_PIXELS

    path = tmp_path / f"big.{fmt.lower()}"
    Image.new(mode, (7999, 5000), 200 if mode != "RGB" else (200, 30, 30)).save(path, fmt)
    image = load_image(path)
    assert image.mode == "RGB" and image.width * image.height <= WORKING_PIXELS
    assert image.width * image.height > 0.99 * WORKING_PIXELS and abs(image.width / image.height - 7999 / 5000) < 0.01
    assert image.getpixel((image.width // 2, image.height // 2))[0] > 150  # the picture, not black
