"""Batched inference on CUDA: the whole per-image pipeline on the GPU, many tiles per forward.

The CPU path (`srcnn.inference.tiling.upscale_rgb_tiled`) upscales each tile's window with PIL and
runs one tile per forward pass. On a GPU that leaves the device idle, so here the 8-bit LR
image goes to the GPU once and everything else happens there, in bands of output rows holding
at most `BLOCK_PIXELS` (which bounds memory for any image size):

1. PIL's bicubic upscale, reproduced exactly: the same filter taps (a = -0.5, support 2), the
   same 22-bit fixed-point coefficients, horizontal pass then vertical, each rounded and
   clipped to 8 bits as Pillow does (integer arithmetic, so the bytes are PIL's bytes); each
   band's horizontal pass covers only the LR rows that band reads;
2. the net's Y, from equal tiles batched per forward: an SRCNN's tiles are the band's bicubic
   Y (the CPU path's float32 operations, so its values) with a halo of b, edge-replicated at
   the image border; an LR-space net's are the LR Y, padded once by its border b, and give
   s x s output pixels per LR pixel;
3. the band's R, G and B with their Y replaced by the net's: one rounded whole-level step
   added to each 8-bit plane, as the CPU path does; only the uint8 result returns.

Images deeper than 8 bits take the same bands (`srcnn.inference.deep`), with Pillow's float
bicubic (`_resample_float`).

Valid convolutions make every output pixel depend only on its window, so the result does not
depend on the tile size (up to the rounding of different convolution algorithms for different
shapes, which the GPU test measures), and it is the CPU path's up to that rounding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from srcnn.data.color import LUMA_8BIT, LUMA_STEP, YCBCR_OFFSET, luma

PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling (32 - 8 - 2)
BLOCK_PIXELS = 16 * 2**20  # output pixels per block of rows (bounds GPU memory)
MAX_BATCH_PIXELS = 32 * 2**20  # input pixels per forward pass
MIN_TILE = 512  # on the GPU memory is bounded by blocks; big tiles waste less on their halo


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                    np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


@functools.lru_cache(maxsize=64)
def pil_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (out_size, K): Pillow's `precompute_coeffs` for an upscale
    (filter scale 1), taps past the edge weighted 0; the float64 weights its 32-bit float
    resampling uses as they are. Cached: a bucket's images share a handful of sizes."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int): toward zero
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    x = np.arange(ksize)[None, :]
    valid = x < xmax[:, None]
    k = np.where(valid, _bicubic((x + xmin[:, None] - center[:, None] + 0.5) / filterscale), 0.0)
    total = k.sum(1, keepdims=True)
    k = np.where(total != 0.0, k / np.where(total != 0.0, total, 1.0), k)
    return np.where(valid, x + xmin[:, None], xmin[:, None]), k


@functools.lru_cache(maxsize=64)
def pil_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, fixed-point weights): `pil_coefficients` as Pillow's `normalize_coeffs_8bpc`
    rounds them for 8-bit images."""
    idx, k = pil_coefficients(in_size, out_size)
    one = float(1 << PRECISION_BITS)
    return idx, np.where(k < 0, k * one - 0.5, k * one + 0.5).astype(np.int64)


def _tap_sum(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, dim: int,
             dtype: torch.dtype) -> torch.Tensor:
    """sum over k of x's entries idx[:, k] along `dim` times weight w[:, k], in `dtype`, tap by
    tap in order (so float sums round as Pillow's do), with memory of the output's size: a
    gather of all K taps at once held K times the output (16 M pixels x 5 taps x 8 bytes per
    channel for a deep band)."""
    acc = None
    for k in range(idx.shape[1]):
        term = x.index_select(dim, idx[:, k].contiguous()).to(dtype)
        term *= w[:, k] if dim == 2 else w[:, k, None]
        acc = term if acc is None else acc.add_(term)
    return acc


