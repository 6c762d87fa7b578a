"""Tiled inference over a whole image, exact for any tile size.

The Y channel is padded once at the image border by the receptive-field radius b (edge
replication); each tile's input is its output window plus a halo of b on every side, so the
valid convolutions see exactly the pixels they would see in one whole-image pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from srcnn.color import bicubic_upscale, rgb_to_ycbcr, to_float, ycbcr_to_rgb
from srcnn.model import SRCNN


@dataclass(frozen=True)
class Tile:
    """Output window [y0, y1) x [x0, x1); its input is [y0, y1 + 2b) x [x0, x1 + 2b) padded."""

    y0: int
    y1: int
    x0: int
    x1: int


def plan_tiles(height: int, width: int, tile: int) -> list[Tile]:
    """Cover a (height, width) output with tiles of at most tile x tile, row-major."""
    if tile < 1:
        raise ValueError(f"tile size {tile}: must be positive")
    return [
        Tile(y, min(y + tile, height), x, min(x + tile, width))
        for y in range(0, height, tile)
        for x in range(0, width, tile)
    ]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def upscale_luma(model: SRCNN, y: np.ndarray, tile_size: int = 512) -> np.ndarray:
    """Run the net over a bicubic-upscaled (H, W) Y image in [0, 1]; returns (H, W) float32."""
    b = model.config.border
    device = next(model.parameters()).device
    padded = np.pad(y.astype(np.float32, copy=False), b, mode="edge")  # (H + 2b, W + 2b)
    out = np.empty(y.shape, dtype=np.float32)
    for t in plan_tiles(*y.shape, tile_size):
        window = padded[t.y0 : t.y1 + 2 * b, t.x0 : t.x1 + 2 * b]
        x = torch.from_numpy(np.ascontiguousarray(window))[None, None].to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        out[t.y0 : t.y1, t.x0 : t.x1] = model(x)[0, 0].float().cpu().numpy()
    return out


def luma_upscaler(model: SRCNN, tile_size: int = 512):
    """The model as a function of bicubic Y -> SR Y (what `metrics.score_dataset` takes)."""
    return lambda y: upscale_luma(model, y, tile_size)


def upscale_rgb(model: SRCNN, lr: Image.Image, scale: int, tile_size: int = 512) -> Image.Image:
    """Super-resolve an 8-bit RGB image: the net on Y, bicubic Cb and Cr."""
    ycbcr = rgb_to_ycbcr(to_float(bicubic_upscale(lr, scale)))
    ycbcr[..., 0] = upscale_luma(model, ycbcr[..., 0], tile_size)
    rgb = np.clip(ycbcr_to_rgb(ycbcr), 0.0, 1.0)
    return Image.fromarray(np.round(rgb * 255.0).astype(np.uint8), "RGB")


def prepare(model: SRCNN, device: str = "auto") -> SRCNN:
    """Eval mode, on the device, channels_last (the fast layout for these convolutions)."""
    return model.eval().to(resolve_device(device)).to(memory_format=torch.channels_last)
