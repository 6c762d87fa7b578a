"""Tiled inference over images deeper than 8 bits (`srcnn.data.deep`): the tiles, windows and
halos of `srcnn.inference.tiling`, in float32 instead of 8-bit steps, the output rounded once
to the input's own depth.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch import nn

from srcnn.data.color import LUMA_ROW, YCBCR_OFFSET
from srcnn.data.deep import Deep
from srcnn.inference.tiling import (
    _LUMA_GAIN,
    _halo_cut,
    _lr_tile,
    _window,
    for_image,
    grey_luma,
    plan_tiles,
    run_net,
)


def upscale_deep(
    model: nn.Module, deep: Deep, scale: int, tile_size: int = 512, bf16: bool = False
) -> tuple[Deep, nn.Module]:
    """An image deeper than 8 bits, upscaled as `upscale_rgb_tiled` upscales an 8-bit one, in
    float32 instead of 8-bit steps: each tile's window of R, G and B (or grey) bicubic-upscaled
    exactly and clipped, its BT.601 Y replaced by the net's (a grey level maps onto Y), alpha
    bicubic; the output rounded to the input's depth once. Returns the output and the net
    that ran (a gated pair's choice, `for_image`)."""
    pixels = deep.floats()  # (H, W, C)
    h, w, c = pixels.shape
    n = c - (c in (2, 4))  # R, G, B or grey: the channels before alpha
    planes = [Image.fromarray(np.ascontiguousarray(pixels[..., k]), "F") for k in range(c)]
    if model.upsamples:
        lr_y = _float_luma(pixels[..., :n])
        model = for_image(model, lr_y)
        lr_y = np.pad(lr_y, model.border, mode="edge")
    del pixels  # the planes hold the image from here
    b, size = model.border, (h * scale, w * scale)
    out = np.empty((*size, c), np.uint16)
    for t in plan_tiles(*size, tile_size * scale if model.upsamples else tile_size):
        ups = [_window(plane, t, scale, 0 if model.upsamples else b) for plane in planes]
        _, oy, ox = ups[0]
        window = np.clip(np.stack([np.asarray(up) for up, _, _ in ups], axis=-1), 0.0, 1.0)
        window_y = _float_luma(window[..., :n])
        rows, cols = slice(t.y0 - oy, t.y1 - oy), slice(t.x0 - ox, t.x1 - ox)
        if model.upsamples:
            y = _lr_tile(model, lr_y, t, scale, bf16)
        else:
            y = run_net(model, _halo_cut(window_y, t, oy, ox, b, size), bf16)
        tile = window[rows, cols]
        # Y alone changed: each of R, G, B (or grey) moves by the change over Y's span.
        tile[..., :n] += ((y - window_y[rows, cols]) * np.float32(_LUMA_GAIN))[..., None]
        out[t.y0 : t.y1, t.x0 : t.x1] = np.rint(np.clip(tile, 0.0, 1.0) * np.float32(deep.top))
    return Deep(out, deep.bits, deep.nclx), model


def _float_luma(colour: np.ndarray) -> np.ndarray:
    """BT.601 Y in [0, 1] of (H, W, 3) RGB or (H, W, 1) grey in [0, 1]: (H, W) float32."""
    if colour.shape[-1] == 1:
        return grey_luma(colour[..., 0])
    return colour @ LUMA_ROW + np.float32(YCBCR_OFFSET[0])
