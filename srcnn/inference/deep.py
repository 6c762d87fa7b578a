"""Tiled inference over images deeper than 8 bits (`srcnn.data.deep`): the tiles, windows and
halos of `srcnn.inference.tiling`, in float32 instead of 8-bit steps, the output rounded once
to the input's own depth.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from srcnn.data.color import LUMA_ROW, planes_luma
from srcnn.data.deep import Deep
from srcnn.inference.cuda import _resample_float, _taps, bands, upscaled_rows
from srcnn.inference.cuda import planes_luma as device_planes_luma
from srcnn.inference.tiling import (
    _LUMA_GAIN,
    _Y_LO,
    _Y_SPAN,
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
    lr_y = None
    if model.upsamples:
        lr_y = _float_luma(pixels[..., :n])
        model = for_image(model, lr_y)
    if next(model.parameters()).device.type == "cuda":
        levels = _on_device(model, pixels, n, scale, tile_size, bf16, lr_y, deep.top)
        return Deep(levels, deep.bits, deep.nclx), model
    planes = [Image.fromarray(np.ascontiguousarray(pixels[..., k]), "F") for k in range(c)]
    if lr_y is not None:
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
    """BT.601 Y in [0, 1] of (H, W, 3) RGB or (H, W, 1) grey in [0, 1]: (H, W) float32, one
    float32 operation after another (as the device path computes it, so the same values)."""
    if colour.shape[-1] == 1:
        return grey_luma(colour[..., 0])
    return planes_luma(np.moveaxis(colour, -1, 0), LUMA_ROW)


def _device_luma(colour: torch.Tensor) -> torch.Tensor:
    """`_float_luma` of (n, H, W) float32 colour on a device."""
    if colour.shape[0] == 1:
        return colour[0] * _Y_SPAN + _Y_LO
    return device_planes_luma(colour, [float(v) for v in LUMA_ROW])


@torch.inference_mode()
def _on_device(model: nn.Module, pixels: np.ndarray, n: int, scale: int, tile: int,
               bf16: bool, lr_y: np.ndarray | None, top: int) -> np.ndarray:
    """The loop above on the model's (CUDA) device, in the batched bands of
    `srcnn.inference.cuda`: Pillow's float bicubic reproduced there, the same float32 steps,
    (sH, sW, C) uint16 levels back."""
    device = next(model.parameters()).device
    h, w, c = pixels.shape
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).to(device)
    taps = _taps(model, h, w, scale, device)
    out = np.empty((h * scale, w * scale, c), np.uint16)
    gain, levels = float(np.float32(_LUMA_GAIN)), float(np.float32(top))
    for y0, y1, band, band_y, sr in bands(
            model, out.shape[:2], scale, tile, bf16, lambda px: _device_luma(px[:n]), lr_y,
            lambda rows, r0, r1: upscaled_rows(x, taps, rows, r0, r1, _resample_float, taps.fx,
                                               taps.fy).clamp_(0, 1)):
        band[:n] += ((sr - band_y) * gain)[None]
        out[y0:y1] = band.clamp_(0.0, 1.0).mul_(levels).round_().to(torch.int32).permute(
            1, 2, 0).cpu().numpy()
    return out
