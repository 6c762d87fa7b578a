"""Image read/write over fsspec URLs, with clear errors for bad files.

Decoding is where untrusted bytes meet the pipeline: every failure becomes a `BadImageError`
that names the object and the reason, so a batch can record it and carry on.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings

import numpy as np
from PIL import Image, ImageOps

from srcnn.data.deep import ORIENTATIONS, Deep, deep_of, transpose
from srcnn.data.png import PNG_LEVEL, deflate_png, libpng_rows
from srcnn.storage import read_bytes, read_head, write_bytes_atomic

log = logging.getLogger(__name__)

# Pillow's own bomb check reads a process-wide limit (and raises past twice it), which would
# override a caller's larger `max_pixels`. `decode_image` makes the check itself, per call,
# with Pillow's default limit unless told otherwise.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


@functools.cache
def _own_bomb_check() -> None:
    """Turn Pillow's process-wide check off, once, when this module first opens an image (not
    when it is imported): from then on `decode_image` and `probe_image` make the check. HEIC
    and HEIF (what phones write) open through pillow-heif's plugin, registered here too; AVIF
    is Pillow's own."""
    Image.MAX_IMAGE_PIXELS = None
    from pillow_heif import register_heif_opener

    register_heif_opener()


# Bytes read to learn an image's size from its header: a PNG's is in its first 33 bytes; a
# JPEG's frame header follows its APPn segments (EXIF at most 64 kB; a large ICC profile can
# push it further, and then the whole file is read).
HEAD_BYTES = 1 << 17
# EXIF orientations that turn the image a quarter: width and height swap (exif_transpose).
_QUARTER_TURNS = {5, 6, 7, 8}


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
    _own_bomb_check()
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
    quality = jpeg_quality(img)
    deep = _deep_pixels(data, key, img)
    turn = ORIENTATIONS.get(img.getexif().get(0x0112)) if deep is not None else None
    img = ImageOps.exif_transpose(img)
    if quality is not None:  # what the file says of itself, kept beside the pixels
        img.info["jpeg_quality"] = quality
    if deep is not None:  # colour deeper than Pillow's 8 bits: the pixels at their depth
        img.info["deep"] = transpose(deep, turn)
    return img


def _deep_pixels(data: bytes, key: str, img: Image.Image) -> Deep | None:
    """`deep_of`; where its decoder refuses a file that Pillow has read (libpng refuses a PNG
    cut after its pixel data, which Pillow reads whole), None: the image is used at 8 bits,
    as before deep pixels were read, with a warning that names it."""
    try:
        return deep_of(data, img)
    except Exception as exc:  # noqa: BLE001  each codec library raises its own kind
        log.warning("%s: read at 8 bits: its pixels did not decode at their depth (%s)", key,
                    exc)
        return None


# The IJG's luminance quantisation table (JPEG standard, Annex K), which libjpeg scales by the
# quality setting: what nearly every JPEG encoder writes.
_IJG_LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16,
                      24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109,
                      103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120,
                      101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)


