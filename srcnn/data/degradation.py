"""The degradation: the only code that makes an LR image from an HR one.

Training pairs (the patch store), evaluation (the benchmark protocol), the demo's inputs and
the benchmarks all call `degrade`, and inference feeds the net what `bicubic_upscale` gives,
so a net is trained, scored and used on one kind of input. Today's model is the papers': the
whole HR image, mod-cropped to the scale, downscaled by Pillow's antialiased bicubic, kept as
an 8-bit image like a real LR file. It works on whole images, never on patches: resize phases
(and the JPEG blocks of a realistic model) belong to the image grid.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from srcnn.data.color import luma


def mod_crop(img: Image.Image, scale: int) -> Image.Image:
    """Crop at the top-left so that width and height are divisible by `scale`."""
    w, h = img.size
    return img.crop((0, 0, w - w % scale, h - h % scale))


def bicubic_resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """PIL bicubic (antialiased when downscaling), the interpolation of the whole pipeline."""
    return img.resize(size, Image.Resampling.BICUBIC)


def degrade(hr: Image.Image, scale: int) -> Image.Image:
    """The LR image of `hr`: mod-crop, bicubic downscale by `scale`, 8-bit like a real LR file."""
    hr = mod_crop(hr, scale)
    return bicubic_resize(hr, (hr.width // scale, hr.height // scale))


def bicubic_upscale(lr: Image.Image, scale: int) -> Image.Image:
    """What a pre-upsampling net is fed: the LR image bicubically upscaled by `scale` (8-bit,
    like PIL)."""
    return bicubic_resize(lr, (lr.width * scale, lr.height * scale))


def lr_pair(hr: Image.Image, scale: int) -> tuple[Image.Image, Image.Image]:
    """(the HR image as RGB, mod-cropped to `scale`, its LR image): what every score, training
    pair and demo input starts from."""
    hr = mod_crop(hr.convert("RGB"), scale)
    return hr, degrade(hr, scale)


def training_planes(hr: Image.Image, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LR Y (H/s, W/s), bicubic-upscaled LR Y (H, W), HR Y (H, W)), float32 in [0, 1]: what
    an LR-space net reads, what SRCNN reads, the target; one degradation for all three."""
    hr, lr = lr_pair(hr, scale)
    return luma(lr), luma(bicubic_upscale(lr, scale)), luma(hr)


def training_pair(hr: Image.Image, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(network input Y, target Y), both (H, W) float32 in [0, 1]: SRCNN's training pair."""
    _, bic, target = training_planes(hr, scale)
    return bic, target
