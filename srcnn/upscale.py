"""Batch upscaling of stored images: one image in, one image out, same key and format.

A bad input fails only itself (an `ItemResult` with the reason); every output is written whole.
"""

from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass

from PIL import Image

from srcnn.images import BadImageError, read_image, write_image
from srcnn.inference import upscale_rgb
from srcnn.model import SRCNN
from srcnn.storage import join

log = logging.getLogger(__name__)

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF", ".webp": "WEBP", ".gif": "PNG"}


@dataclass(frozen=True)
class ItemResult:
    key: str
    status: str  # "done" | "skipped" | "failed"
    reason: str = ""
    output: str = ""
    seconds: float = 0.0


def upscale_pil(model: SRCNN, img: Image.Image, scale: int, tile_size: int) -> Image.Image:
    """Super-resolve any common PIL image; alpha is upscaled bicubically and kept."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA", "PA") else None
    base_mode = {"RGBA": "RGB", "LA": "L", "PA": "RGB"}.get(img.mode, img.mode)
    if base_mode not in ("RGB", "L", "CMYK", "YCbCr"):
        raise ValueError(f"unsupported image mode {img.mode}")
    out = upscale_rgb(model, img.convert("RGB"), scale, tile_size)
    if base_mode == "L":
        out = out.convert("L")
    if alpha is not None:
        out.putalpha(alpha.resize(out.size, Image.Resampling.BICUBIC))
    return out


def output_format(key: str) -> str:
    ext = posixpath.splitext(key)[1].lower()
    if ext not in FORMATS:
        raise BadImageError(key, f"unsupported file type {ext!r}")
    return FORMATS[ext]


def upscale_object(model: SRCNN, input_url: str, output_url: str, key: str, scale: int,
                   tile_size: int, jpeg_quality: int = 95) -> ItemResult:
    start = time.perf_counter()
    try:
        fmt = output_format(key)
        img = read_image(join(input_url, key), key)
        out = upscale_pil(model, img, scale, tile_size)
        if fmt == "JPEG" and out.mode not in ("RGB", "L"):
            out = out.convert("RGB")
        params = {"quality": jpeg_quality} if fmt == "JPEG" else {}
        if icc := img.info.get("icc_profile"):
            params["icc_profile"] = icc
        write_image(out, join(output_url, key), fmt, **params)
    except BadImageError as exc:
        log.warning("failed %s", exc)
        return ItemResult(key, "failed", exc.reason, seconds=time.perf_counter() - start)
    except Exception as exc:  # one bad input fails only itself; recorded, never dropped
        log.exception("failed %s", key)
        return ItemResult(key, "failed", f"{type(exc).__name__}: {exc}",
                          seconds=time.perf_counter() - start)
    return ItemResult(key, "done", output=join(output_url, key), seconds=time.perf_counter() - start)
