"""The output formats of upscale-bucket: which format a key is written in and under which
key, with which save parameters, and how an upscaled image is fitted to its format (JPEG has
no alpha, GIF is a palette, and only PNG and TIFF hold 16-bit grey), and which outputs are
written deeper than 8 bits.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from PIL import Image

from srcnn.data.deep import Deep, of_grey16, writes_deep
from srcnn.data.images import BadImageError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF", ".webp": "WEBP", ".gif": "GIF", ".avif": "AVIF", ".heic": "HEIF",
           ".heif": "HEIF"}
OutputFormat = Literal["PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF", "AVIF", "HEIF"]
EXTENSIONS: dict[str, str] = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif",
                              "WEBP": ".webp", "GIF": ".gif", "AVIF": ".avif", "HEIF": ".heic"}
LOSSY = ("JPEG", "WEBP", "AVIF", "HEIF")  # the formats `jpeg_quality` sets the quality of
EXIF_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF")  # outputs that carry EXIF
GREY16_FORMATS = ("PNG", "TIFF")  # outputs Pillow writes 16-bit grey (I;16) into itself
JPEG_EXIF_BYTES = 65533
# What `encode_speed="fast"` asks of the encoders that trade speed for size: libaom's speed 9
# for AVIF (Pillow's default: 6) and x265's fast preset for HEIF (its default: medium).
FAST_ENCODE: dict[str, dict] = {"AVIF": {"speed": 9}, "HEIF": {"enc_params": {"preset": "fast"}}}


def output_key(key: str, output_format: str | None) -> str:
    if output_format is None:
        return key
    return posixpath.splitext(key)[0] + EXTENSIONS[output_format]


def output_format_of(key: str, output_format: str | None) -> str:
    """The format `key`'s output is written in: `output_format`, else the key's own."""
    if output_format:
        return output_format
    ext = posixpath.splitext(key)[1].lower()
    if ext not in FORMATS:
        raise BadImageError(key, f"unsupported file type {ext!r}")
    return FORMATS[ext]


def save_params(img: Image.Image, fmt: str, jpeg_quality: int, png_level: int,
                encode_speed: str = "balanced") -> dict:
    """Pillow's save parameters for an output of input `img` in `fmt`: quality or deflate
    level, the encoder's speed (`FAST_ENCODE`), and the input's colour profile and EXIF where
    the format carries them."""
    params: dict = {"quality": jpeg_quality} if fmt in LOSSY else {}
    if encode_speed == "fast":
        params |= FAST_ENCODE.get(fmt, {})
    if fmt == "PNG":
        params["compress_level"] = png_level
    if icc := img.info.get("icc_profile"):
        params["icc_profile"] = icc
    # The input's EXIF (camera, time, place), its orientation already applied and removed by
    # `decode_image`; a JPEG holds at most one 64 kB segment of it.
    exif = img.info.get("exif")
    if exif and fmt in EXIF_FORMATS and (fmt != "JPEG" or len(exif) <= JPEG_EXIF_BYTES):
        params["exif"] = exif
    return params


def deep_output(out: Image.Image, fmt: str, params: dict) -> Deep | None:
    """The pixels deeper than 8 bits that an output `out` in `fmt` is written from
    (`srcnn.data.deep.encode_deep`), or None: 8 bits, by Pillow. A deep input's output keeps
    its depth in PNG, TIFF, HEIF and AVIF (`writes_deep`); 16-bit grey, which Pillow writes
    itself in PNG and TIFF, goes into HEIF and AVIF at 12 bits."""
    if out.mode == "I;16" and fmt not in GREY16_FORMATS:
        deep = of_grey16(out)
    else:
        deep = out.info.get("deep")
    if deep is None or not writes_deep(fmt, params, deep.levels.shape[2]):
        return None
    return deep


def fit_format(out: Image.Image, fmt: str) -> Image.Image:
    """`out` in a mode `fmt` can hold."""
    if out.mode == "I;16" and fmt not in GREY16_FORMATS:  # 16-bit grey into an 8-bit format:
        out = of_grey16(out).eight_bit()  # scaled, not clipped as Pillow's conversion does
    if fmt == "JPEG" and out.mode not in ("RGB", "L", "CMYK", "YCbCr"):
        return out.convert("RGB")  # JPEG has no alpha
    if fmt in ("AVIF", "HEIF") and out.mode not in ("RGB", "RGBA", "L"):
        return out.convert("RGBA" if "A" in out.mode else "RGB")
    if fmt == "GIF" and out.mode not in ("P", "L"):
        return out.convert("RGB").quantize(256)  # GIF is 8-bit palette
    return out
