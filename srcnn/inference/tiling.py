"""Tiled inference over a whole image: exact for any tile size, memory bounded by the tile.

Reference (`upscale_rgb`): bicubic-upscale the whole LR image, pad its Y once at the image
border by the receptive-field radius b (edge replication), run the valid convolutions.

Tiled (`upscale_rgb_tiled`, what the pipeline runs): each output tile takes a window of the
LR image with a margin, upscales only that window and cuts out the tile plus a halo of b. PIL's
bicubic weights for an output pixel depend only on its position and the input pixels within
2 LR pixels of it, so with a margin of ceil(b / s) + 3 LR pixels the window reproduces the
whole-image values exactly; the net then sees exactly what it would in one whole-image pass.
Working memory is a few tile-sized buffers; only the 8-bit output image is image-sized.

LR-space nets (family espcn, `srcnn.models.lrnet`) take the LR Y itself, padded once by their border
b (in LR pixels): an output tile runs the net on the LR pixels under it plus b, and keeps the
rows and columns of the tile (a tile edge need not fall on an LR pixel edge), so tiled equals
whole for any tile size here too. The tile size bounds what the net runs on, so for them it
counts LR pixels: an output tile is `tile_size` x scale (the same activation memory per tile as
SRCNN's, and a border of b LR pixels costs a 256-pixel tile 40% more work at x3, a 768 one 14%). Their Cb and Cr are the bicubic upscale's, as for SRCNN; the
LR Y plane they read is 1/s^2 of the output's size.

For JPEG outputs an LR-space net's image skips R, G and B (`upscale_for_jpeg`): its Y goes out
in JPEG's levels and its Cb, Cr are taken at the 4:2:0 samples' places, which is all the
encoder keeps.

Images deeper than 8 bits take the same tiles in float32 (`srcnn.inference.deep`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from srcnn.data.color import LUMA_STEP, luma, planes_luma
from srcnn.data.degradation import bicubic_resize, bicubic_upscale

# Grey images in float ("F" mode, [0, 1]) map onto the Y range the net was trained on.
_Y_LO, _Y_SPAN = 16.0 / 255.0, 219.0 / 255.0
# Changing Y alone (Cb, Cr kept) moves R, G and B each by the same 255 / 219 times the change
# (the Y column of BT.601's inverse).
_LUMA_GAIN = 1.0 / _Y_SPAN


@dataclass(frozen=True)
class Tile:
    """Output window [y0, y1) x [x0, x1)."""

    y0: int
    y1: int
    x0: int
    x1: int


def _cuts(n: int, tile: int) -> list[int]:
    """Boundaries of ceil(n / tile) near-equal spans of [0, n): no thin last span, whose halo
    would cost as much as a full tile's (1600 px at 512 -> 400 x 4, not 512 x 3 + 64)."""
    k = -(-n // tile)
    return [round(i * n / k) for i in range(k + 1)]


def plan_tiles(height: int, width: int, tile: int) -> list[Tile]:
    """Cover a (height, width) output with the fewest tiles of at most tile x tile, of near-equal
    sizes, row-major."""
    if tile < 1:
        raise ValueError(f"tile size {tile}: must be positive")
    ys, xs = _cuts(height, tile), _cuts(width, tile)
    return [Tile(y0, y1, x0, x1) for y0, y1 in zip(ys, ys[1:]) for x0, x1 in zip(xs, xs[1:])]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 convolutions natively: a CUDA GPU, or a CPU with AMX or
    AVX512-BF16 (oneDNN's bf16 kernels: a fast-x3 training step 2.1x the float32 rate on an AMX
    Xeon, a 64-filter one 1.8x on an AVX512-BF16 EPYC). Elsewhere the CPU emulates bf16 and
    float32 is faster."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch's own (cpuinfo)
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def prepare(model: nn.Module, device: str = "auto") -> nn.Module:
    """Eval mode, on the device, channels_last (the fast layout for these convolutions)."""
    return model.eval().to(resolve_device(device)).to(memory_format=torch.channels_last)


@torch.inference_mode()
def run_net(model: nn.Module, window: np.ndarray, bf16: bool = False) -> np.ndarray:
    """(h + 2b, w + 2b) float32 Y -> (h, w) float32 Y (SRCNN), or LR Y -> (s h, s w) SR Y.

    With `bf16`, the convolutions run in bfloat16 (AMX / tensor cores: ~3x faster on this CPU)
    while the residual is added to the float32 input: Set5/Set14 PSNR changes by < 0.05 dB.
    """
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None, None].to(device)
    out = model.infer(x.contiguous(memory_format=torch.channels_last), bf16)
    return out[0, 0].float().cpu().numpy()


