"""Colour conversion (ITU-R BT.601 YCbCr) and the LR degradation model.

One code path for training pairs, evaluation and inference: `bicubic_upscale` is what the net
is fed at inference, and `degrade` + `bicubic_upscale` is what it is trained on.
Images inside the library are float32 arrays in [0, 1]; PIL images only at the edges.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# BT.601 "studio swing" as in MATLAB's rgb2ycbcr, for R, G, B in [0, 1] -> Y, Cb, Cr in [0, 1].
RGB_TO_YCBCR = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
    dtype=np.float64,
) / 255.0
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> (H, W, 3) YCbCr in [0, 1], float32."""
    out = rgb.astype(np.float64) @ RGB_TO_YCBCR.T + _YCBCR_OFFSET
    return out.astype(np.float32)


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """(H, W, 3) YCbCr in [0, 1] -> (H, W, 3) RGB in [0, 1] (not clipped), float32."""
    out = (ycbcr.astype(np.float64) - _YCBCR_OFFSET) @ YCBCR_TO_RGB.T
    return out.astype(np.float32)


# Y's row of the transform (the same for 8-bit and [0, 1] RGB) and its offset.
LUMA_ROW = RGB_TO_YCBCR[0].astype(np.float32)
YCBCR_OFFSET = tuple(float(v) for v in _YCBCR_OFFSET)


def to_float(img: Image.Image) -> np.ndarray:
    """8-bit RGB PIL image -> (H, W, 3) float32 in [0, 1]."""
    if img.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {img.mode}")
    return np.asarray(img, dtype=np.float32) / 255.0


def luma(img: Image.Image) -> np.ndarray:
    """Y channel of an 8-bit RGB image as (H, W) float32 in [0, 1] (`rgb_to_ycbcr`'s first
    channel, without computing the other two)."""
    out = to_float(img).astype(np.float64) @ RGB_TO_YCBCR[0] + _YCBCR_OFFSET[0]
    return out.astype(np.float32)


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
    """What the net is fed: the LR image bicubically upscaled by `scale` (8-bit, like PIL)."""
    return bicubic_resize(lr, (lr.width * scale, lr.height * scale))


def training_pair(hr: Image.Image, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(network input Y, target Y), both (H, W) float32 in [0, 1], for a mod-cropped HR image."""
    _, bic, target = training_planes(hr, scale)
    return bic, target


def training_planes(hr: Image.Image, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LR Y (H/s, W/s), bicubic-upscaled LR Y (H, W), HR Y (H, W)), float32 in [0, 1]: what
    an LR-space net reads, what SRCNN reads, the target; one degradation for all three."""
    hr = mod_crop(hr.convert("RGB"), scale)
    lr = degrade(hr, scale)
    return luma(lr), luma(bicubic_upscale(lr, scale)), luma(hr)
