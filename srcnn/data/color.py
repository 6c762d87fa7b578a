"""Colour conversion: ITU-R BT.601 YCbCr ("studio swing", as MATLAB's rgb2ycbcr).

Images inside the library are float32 arrays in [0, 1]; PIL images only at the edges. How an
LR image is made from an HR one is `srcnn.data.degradation`.
"""

from __future__ import annotations

from collections.abc import Sequence

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


LUMA_8BIT = [np.float32(v / 255.0) for v in LUMA_ROW]  # 8-bit R, G, B -> Y in [0, 1]
# Changing Y alone (Cb, Cr kept) moves R, G and B each by the same 255 / 219 times the change
# (the Y column of BT.601's inverse): in 8-bit levels per unit of Y,
LUMA_STEP = np.float32(255.0 * (1.0 / (219.0 / 255.0)))


def planes_luma(planes: Sequence[np.ndarray], row: Sequence[np.float32] = LUMA_8BIT
                ) -> np.ndarray:
    """BT.601 Y in [0, 1] ((H, W) float32) of 8-bit R, G, B planes ((H, W) uint8 each):
    `luma`, in float32 passes over whole planes (what the inference colour path reads). With
    `row=LUMA_ROW`, of planes in [0, 1] (deeper images). `srcnn.inference.cuda` repeats
    these very operations on a device."""
    y = np.multiply(planes[0], row[0], dtype=np.float32)
    y += np.multiply(planes[1], row[1], dtype=np.float32)
    y += np.multiply(planes[2], row[2], dtype=np.float32)
    y += np.float32(YCBCR_OFFSET[0])
    return y


def luma(img: Image.Image) -> np.ndarray:
    """Y channel of an 8-bit RGB image as (H, W) float32 in [0, 1] (`rgb_to_ycbcr`'s first
    channel, without computing the other two)."""
    out = to_float(img).astype(np.float64) @ RGB_TO_YCBCR[0] + _YCBCR_OFFSET[0]
    return out.astype(np.float32)
