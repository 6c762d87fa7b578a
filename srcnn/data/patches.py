"""Patch extraction: a regular grid of LR/HR patch pairs from one image.

Positions are (y, x) of a patch's top-left corner in the mod-cropped HR image; the LR patch
is the same window of the degraded-then-bicubic-upscaled image (`color.training_pair`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from srcnn.data.degradation import bicubic_resize, training_pair


def grid_positions(height: int, width: int, size: int, stride: int) -> np.ndarray:
    """(N, 2) int32 top-left corners of every size x size window on a stride grid, row-major."""
    if height < size or width < size:
        return np.zeros((0, 2), dtype=np.int32)
    ys = np.arange(0, height - size + 1, stride, dtype=np.int32)
    xs = np.arange(0, width - size + 1, stride, dtype=np.int32)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def patch_count(width: int, height: int, scale: int, size: int, stride: int) -> int:
    """How many patches an image of this size yields (after the mod-crop to `scale`)."""
    h, w = height - height % scale, width - width % scale
    return len(grid_positions(h, w, size, stride))


def patch_counts(width: np.ndarray, height: np.ndarray, scale: int, size: int, stride: int,
                 ) -> np.ndarray:
    """`patch_count` of many images at once: (n,) int64 from (n,) widths and heights."""
    h, w = (np.asarray(v, dtype=np.int64) for v in (height, width))
    h, w = h - h % scale, w - w % scale
    ny = np.where(h >= size, (h - size) // stride + 1, 0)
    nx = np.where(w >= size, (w - size) // stride + 1, 0)
    return ny * nx


def resized_sizes(width: np.ndarray, height: np.ndarray, factor: float,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """`resized_size` of many images at once (np.rint rounds half to even, as round does)."""
    if factor == 1.0:
        return np.asarray(width, dtype=np.int64), np.asarray(height, dtype=np.int64)
    return tuple(np.rint(np.asarray(v, dtype=np.int64) * factor).astype(np.int64)
                 for v in (width, height))


def crop_patches(image: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) windows of an (H, W) array at `positions`."""
    if len(positions) == 0:
        return np.zeros((0, size, size), dtype=image.dtype)
    windows = sliding_window_view(image, (size, size))  # (H - size + 1, W - size + 1, s, s)
    return windows[positions[:, 0], positions[:, 1]]


def resized_size(width: int, height: int, factor: float) -> tuple[int, int]:
    return (width, height) if factor == 1.0 else (round(width * factor), round(height * factor))


def image_patches(hr: Image.Image, scale: int, size: int, stride: int, factor: float = 1.0,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lr, hr, positions): (N, size, size) float32 Y patches and their (N, 2) positions.

    With `factor` < 1 the HR image is first bicubically downscaled (data augmentation).
    """
    if factor != 1.0:
        hr = bicubic_resize(hr.convert("RGB"), resized_size(hr.width, hr.height, factor))
    lr_y, hr_y = training_pair(hr, scale)
    positions = grid_positions(*hr_y.shape, size, stride)
    return crop_patches(lr_y, positions, size), crop_patches(hr_y, positions, size), positions


def split_of(key: str, val_fraction: float) -> str:
    """Stable split by source image: a hash of the key, so adding images never moves others."""
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32
    return "val" if u < val_fraction else "train"


def assign_splits(keys: list[str], val_fraction: float) -> dict[str, str]:
    """Split by hash; with a non-zero fraction, at least one val and one train image."""
    splits = {k: split_of(k, val_fraction) for k in keys}
    if val_fraction > 0 and len(keys) >= 2:
        ranked = sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
        if "val" not in splits.values():
            splits[ranked[0]] = "val"
        if "train" not in splits.values():
            splits[ranked[-1]] = "train"
    return splits


def ensure_both_splits(val: np.ndarray, keys: Sequence[str], candidates: Sequence[int],
                       has_val: bool, has_train: bool) -> bool:
    """`assign_splits`' fix-up, in place on the column `val` (True: validation): where the
    splits (summarised by `has_val`, `has_train`) lack a validation image, the candidate whose
    key hashes lowest becomes one; where they lack a training image, the highest becomes one.
    Only that candidate's hash ranking is computed (no sort of a million keys). False where a
    split is missing and there is no candidate to fill it."""
    if has_val and has_train:
        return True
    if not len(candidates):
        return False

    def rank(i: int) -> str:
        return hashlib.sha256(keys[i].encode()).hexdigest()

    if not has_val:
        val[min(candidates, key=rank)] = True
    else:
        val[max(reversed(candidates), key=rank)] = False
    return True


def val_mask(keys: Sequence[str], val_fraction: float) -> np.ndarray:
    """(n,) bool, True where `assign_splits(keys, val_fraction)` says "val", as a column: a
    million keys need no dict of them."""
    mask = np.fromiter((split_of(k, val_fraction) == "val" for k in keys), dtype=bool,
                       count=len(keys))
    if val_fraction > 0 and len(keys) >= 2:
        ensure_both_splits(mask, keys, range(len(keys)), bool(mask.any()), bool((~mask).any()))
    return mask


def collection_patches(images: dict[str, Image.Image], scale: int, size: int, stride: int,
                       val_fraction: float, augment_scales: tuple[float, ...] = (1.0,),
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """In-memory {split: (lr, hr)} float16 patches of a small collection, split by source image
    exactly as `build-patches` splits a store (downscaled copies for training images only).

    For collections that fit in memory (T91 is ~10 MB) where no Zarr store is wanted."""
    splits = assign_splits(sorted(images), val_fraction)
    out: dict[str, tuple[list, list]] = {"train": ([], []), "val": ([], [])}
    for key in sorted(images):
        split = splits[key]
        for factor in augment_scales if split == "train" else (1.0,):
            lr, hr, _ = image_patches(images[key], scale, size, stride, factor)
            out[split][0].append(lr.astype(np.float16))
            out[split][1].append(hr.astype(np.float16))
    empty = np.zeros((0, size, size), np.float16)
    return {s: (np.concatenate(lr) if lr else empty, np.concatenate(hr) if hr else empty)
            for s, (lr, hr) in out.items()}
