"""What the upscale tests share: random images, one of each kind, a tiny SRCNN, one chunk's
job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms

from srcnn.batch.job import Job, UpscaleOptions
from srcnn.batch.planning import Chunk, Item
from srcnn.config import ModelConfig
from srcnn.models.srcnn import SRCNN

RNG = np.random.default_rng(0)


def rand(h, w, c=None, dtype=np.uint8, high=256):
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, high, shape, dtype=dtype)


def tiny_model(seed: int = 0) -> SRCNN:
    torch.manual_seed(seed)
    return SRCNN(ModelConfig.from_arch("9-1-5", n1=8, n2=4)).eval()


def job(tmp_path, out: str = "out", **options) -> Job:
    return Job(str(tmp_path / "in"), str(tmp_path / out), UpscaleOptions(**options), "m",
               "digest", "run")


def chunk(*keys: str) -> Chunk:
    return Chunk("c" + "0" * 19, tuple(Item(k, "etag") for k in keys))


def kinds(folder: Path) -> dict[str, tuple]:
    """Write one image of each kind; returns {key: (expected size, mode, format)}."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rand(12, 17, 3)).save(folder / "rgb.png")
    Image.fromarray(rand(12, 17)).save(folder / "grey.png")
    Image.fromarray(rand(12, 17, 4)).save(folder / "rgba.png")
    Image.merge("LA", [Image.fromarray(rand(12, 17)), Image.fromarray(rand(12, 17))]).save(
        folder / "la.png")
    Image.fromarray(rand(12, 17, 3)).convert("P").save(folder / "palette.png")
    Image.fromarray(rand(12, 17, dtype=np.uint16, high=65535)).save(folder / "deep.png")
    Image.fromarray(rand(12, 17, 4), "CMYK").save(folder / "cmyk.jpg")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rand(12, 17, 3)).save(folder / "icc.png", icc_profile=icc)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "camera maker"
    Image.fromarray(rand(12, 17, 3)).save(folder / "exif.jpg", exif=exif.tobytes())
    return {
        "rgb.png": ((34, 24), "RGB", "PNG"), "grey.png": ((34, 24), "L", "PNG"),
        "rgba.png": ((34, 24), "RGBA", "PNG"), "la.png": ((34, 24), "LA", "PNG"),
        "palette.png": ((34, 24), "RGB", "PNG"), "deep.png": ((34, 24), "I;16", "PNG"),
        "cmyk.jpg": ((34, 24), "CMYK", "JPEG"), "icc.png": ((34, 24), "RGB", "PNG"),
        "exif.jpg": ((24, 34), "RGB", "JPEG"),  # orientation applied: width and height swap
    }
