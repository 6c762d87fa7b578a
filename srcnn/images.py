"""Image read/write over fsspec URLs, with clear errors for bad files.

Decoding is where untrusted bytes meet the pipeline: every failure becomes a `BadImageError`
that names the object and the reason, so a batch can record it and carry on.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

from srcnn.storage import read_bytes, write_bytes_atomic

# Pillow's own bomb check reads a process-wide limit (and raises past twice it), which would
# override a caller's larger `max_pixels`. `decode_image` makes the check itself, per call,
# with Pillow's default limit unless told otherwise.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
Image.MAX_IMAGE_PIXELS = None


class BadImageError(ValueError):
    """An input that cannot be used; `key` names it and `reason` says why."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def decode_image(data: bytes, key: str, max_pixels: int | None = None) -> Image.Image:
    """Decode fully (so truncation is caught here) and apply the EXIF orientation.

    Images over `max_pixels` (default: Pillow's default limit, ~89 Mpx) are refused from
    their header, before decoding; a larger `max_pixels` is honoured.
    """
    if not data:
        raise BadImageError(key, "empty file (0 bytes)")
    limit = max_pixels or DEFAULT_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > limit:
                raise BadImageError(key, f"too large: {img.width}x{img.height} pixels exceeds "
                                         f"the limit of {limit} (decompression-bomb guard)")
            img.load()
            if getattr(img, "n_frames", 1) > 1:
                raise BadImageError(key, f"animated image ({img.n_frames} frames) not supported")
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(key, f"too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(key, f"not a readable image ({exc})") from exc
    return ImageOps.exif_transpose(img)


def read_image(url: str, key: str | None = None, max_pixels: int | None = None) -> Image.Image:
    return decode_image(read_bytes(url), key or url, max_pixels)


def encode_image(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def write_image(img: Image.Image, url: str, fmt: str, **params) -> None:
    """Encode in memory, then write the object whole."""
    write_bytes_atomic(url, encode_image(img, fmt, **params))
