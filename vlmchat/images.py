"""Defensive image decoding: every picture a user hands us becomes an RGB image or a clear InputError.

Handles empty, non-image, truncated and oversized files, decompression bombs, pictures too long or
too thin for a processor (MAX_SIDE, MAX_ASPECT, checked from the header before decoding), pictures
larger than any processor reads (shrunk to WORKING_PIXELS as they are decoded; `fit_picture`), CMYK, 16-bit,
alpha and palette images, animations (first frame) and EXIF rotation. A `data:` URL string
(`data:image/png;base64,...`, as OpenAI's chat and fine-tuning formats carry images) is decoded
like the bytes of a file.
"""

from __future__ import annotations

import base64
import functools
import binascii
import io
import urllib.parse
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError, features

MAX_PIXELS = 64_000_000  # Pillow's bomb guard; a 8000 x 8000 photo still opens
# Many processors pad a picture to a square of its long side before resizing, so a thin one costs
# memory as the square of its long side (a 1 x 20000 PNG of 121 bytes took 3.5 GB): both limits are
# read from the header, before a pixel is decoded.
MAX_SIDE = 8000  # the padded square stays within MAX_PIXELS
MAX_ASPECT = 20  # long side / short side: a long scrolling screenshot still passes
MAX_DATA_URL_BYTES = 25 * 2**20  # an embedded image is an upload: the default server.max_upload_mb
# The most pixels any supported processor reads of a picture: Qwen2-VL's default max_pixels (3584 x 3584; Idefics3,
# LLaVA-NeXT and Mllama read fewer). A larger picture is shrunk to it as it is decoded, so a 64-megapixel one does
# not go through a processor whole (a 7999 x 7999 PNG of 265 KB raised the app's peak by 886 MB).
WORKING_PIXELS = 12_845_056

ImageSource = str | Path | bytes | Image.Image  # a str is a path or a data: URL


UNDECODABLE = {"MPEG"}  # Pillow identifies these files but cannot decode a picture from them
# The usual file ending of a Pillow format where its registered list does not start with it (JPEG's is .jfif).
FORMAT_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                   "TIFF": ".tif"}


def format_suffix(fmt: str) -> str:
    """The file suffix for a Pillow format name such as "JPEG" ('' when Pillow knows no suffix for it)."""
    Image.init()
    registered = [ext for ext, name in Image.registered_extensions().items() if name == fmt]
    return FORMAT_SUFFIXES.get(fmt) or (registered[0] if registered else "")


@functools.lru_cache(maxsize=1)
def readable_suffixes() -> frozenset[str]:
    """File suffixes of every format Pillow here can open and decode (AVIF where its plugin is built in)."""
    from PIL import ImageFile

    Image.init()  # registers every plugin

    def decodes(fmt: str) -> bool:
        factory = Image.OPEN[fmt][0]
        stub = isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        return not stub and fmt not in UNDECODABLE

    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and decodes(fmt))