def jpeg_quality(img: Image.Image) -> int | None:
    """The libjpeg quality (1-100) a JPEG's luminance table matches best (its mean against the
    IJG table scaled for each quality), or None for an image that is not a JPEG."""
    tables = getattr(img, "quantization", None)
    if img.format != "JPEG" or not tables:
        return None
    mean = float(np.mean(tables[min(tables)]))
    q = np.arange(1, 101)
    scaling = np.where(q < 50, 5000 // q, 200 - 2 * q)[:, None]
    scaled = np.clip((_IJG_LUMA[None] * scaling + 50) // 100, 1, 255).mean(1)
    return int(q[np.argmin(np.abs(scaled - mean))])


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation an opened (not decoded) image declares. A PNG's `getexif` decodes
    the image to look for an eXIf chunk after the pixels; here only one before them counts (a
    later one shows up as a size mismatch when the image is decoded, and fails it alone)."""
    if img.format == "PNG":
        if not (raw := img.info.get("exif")):
            return None
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(0x0112)
    return img.getexif().get(0x0112)


def probe_image(url: str, key: str | None = None, max_pixels: int | None = None,
                ) -> tuple[int, int]:
    """(width, height) of an image as `read_image` would return it (EXIF orientation applied),
    from its header: no pixel is decoded. What the header cannot vouch for (truncated or
    corrupt pixel data) is found when the image is decoded. A file that fits in the first
    HEAD_BYTES, an animated GIF, or a header that does not parse from the first HEAD_BYTES is
    decoded whole, which raises the BadImageError that names what is wrong."""
    _own_bomb_check()
    key = key or url
    head = read_head(url, HEAD_BYTES)
    if len(head) < HEAD_BYTES:  # the whole file: decoding it is cheap and checks it all
        img = decode_image(head, key, max_pixels)
        return img.width, img.height
    try:
        img = Image.open(io.BytesIO(head))
        if img.format == "GIF":  # counting a GIF's frames reads them all
            raise ValueError("GIF")
        width, height = img.size
        animated = getattr(img, "n_frames", 1) > 1
        turned = _orientation(img) in _QUARTER_TURNS
    except Exception:  # noqa: BLE001  any header trouble: the strict path says what it is
        img = read_image(url, key, max_pixels)
        return img.width, img.height
    if animated:
        raise BadImageError(key, f"animated image ({img.n_frames} frames) not supported")
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if width * height > limit:
        raise BadImageError(key, f"too large: {width}x{height} pixels exceeds the limit of "
                                 f"{limit} (decompression-bomb guard)")
    return (height, width) if turned else (width, height)


def read_image(url: str, key: str | None = None, max_pixels: int | None = None) -> Image.Image:
    return decode_image(read_bytes(url), key or url, max_pixels)


# Modes whose arrays libpng writes as Pillow does: 8-bit L, LA, RGB, RGBA and 16-bit grey.
LIBPNG_MODES = {"L", "LA", "RGB", "RGBA", "I;16"}
JPEG_FAST = {"quality", "icc_profile", "exif"}  # what libjpeg-turbo's direct path writes
# What it takes: RGB, grey, and YCbCr as JPEG stores it (written as it is, 4:2:0 as RGB is)
JPEG_MODES = {"RGB": None, "L": None, "YCbCr": "YCbCr"}


def encode_image(img: Image.Image, fmt: str, *, threaded: bool = False, **params) -> bytes:
    """`img` in `fmt` with Pillow's `params`, as Pillow writes it, faster where a codec
    library gives the same result (benchmarks/upscale.py, sections 5 and 6):

    - PNG: Pillow's chunks and metadata, the pixel rows filtered by libpng (8-bit grey, grey
      and alpha, RGB, RGBA and 16-bit grey; other modes by Pillow; each row's filter chosen
      adaptively, or the one filter a sample of rows nearly all choose) and compressed by
      libdeflate at the asked `compress_level`: the same pixels, about four times faster
      than Pillow's zlib, files of photos within 1% of its size. Level 0 (stored) and
      `optimize` stay Pillow's.
    - JPEG of RGB, grey or YCbCr, `threaded` (other threads encode or feed a GPU meanwhile):
      libjpeg-turbo called directly (imagecodecs), which lets them run while it encodes
      (Pillow's encoder holds the GIL), with Pillow's own EXIF and colour-profile segments:
      the very bytes Pillow writes. On its own Pillow's is faster (no copy of the pixels).
    """
    _own_bomb_check()  # the HEIF plugin, for writing too
    fmt = fmt.upper()
    if threaded and fmt == "JPEG" and img.mode in JPEG_MODES and set(params) <= JPEG_FAST:
        return _turbo_jpeg(img, params)
    level = params.get("compress_level", PNG_LEVEL)
    deflated = fmt == "PNG" and level > 0 and not params.get("optimize")
    if deflated and img.mode in LIBPNG_MODES and (png := libpng_rows(img, level, params)):
        return png
    if deflated:
        params = {**params, "compress_level": 0}
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return deflate_png(buf.getvalue(), level) if deflated else buf.getvalue()


def _turbo_jpeg(img: Image.Image, params: dict) -> bytes:
    """Pillow's JPEG of an RGB, L or YCbCr image (4:2:0 chroma, its default), encoded by
    libjpeg-turbo without holding the GIL; the EXIF and ICC segments Pillow writes for
    `params` (taken from Pillow's JPEG of one pixel) go where Pillow puts them, after JFIF's."""
    import imagecodecs

    space = JPEG_MODES[img.mode]
    data = imagecodecs.jpeg8_encode(np.asarray(img), level=params.get("quality", 75),
                                    colorspace=space, outcolorspace=space,
                                    subsampling=None if img.mode == "L" else (2, 2))
    meta = {k: v for k, v in params.items() if k != "quality" and v}
    if not meta:
        return data
    one = io.BytesIO()
    Image.new(img.mode, (1, 1)).save(one, "JPEG", **meta)
    after_jfif = 4 + int.from_bytes(data[4:6], "big")  # SOI, then JFIF's APP0 segment
    return data[:after_jfif] + _app_segments(one.getvalue()) + data[after_jfif:]


def _app_segments(jpeg: bytes) -> bytes:
    """The APPn segments after a JPEG's JFIF segment (EXIF, ICC): up to its first table."""
    start = pos = 4 + int.from_bytes(jpeg[4:6], "big")
    while 0xE0 <= jpeg[pos + 1] <= 0xEF:
        pos += 2 + int.from_bytes(jpeg[pos + 2:pos + 4], "big")
    return jpeg[start:pos]


def write_image(img: Image.Image, url: str, fmt: str, *, threaded: bool = False,
                **params) -> None:
    """Encode in memory (`encode_image`), then write the object whole."""
    write_bytes_atomic(url, encode_image(img, fmt, threaded=threaded, **params))