def upscale_luma(
    model: nn.Module, y: np.ndarray, tile_size: int = 512, bf16: bool = False
) -> np.ndarray:
    """Run an SRCNN over a bicubic-upscaled (H, W) Y image in [0, 1]; returns (H, W) float32."""
    b = model.border
    padded = np.pad(y.astype(np.float32, copy=False), b, mode="edge")  # (H + 2b, W + 2b)
    out = np.empty(y.shape, dtype=np.float32)
    for t in plan_tiles(*y.shape, tile_size):
        out[t.y0 : t.y1, t.x0 : t.x1] = run_net(
            model, padded[t.y0 : t.y1 + 2 * b, t.x0 : t.x1 + 2 * b], bf16
        )
    return out


def _lr_tile(model: nn.Module, padded: np.ndarray, t: Tile, scale: int, bf16: bool) -> np.ndarray:
    """Output tile `t` of an LR-space net, from the whole LR Y padded by its border."""
    b = model.border
    ly0, lx0 = t.y0 // scale, t.x0 // scale
    ly1, lx1 = -(-t.y1 // scale), -(-t.x1 // scale)
    out = run_net(model, padded[ly0 : ly1 + 2 * b, lx0 : lx1 + 2 * b], bf16)
    return out[t.y0 - ly0 * scale : t.y1 - ly0 * scale, t.x0 - lx0 * scale : t.x1 - lx0 * scale]


def for_image(model: nn.Module, y_lr: np.ndarray) -> nn.Module:
    """The net that runs on the image whose LR luma is `y_lr`: a gated pair's choice
    (`srcnn.models.gated`), made once per image before any tiling; else the model itself."""
    choose = getattr(model, "choose", None)
    return choose(y_lr) if choose is not None else model


def _lr_tiles(
    model: nn.Module, y_lr: np.ndarray, tile_size: int, bf16: bool
) -> Iterator[tuple[Tile, np.ndarray]]:
    """Each output tile of an LR-space net (not a pair: `for_image` first) over an (h, w) LR
    Y image in [0, 1], with its (float32) output, in turn."""
    s = model.scale
    padded = np.pad(y_lr.astype(np.float32, copy=False), model.border, mode="edge")
    for t in plan_tiles(y_lr.shape[0] * s, y_lr.shape[1] * s, tile_size * s):
        yield t, _lr_tile(model, padded, t, s, bf16)


def upscale_luma_lr(
    model: nn.Module, y_lr: np.ndarray, tile_size: int = 512, bf16: bool = False
) -> np.ndarray:
    """Run an LR-space net (or a gated pair's choice) over an (h, w) LR Y image in [0, 1];
    returns (s h, s w) float32."""
    model = for_image(model, y_lr)
    out = np.empty((y_lr.shape[0] * model.scale, y_lr.shape[1] * model.scale), np.float32)
    for t, y in _lr_tiles(model, y_lr, tile_size, bf16):
        out[t.y0 : t.y1, t.x0 : t.x1] = y
    return out


def luma_upscaler(model: nn.Module, tile_size: int = 512, bf16: bool = False):
    """The model as a function of (LR Y, bicubic Y) -> SR Y (what `metrics.score_dataset`
    takes): SRCNN reads the bicubic Y, an LR-space net the LR Y."""
    if model.upsamples:
        return lambda y_lr, y_bic: upscale_luma_lr(model, y_lr, tile_size, bf16)
    return lambda y_lr, y_bic: upscale_luma(model, y_bic, tile_size, bf16)


def rgb_planes(img: Image.Image) -> list[np.ndarray]:
    """An 8-bit RGB image's R, G and B as three (H, W) uint8 arrays (Pillow's split: each plane
    contiguous, so the arithmetic below runs on whole rows instead of every third byte)."""
    return [np.asarray(band) for band in img.split()]


def merge_planes(planes: np.ndarray) -> Image.Image:
    """(3, H, W) uint8 R, G, B -> the 8-bit RGB image."""
    return Image.merge("RGB", [Image.fromarray(plane, "L") for plane in planes])


def replace_luma(planes: Sequence[np.ndarray], y: np.ndarray, out: np.ndarray | None = None,
                 planes_y: np.ndarray | None = None) -> np.ndarray:
    """The bicubic upscale's R, G, B planes ((H, W) uint8 each) with their BT.601 Y replaced by
    `y` ((H, W) float32 in [0, 1], the net's) and Cb, Cr kept: `ycbcr_to_rgb` of (y, Cb, Cr),
    rounded and clipped to 8 bits, written into `out` ((3, H, W) uint8, new if None).
    `planes_y`: the planes' own Y (`planes_luma`), where the caller has it already.

    Changing Y alone moves R, G and B by the same 255 / 219 times the change, so one rounded
    whole-level step per pixel, added to each 8-bit plane, does it: a few float32 passes over
    one plane and three int16 ones (the interleaved float32 version was a fifth of the fast
    net's time per output pixel)."""
    step = np.subtract(y, planes_luma(planes) if planes_y is None else planes_y,
                       dtype=np.float32)
    step *= LUMA_STEP
    np.rint(step, out=step)
    whole = step.astype(np.int16)
    out = np.empty((3, *whole.shape), dtype=np.uint8) if out is None else out
    level = np.empty_like(whole)
    for plane, dst in zip(planes, out):
        np.add(plane, whole, out=level, dtype=np.int16)
        np.clip(level, 0, 255, out=level)
        dst[...] = level
    return out


def upscale_rgb(
    model: nn.Module, lr: Image.Image, scale: int, tile_size: int = 512, bf16: bool = False
) -> Image.Image:
    """Reference path: whole-image bicubic, the net on Y, bicubic Cb and Cr (8-bit RGB)."""
    planes = rgb_planes(bicubic_upscale(lr, scale))
    planes_y = planes_luma(planes)
    if model.upsamples:
        y = upscale_luma_lr(model, luma(lr), tile_size, bf16)
    else:
        y = upscale_luma(model, planes_y, tile_size, bf16)
    return merge_planes(replace_luma(planes, y, planes_y=planes_y))


def _window(lr: Image.Image, t: Tile, scale: int, halo: int) -> tuple[Image.Image, int, int]:
    """The LR crop covering output tile `t` plus `halo`, with a margin that makes its bicubic
    upscale exact; returns (upscaled crop, its output-space origin y, x)."""
    margin = math.ceil(halo / scale) + 3
    ly0, lx0 = max(0, t.y0 // scale - margin), max(0, t.x0 // scale - margin)
    ly1 = min(lr.height, -(-t.y1 // scale) + margin)
    lx1 = min(lr.width, -(-t.x1 // scale) + margin)
    crop = lr.crop((lx0, ly0, lx1, ly1))
    # Same sampling grid as the whole image: crop origins are whole LR pixels.
    return bicubic_resize(crop, (crop.width * scale, crop.height * scale)), ly0 * scale, lx0 * scale


def _halo_cut(
    plane: np.ndarray, t: Tile, oy: int, ox: int, b: int, size: tuple[int, int]
) -> np.ndarray:
    """Rows/cols [t.y0 - b, t.y1 + b) of the whole image from a window at (oy, ox), with edge
    replication outside the image (as the reference pads the whole image once)."""
    h, w = size
    ys = np.clip(np.arange(t.y0 - b, t.y1 + b), 0, h - 1) - oy
    xs = np.clip(np.arange(t.x0 - b, t.x1 + b), 0, w - 1) - ox
    return plane[np.ix_(ys, xs)]


def upscale_rgb_tiled(
    model: nn.Module, lr: Image.Image, scale: int, tile_size: int = 512, bf16: bool = False,
    lr_y: np.ndarray | None = None,
) -> Image.Image:
    """Exactly `upscale_rgb`, with working memory bounded by the tile size (an LR-space net
    also holds the LR image's Y: `lr_y`, `luma(lr)`, where the caller has it already). On CUDA
    the whole pipeline runs on the device, many tiles per forward pass
    (`srcnn.inference.cuda`)."""
    if model.upsamples:
        lr_y = luma(lr) if lr_y is None else lr_y
        model = for_image(model, lr_y)
    if next(model.parameters()).device.type == "cuda":
        from srcnn.inference.cuda import upscale_rgb_cuda

        return upscale_rgb_cuda(model, lr, scale, tile_size, bf16, lr_y)
    if model.upsamples:
        lr_y = np.pad(lr_y, model.border, mode="edge")
    b = model.border
    h, w = lr.height * scale, lr.width * scale
    out = np.empty((3, h, w), dtype=np.uint8)  # R, G, B planes
    for t in plan_tiles(h, w, tile_size * scale if model.upsamples else tile_size):
        up, oy, ox = _window(lr, t, scale, 0 if model.upsamples else b)
        planes = rgb_planes(up)
        rows, cols = slice(t.y0 - oy, t.y1 - oy), slice(t.x0 - ox, t.x1 - ox)
        # The bicubic gives Cb and Cr (the tile's, Y replaced); an SRCNN also reads its Y.
        if model.upsamples:
            y, tile_y = _lr_tile(model, lr_y, t, scale, bf16), None
        else:
            window_y = planes_luma(planes)
            y = run_net(model, _halo_cut(window_y, t, oy, ox, b, (h, w)), bf16)
            tile_y = window_y[rows, cols]
        replace_luma([p[rows, cols] for p in planes], y, out[:, t.y0 : t.y1, t.x0 : t.x1],
                     tile_y)
    return merge_planes(out)


def jpeg_luma(y: np.ndarray) -> np.ndarray:
    """The net's Y ((H, W) float32, BT.601 studio swing in [0, 1]) as a JPEG stores Y: JFIF's
    full-swing 8-bit levels, rounded and clipped. Works in place on `y`."""
    y *= np.float32(255.0 / _Y_SPAN)
    y -= np.float32(255.0 * _Y_LO / _Y_SPAN)
    np.rint(y, out=y)
    np.clip(y, 0.0, 255.0, out=y)
    return y.astype(np.uint8)


def chroma_420(lr: Image.Image, size: tuple[int, int], scale: int) -> list[Image.Image]:
    """Cb and Cr (JFIF) of an 8-bit RGB LR image at the chroma samples of a 4:2:0 JPEG of its
    `size` (width, height) upscale: bicubic at each sample's place, the centre of its 2 x 2
    output pixels, i.e. LR x = (2 j + 1) / s in pixel-edge units (past the image, the edge
    pixel repeated); each sample then repeated over its 2 x 2 pixels, which a 4:2:0
    encoder's averaging gives back exactly. What the RGB path's encoder keeps of its chroma is
    the average of four bicubic samples instead."""
    w, h = size
    cw, ch = -(-w // 2), -(-h // 2)
    box = (0.0, 0.0, 2 * cw / scale, 2 * ch / scale)
    ycc = lr.convert("YCbCr")
    need = (math.ceil(box[2]), math.ceil(box[3]))
    if need[0] > lr.width or need[1] > lr.height:  # an odd size: the last sample's place
        pad = ((0, max(0, need[1] - lr.height)), (0, max(0, need[0] - lr.width)), (0, 0))
        ycc = Image.fromarray(np.pad(np.asarray(ycc), pad, mode="edge"), "YCbCr")
    half = ycc.resize((cw, ch), Image.Resampling.BICUBIC, box=box)
    return [plane.resize((2 * cw, 2 * ch), Image.Resampling.NEAREST).crop((0, 0, w, h))
            for plane in half.split()[1:]]


def upscale_for_jpeg(
    model: nn.Module, lr: Image.Image, scale: int, tile_size: int = 512, bf16: bool = False,
    lr_y: np.ndarray | None = None,
) -> Image.Image:
    """An LR-space net's upscale of an 8-bit RGB or grey image, made for a 4:2:0 JPEG encoder
    (what `upscale-bucket` writes as JPEG): a "YCbCr" image of the net's Y in JFIF levels
    (`jpeg_luma`) and `chroma_420`'s Cb and Cr, or an "L" image of the Y for a grey one.
    The RGB path (`upscale_rgb_tiled`) computes full-size R, G and B, whose Y and Cb, Cr the
    encoder then computes again and whose Cb, Cr it averages four to one; this path computes
    what the encoder keeps, at a half to two thirds of the cost outside the net and a JPEG as good
    (benchmarks/upscale.py, section 6). Only for such an encoder: the chroma is blocky."""
    if not model.upsamples:
        raise ValueError("upscale_for_jpeg: an LR-space net (an SRCNN reads the bicubic upscale)")
    if lr.mode not in ("RGB", "L"):
        raise ValueError(f"upscale_for_jpeg: expected an RGB or L image, got mode {lr.mode}")
    lr_y = luma(lr.convert("RGB")) if lr_y is None else lr_y
    size = (lr.width * scale, lr.height * scale)
    y = np.empty(size[::-1], dtype=np.uint8)
    for t, tile in _lr_tiles(for_image(model, lr_y), lr_y, tile_size, bf16):
        y[t.y0 : t.y1, t.x0 : t.x1] = jpeg_luma(tile)
    if lr.mode == "L":
        return Image.fromarray(y, "L")
    return Image.merge("YCbCr", [Image.fromarray(y, "L"), *chroma_420(lr, size, scale)])


def grey_luma(grey: np.ndarray) -> np.ndarray:
    """The BT.601 Y (in [0, 1]) of (H, W) grey in [0, 1]: what a net reads of a grey image."""
    return grey.astype(np.float32) * _Y_SPAN + _Y_LO


def upscale_grey_float(
    model: nn.Module, lr: np.ndarray, scale: int, tile_size: int = 512, bf16: bool = False
) -> np.ndarray:
    """(H, W) float32 grey in [0, 1] (e.g. 16-bit data / 65535) -> (sH, sW) float32 in [0, 1]."""
    if model.upsamples:
        out = upscale_luma_lr(model, grey_luma(lr), tile_size, bf16)
        return np.clip((out - _Y_LO) / _Y_SPAN, 0.0, 1.0)
    b = model.border
    img = Image.fromarray(lr.astype(np.float32), "F")
    h, w = img.height * scale, img.width * scale
    out = np.empty((h, w), dtype=np.float32)
    for t in plan_tiles(h, w, tile_size):
        up, oy, ox = _window(img, t, scale, b)
        y = np.asarray(up, dtype=np.float32) * _Y_SPAN + _Y_LO
        out[t.y0 : t.y1, t.x0 : t.x1] = run_net(model, _halo_cut(y, t, oy, ox, b, (h, w)), bf16)
    return np.clip((out - _Y_LO) / _Y_SPAN, 0.0, 1.0)