def _flatten_alpha(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        pixels = np.asarray(image, dtype=np.float64)
        top = pixels.max() or 1.0
        return Image.fromarray((pixels / top * 255).round().astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _flatten_alpha(image)
    return image.convert("RGB")


def is_data_url(source) -> bool:
    """True when `source` is a `data:` URL string rather than a path."""
    return isinstance(source, str) and source[:5].lower() == "data:"


def decode_data_url(url: str, name: str = "data: URL image", max_bytes: int | None = None) -> bytes:
    """The bytes a `data:[type][;base64],payload` URL holds, or InputError (malformed, corrupt, too big)."""
    from .errors import InputError

    header, comma, payload = url.partition(",")
    if not comma or not is_data_url(header):
        raise InputError(f"'{name}' is not a valid data: URL; write it as data:image/png;base64,<base64 bytes>.")
    limit = max_bytes or MAX_DATA_URL_BYTES

    def too_big(size: float) -> InputError:
        return InputError(f"'{name}' holds {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit for "
                          "data: URL images; scale it down, or name a file by its path where a path is taken "
                          "(a dataset file).")

    if header.lower().endswith(";base64"):
        payload = "".join(payload.split())  # encoders may wrap lines
        if len(payload) * 3 // 4 > limit:
            raise too_big(len(payload) * 3 / 4)
        urlsafe = "-" in payload or "_" in payload
        try:
            return base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_" if urlsafe else None,
                                    validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"'{name}' is not valid base64; encode the image file again "
                             "(base64.b64encode(open(path, 'rb').read()).decode()).") from None
    data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > limit:
        raise too_big(len(data))
    return data


def check_shape(size: tuple[int, int], label: str) -> None:
    """Raise InputError when a picture of `size` (width, height) is too long or too thin to process safely."""
    from .errors import InputError

    width, height = size
    long, short = max(width, height), min(width, height)
    if short < 1 or long / short > MAX_ASPECT:
        raise InputError(f"'{label}' is {width} x {height} pixels, too thin for the model (sides over {MAX_ASPECT}:1); "
                         "crop it into parts or pad it to a less extreme shape.")
    if long > MAX_SIDE:
        raise InputError(f"'{label}' is {width} x {height} pixels, too large for the model (longest side over "
                         f"{MAX_SIDE}); scale it down.")


# Files people send as pictures that Pillow does not read, told by their first bytes (whatever their name says).
HEIF_BRANDS = (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1")  # at offset 4: iPhone photos, often named .jpg


def _unreadable(label: str, data: bytes) -> str:
    """Why `data` is no picture vlmchat reads, and what to do: a HEIC photo or an SVG drawing is named as such."""
    if data[4:12] in HEIF_BRANDS:
        return (f"'{label}' is a HEIC/HEIF photo, which vlmchat does not read; convert it to JPEG first (on an iPhone, "
                "Settings > Camera > Formats > Most Compatible takes JPEGs from then on).")
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or head.startswith(b"<?xml") and b"<svg" in head:
        return f"'{label}' is an SVG drawing, not a picture of pixels; export it as PNG and attach that."
    also = " AVIF works too." if features.check("avif") else ""
    return (f"'{label}' is not an image vlmchat can read; use PNG, JPEG, WebP, GIF, BMP or TIFF.{also} "
            "If it is one of these, the file is damaged: re-export or re-download it.")


def load_image(source: ImageSource, name: str | None = None, max_bytes: int | None = None) -> Image.Image:
    """Decode `source` (path, data: URL, bytes or PIL image) into an upright RGB image, or raise InputError."""
    from .errors import InputError

    if isinstance(source, Image.Image):
        check_shape(source.size, name or "the image")
        return fit_picture(_to_rgb(ImageOps.exif_transpose(source) or source), max_pixels=WORKING_PIXELS)
    if is_data_url(source):
        label = name or "data: URL image"
        data = decode_data_url(source, label, max_bytes)
    elif isinstance(source, (str, Path)):
        label = name or Path(source).name
        path = Path(source)
        if not path.is_file():
            raise InputError(f"Image file '{label}' was not found; check the path or upload it again.")
        size = path.stat().st_size
        if max_bytes and size > max_bytes:
            raise InputError(f"'{label}' is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit; "
                             "resize it or raise server.max_upload_mb in settings.toml.")
        data = path.read_bytes()
    else:
        label = name or "the image"
        data = bytes(source)
    if not data:
        raise InputError(f"'{label}' is empty (0 bytes); choose a real picture file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
            try:
                image = Image.open(io.BytesIO(data))  # reads the header only
                check_shape(image.size, label)
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                if fitted_size(image.size, max_pixels=WORKING_PIXELS) != image.size:  # JPEG decodes at 1/2, 1/4, 1/8
                    image.draft("RGB", fitted_size(image.size, max_pixels=WORKING_PIXELS))
                image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"'{label}' has too many pixels (over {MAX_PIXELS // 1_000_000} megapixels); "
                         "scale it down before using it.") from None
    except UnidentifiedImageError:
        raise InputError(_unreadable(label, data)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"'{label}' is truncated or corrupt ({exc}); re-export or re-download it.") from None
    if fitted_size(image.size, max_pixels=WORKING_PIXELS) != image.size:  # before exif_transpose and convert copy
        factor = int((image.width * image.height / WORKING_PIXELS) ** 0.5)  # the whole picture
        if factor >= 2:  # a box average by a whole factor first, and the decoded picture let go before the resize
            try:
                image = image.reduce(factor)
            except ValueError:  # a mode Pillow does not reduce: the resize alone
                pass
        image = fit_picture(image, max_pixels=WORKING_PIXELS)
        _give_back_memory()  # the decoded picture's blocks go back to the system, not kept by this process
    image = ImageOps.exif_transpose(image) or image
    return _to_rgb(image)


def fitted_size(size: tuple[int, int], max_edge: int | None = None, short_side: int | None = None,
                max_pixels: int | None = None) -> tuple[int, int]:
    """`size`, or the largest size of its shape with at most `max_edge` pixels on its long side, `short_side` on its
    short side and `max_pixels` in all."""
    width, height = size
    long, short = max(width, height), max(1, min(width, height))
    scale = min(1.0, (max_edge or long) / long, (short_side or short) / short,
                ((max_pixels or width * height) / max(1, width * height)) ** 0.5)
    return size if scale == 1.0 else (max(1, int(width * scale)), max(1, int(height * scale)))


def fit_picture(image: Image.Image, max_edge: int | None = None, short_side: int | None = None,
                max_pixels: int | None = None) -> Image.Image:
    """`image`, or a shrunk copy within `fitted_size`'s limits."""
    target = fitted_size(image.size, max_edge, short_side, max_pixels)
    if target == image.size:
        return image
    try:
        return image.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    except ValueError:  # a mode Pillow does not resample (16-bit and the like): RGB first
        return _to_rgb(image).resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _give_back_memory() -> None:
    """Return freed heap memory to the system (glibc): a large picture's decoded blocks stayed in the process
    (a reviewer's app kept 2.6 GiB after six 64-megapixel pictures)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