def _resample(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, dim: int) -> torch.Tensor:
    """One 8-bit pass along `dim` of a (C, H, W) uint8 tensor, in Pillow's integer arithmetic.
    int32 is exact: an upscale's positive weights sum to at most 1.124 * 2**22 (all factors to
    8; `tests/test_inference.py` checks the bound), so 255 of them plus the rounding stay below
    2**31; GPUs multiply int32 natively, int64 in several instructions."""
    acc = _tap_sum(x, idx, w, dim, torch.int32)
    acc = (acc + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS
    return acc.clamp_(0, 255).to(torch.uint8)


def _resample_float(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor,
                    dim: int) -> torch.Tensor:
    """One pass along `dim` of a (C, H, W) float32 tensor as Pillow resamples 32-bit float
    images: each tap's product in float64, summed tap by tap in order, stored as float32 (the
    same operations, so Pillow's values)."""
    return _tap_sum(x, idx, w, dim, torch.float64).float()


TAPS_KEPT = 16  # image sizes whose device taps a net keeps (a bucket's images repeat sizes)


def _taps(model: nn.Module, h: int, w: int, scale: int, device: torch.device) -> _Taps:
    """The taps of an h x w image on `device`, kept on the net that runs there (its owner: a
    worker's model lives as long as the run), for at most TAPS_KEPT sizes, oldest dropped."""
    kept = model.__dict__.setdefault("_device_taps", {})  # a plain attribute, not a buffer
    key = (h, w, scale, str(device))
    if key not in kept:
        while len(kept) >= TAPS_KEPT:
            kept.pop(next(iter(kept)))
        kept[key] = _Taps(h, w, scale, device)
    return kept[key]


class _Taps:
    """Taps for one image size, on the device."""

    def __init__(self, h: int, w: int, scale: int, device: torch.device):
        iy, wy = pil_taps(h, h * scale)
        ix, wx = pil_taps(w, w * scale)
        self.ix, self.wx = torch.from_numpy(ix).to(device), _weights(wx, device)
        self.iy, self.wy = torch.from_numpy(iy).to(device), _weights(wy, device)
        self.lr_rows = iy  # (host) the LR rows each output row reads
        self._sizes, self._device = (h, w, scale), device

    @functools.cached_property
    def fx(self) -> torch.Tensor:
        """Float64 weights across, for images deeper than 8 bits (`srcnn.inference.deep`)."""
        _, w, scale = self._sizes
        return torch.from_numpy(pil_coefficients(w, w * scale)[1]).to(self._device)

    @functools.cached_property
    def fy(self) -> torch.Tensor:
        """Float64 weights down, as `fx`."""
        h, _, scale = self._sizes
        return torch.from_numpy(pil_coefficients(h, h * scale)[1]).to(self._device)


def _weights(w: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(w.astype(np.int32)).to(device)


_LUMA_8BIT = [float(v) for v in LUMA_8BIT]  # float32 values, as the CPU path multiplies
_LUMA_OFFSET, _LUMA_STEP = float(np.float32(YCBCR_OFFSET[0])), float(LUMA_STEP)


def planes_luma(planes: torch.Tensor, row: Sequence[float] = _LUMA_8BIT) -> torch.Tensor:
    """`srcnn.data.color.planes_luma` of (3, H, W) planes on a device (8-bit; with `row` the
    float32 values of `LUMA_ROW`, in [0, 1]): the same float32 operations in the same order
    (separate kernels, no fused multiply-add), so the same values."""
    y = planes[0].float() * row[0]
    y += planes[1].float() * row[1]
    y += planes[2].float() * row[2]
    return y.add_(_LUMA_OFFSET)


def _replace_luma(planes: torch.Tensor, planes_y: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`srcnn.inference.tiling.replace_luma` on the device: the planes' Y replaced by the net's
    `y`, as one rounded whole-level step added to each 8-bit plane; (H, W, 3) uint8."""
    step = torch.sub(y, planes_y).mul_(_LUMA_STEP).round_().to(torch.int16)
    return (planes.permute(1, 2, 0).to(torch.int16) + step[..., None]).clamp_(0, 255).to(
        torch.uint8)


@torch.inference_mode()
def upscale_rgb_cuda(model: nn.Module, lr: Image.Image, scale: int, tile: int = 512,
                     bf16: bool = False, lr_y: np.ndarray | None = None) -> Image.Image:
    """`srcnn.inference.tiling.upscale_rgb` on the model's (CUDA) device, in batched blocks:
    an SRCNN reads each block's bicubic Y, an LR-space net (not a pair: `for_image` first) the
    LR Y (`lr_y`, `luma(lr)`, where the caller has it already), padded once by its border."""
    device = next(model.parameters()).device
    h, w = lr.height * scale, lr.width * scale
    x = torch.from_numpy(np.array(lr.convert("RGB"))).to(device, non_blocking=True)
    x = x.permute(2, 0, 1).contiguous()  # (3, h/s, w/s) uint8
    taps = _taps(model, lr.height, lr.width, scale, device)
    if model.upsamples:
        lr_y = luma(lr.convert("RGB")) if lr_y is None else lr_y
    # The result goes to pinned host memory block by block, asynchronously.
    cuda = device.type == "cuda"
    out = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=cuda)
    for y0, y1, band, band_y, sr in bands(
            model, (h, w), scale, tile, bf16, planes_luma, lr_y,
            lambda rows, r0, r1: upscaled_rows(x, taps, rows, r0, r1, _resample, taps.wx,
                                               taps.wy)):
        out[y0:y1].copy_(_replace_luma(band, band_y, sr), non_blocking=True)
    if cuda:
        torch.cuda.current_stream(device).synchronize()
    return Image.fromarray(out.numpy(), "RGB")


def bands(model: nn.Module, size: tuple[int, int], scale: int, tile: int, bf16: bool,
          luma_of: Callable[[torch.Tensor], torch.Tensor], lr_y: np.ndarray | None,
          upscaled: Callable[[torch.Tensor, int, int], torch.Tensor]
          ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The output of size (h, w) in bands of rows [y0, y1) holding at most `BLOCK_PIXELS`,
    each as (y0, y1, its bicubic pixels (C, y1 - y0, w), their Y, the net's Y), on the
    model's device. `upscaled(rows, r0, r1)`: the bicubic image's rows `rows` (a tensor of
    indices, all in [r0, r1)), as `upscaled_rows` makes them; `luma_of`: the Y of such pixels. An SRCNN reads that Y with a halo of b rows and columns,
    edge-replicated at the image border; an LR-space net reads `lr_y` (the LR Y), padded once
    by its border, a band's LR rows starting at a multiple of the scale."""
    device = next(model.parameters()).device
    b, (h, w) = model.border, size
    tile = max(tile, MIN_TILE)  # (an LR-space net's tiles count LR pixels)
    step = tile * scale if lr_y is not None else tile  # output rows of a band of tiles
    rows = max(1, min(h, BLOCK_PIXELS // max(w, 1) // step * step or step))
    halo = 0 if lr_y is not None else b
    if lr_y is not None:
        y_lr = torch.from_numpy(lr_y).to(device)
        padded = F.pad(y_lr[None, None], (b, b, b, b), mode="replicate")[0, 0]
    cols = torch.arange(-b, w + b, device=device).clamp_(0, w - 1)  # edge replication
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        ry = torch.arange(y0 - halo, y1 + halo, device=device).clamp_(0, h - 1)
        band = upscaled(ry, max(0, y0 - halo), min(h, y1 + halo))
        band_y = luma_of(band)
        if lr_y is not None:  # LR rows [y0 / s, ceil(y1 / s)) and b more each side
            ly0, ly1 = y0 // scale, -(-y1 // scale)
            sr = _net_tiles(model, padded[ly0 : ly1 + 2 * b], tile, b, bf16, scale)[: y1 - y0]
        else:
            sr = _net_tiles(model, band_y[:, cols], tile, b, bf16)
        yield y0, y1, band[:, halo : halo + y1 - y0], band_y[halo : halo + y1 - y0], sr


def upscaled_rows(x: torch.Tensor, taps: _Taps, rows: torch.Tensor, r0: int, r1: int,
                  resample: Callable, wx: torch.Tensor, wy: torch.Tensor) -> torch.Tensor:
    """Rows `rows` (in [r0, r1)) of the bicubic upscale of (C, h, w) `x`: the horizontal pass
    over only the LR rows they read, then the vertical one (memory bounded by the band, not
    the image: a whole 100-Mpx input's horizontal taps would not fit a GPU)."""
    read = taps.lr_rows[r0:r1]
    lo, hi = int(read.min()), int(read.max()) + 1
    wide = resample(x[:, lo:hi], taps.ix, wx, 2)
    return resample(wide, taps.iy[rows] - lo, wy[rows], 1)


def _net_tiles(model: nn.Module, y: torch.Tensor, tile: int, b: int, bf16: bool,
               scale: int = 1) -> torch.Tensor:
    """(H + 2b, W + 2b) padded Y -> (sH, sW) net output (s: 1 for an SRCNN, the scale for an
    LR-space net), as equal tiles batched per forward."""
    hh, ww = y.shape[0] - 2 * b, y.shape[1] - 2 * b
    ny, nx = -(-hh // tile), -(-ww // tile)
    th, tw = -(-hh // ny), -(-ww // nx)  # near-equal tiles: under ny (nx) pixels of padding
    # Pad to whole tiles (zeros past the image only feed outputs past the image, cut below).
    padded = torch.zeros((ny * th + 2 * b, nx * tw + 2 * b), dtype=y.dtype, device=y.device)
    padded[: y.shape[0], : y.shape[1]] = y
    tiles = padded.unfold(0, th + 2 * b, th).unfold(1, tw + 2 * b, tw)  # (ny, nx, th+2b, tw+2b)
    tiles = tiles.reshape(ny * nx, 1, th + 2 * b, tw + 2 * b)
    per_batch = max(1, MAX_BATCH_PIXELS // ((th + 2 * b) * (tw + 2 * b)))
    # fp32 means fp32: no TF32 (10-bit mantissa, and rounding that changes with the tile shape)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        outs = [model.infer(tiles[i : i + per_batch].contiguous(
            memory_format=torch.channels_last), bf16) for i in range(0, len(tiles), per_batch)]
    sh, sw = scale * th, scale * tw
    sr = torch.cat(outs)[:, 0].float()  # (ny * nx, s th, s tw)
    sr = sr.reshape(ny, nx, sh, sw).permute(0, 2, 1, 3).reshape(ny * sh, nx * sw)
    return sr[: scale * hh, : scale * ww]
