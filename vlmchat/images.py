"""Defensive image decoding: every picture a user hands us becomes an RGB image or a clear InputError.

Handles empty, non-image, truncated and oversized files, decompression bombs, CMYK, 16-bit,
alpha and palette images, animations (first frame) and EXIF rotation.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # Pillow's bomb guard; a 8000 x 8000 photo still opens

ImageSource = str | Path | bytes | Image.Image


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


def load_image(source: ImageSource, name: str | None = None, max_bytes: int | None = None) -> Image.Image:
    """Decode `source` (path, bytes or PIL image) into an upright RGB image, or raise InputError."""
    from .errors import InputError

    if isinstance(source, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(source) or source)
    label = name or (Path(source).name if isinstance(source, (str, Path)) else "the image")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"Image file '{label}' was not found; check the path or upload it again.")
        size = path.stat().st_size
        if max_bytes and size > max_bytes:
            raise InputError(f"'{label}' is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit; "
                             "resize it or raise server.max_upload_mb in settings.toml.")
        data = path.read_bytes()
    else:
        data = bytes(source)
    if not data:
        raise InputError(f"'{label}' is empty (0 bytes); choose a real picture file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
            try:
                image = Image.open(io.BytesIO(data))
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"'{label}' has too many pixels (over {MAX_PIXELS // 1_000_000} megapixels); "
                         "scale it down before using it.") from None
    except UnidentifiedImageError:
        raise InputError(f"'{label}' is not an image vlmchat can read; use PNG, JPEG, WebP, GIF, BMP or TIFF.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"'{label}' is truncated or corrupt ({exc}); re-export or re-download it.") from None
    image = ImageOps.exif_transpose(image) or image
    return _to_rgb(image)
