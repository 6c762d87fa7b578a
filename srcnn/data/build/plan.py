"""Planning a patch-store build in columns (pure: no I/O, no Dask).

The inspection pass gives each listed image's size; `plan_entries` turns the sizes into the
source table (one row per usable image and downscaled copy, with contiguous patch offsets)
and a shard is arithmetic over those offsets: `shard_plan` cuts one shard's pieces when the
driver submits that shard (`np.searchsorted`), so no list of every shard's pieces exists.
A million images (~5 million rows, ~10^6 shards) plan in seconds, in ~130 MB of columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress

import numpy as np

from srcnn.config import PatchConfig
from srcnn.data.patches import patch_counts, resized_sizes, val_mask
from srcnn.data.store.attrs import StoreAttrs
from srcnn.data.store.patch_store import table_attrs
from srcnn.data.store.source_table import SourceEntry, SourceTable

IMAGES_PER_STEP = 16384  # images turned into rows at a time (bounds the transients)


@dataclass(frozen=True)
class Piece:
    """Patches [start, stop) of source `entry` (index into the store's sources)."""

    entry: int
    start: int
    stop: int


@dataclass(frozen=True)
class ShardPlan:
    index: int
    start: int  # first patch index of the shard in the store
    stop: int
    pieces: tuple[Piece, ...]


@dataclass(frozen=True, eq=False)
class ImageSizes:
    """What the inspection pass found for each image of the listing, in listing order."""

    width: np.ndarray  # (n,) int32, 0 where unusable
    height: np.ndarray  # (n,) int32
    errors: dict[int, str]  # {listing index: why the image is skipped}


def shard_plan(offset: np.ndarray, n_patches: np.ndarray, index: int, shard_patches: int,
               ) -> ShardPlan:
    """Shard `index` of the concatenated patch ranges of rows with these start `offset`s and
    counts (both in row order, offsets ascending): its pieces, from two binary searches."""
    total = int(offset[-1]) + int(n_patches[-1]) if len(offset) else 0
    start = index * shard_patches
    if not 0 <= start < total:
        raise IndexError(f"shard {index}: the plan has {-(-total // shard_patches)} shards "
                         f"of {shard_patches} patches")
    stop = min(start + shard_patches, total)
    # rows from the last one starting at or before `start` to the last starting before `stop`
    # (a few rows: plain Python over them beats more numpy calls, ~10 us a shard)
    lo = max(int(offset.searchsorted(start, side="right")) - 1, 0)
    hi = int(offset.searchsorted(stop, side="left"))
    pieces = tuple(Piece(row, max(a, start) - a, min(a + n, stop) - a)
                   for row, a, n in zip(range(lo, hi), offset[lo:hi].tolist(),
                                        n_patches[lo:hi].tolist())
                   if n and a + n > start)  # not empty rows, nor one ending at `start`
    return ShardPlan(index, start, stop, pieces)


def plan_shards(counts: Sequence[int], shard_patches: int) -> list[ShardPlan]:
    """Every shard of rows with these patch counts (for tests and small plans: a build cuts
    each shard with `shard_plan` when it submits it)."""
    n = np.asarray(counts, dtype=np.int64)
    offset = np.cumsum(n) - n
    n_shards = -(-int(n.sum()) // shard_patches)
    return [shard_plan(offset, n, i, shard_patches) for i in range(n_shards)]


def plan_entries(sizes: ImageSizes, keys: Sequence[str], fingerprints: Sequence[str],
                 config: PatchConfig, val: np.ndarray | None = None, start: int = 0,
                 ) -> SourceTable:
    """One row per (usable image, factor, copy), image-major in listing order, factors in
    `augment_scales` order and `copies` copies of each for training images, and 1.0 (copy 0)
    alone for validation ones; rows without a patch are left out. The split is `val` ((n,) bool, by listing index) where
    given, else `assign_splits` over the usable keys; patch offsets start at `start`."""
    usable = np.ones(len(keys), dtype=bool)
    usable[list(sizes.errors)] = False
    good = np.flatnonzero(usable)
    if val is None:
        val = np.zeros(len(keys), dtype=bool)
        val[good] = val_mask(list(compress(keys, usable)), config.val_fraction)
    augment = tuple(config.augment_scales)
    factors = augment if 1.0 in augment else augment + (1.0,)
    # which (image, variant) pairs become rows: (m, V) per step of images, variant v being
    # factor v // copies, copy v % copies
    copies = config.copies
    variant_factor = np.repeat(np.arange(len(factors)), copies)
    variant_copy = np.tile(np.arange(copies), len(factors))
    train_factor = variant_factor < len(augment)
    val_factor = (np.asarray(factors)[variant_factor] == 1.0) & (variant_copy == 0)

    def step(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        w, h = sizes.width[images], sizes.height[images]
        sized = [resized_sizes(w, h, f) for f in factors]
        width = np.stack([sized[f][0] for f in variant_factor], axis=1)
        height = np.stack([sized[f][1] for f in variant_factor], axis=1)
        n = patch_counts(width, height, config.scale, config.patch_size, config.stride)
        wanted = np.where(val[images][:, None], val_factor, train_factor)
        return width, height, n, wanted & (n > 0)

    steps = [good[i : i + IMAGES_PER_STEP] for i in range(0, len(good), IMAGES_PER_STEP)]
    n_rows = sum(int(step(images)[3].sum()) for images in steps)  # count, then fill in place
    columns = {"image": np.int32, "factor": np.int8, "width": np.int32, "height": np.int32,
               "offset": np.int64, "n_patches": np.int32, "val": bool, "copy": np.int8}
    out = {name: np.empty(n_rows, dtype=dtype) for name, dtype in columns.items()}
    at, offset = 0, start
    for images in steps:
        width, height, n, keep = step(images)
        rows, variant = np.nonzero(keep)  # row-major: image by image, variants in order
        k, counts = len(rows), n[rows, variant]
        part = {"image": images[rows], "factor": variant_factor[variant],
                "copy": variant_copy[variant], "width": width[rows, variant],
                "height": height[rows, variant], "n_patches": counts,
                "val": val[images[rows]], "offset": offset + np.cumsum(counts) - counts}
        for name, values in part.items():
            out[name][at : at + k] = values
        at, offset = at + k, offset + int(counts.sum())
    return SourceTable(keys, fingerprints, factors, **out)


@dataclass(frozen=True, eq=False)
class BuildPlan:
    """Everything the write pass needs, computed by the driver from the inspection pass."""

    fingerprint: str
    table: SourceTable
    skipped: list[dict]
    n_images: int
    shard_patches: int
    attrs: StoreAttrs
    first_shard: int = 0  # shards below it are not this build's (an incremental build's base)

    @property
    def n_patches(self) -> int:
        """Indexed patches (the extent less the unindexed ranges an incremental build leaves)."""
        return self.attrs.n_patches

    @property
    def extent(self) -> int:
        """The patch index space [0, extent) of the store this plan publishes."""
        return self.attrs.patch_extent

    @property
    def n_shards(self) -> int:
        """Shards of the whole index space (this build writes [first_shard, n_shards))."""
        return -(-self.extent // self.shard_patches)

    def shard(self, index: int) -> ShardPlan:
        return shard_plan(self.table.offset, self.table.n_patches, index, self.shard_patches)

    def entries_of(self, shard: ShardPlan) -> dict[int, SourceEntry]:
        """{row: entry} of the rows `shard` cuts from: all that shard's task needs."""
        rows = [p.entry for p in shard.pieces]
        return dict(zip(rows, self.table.entries(rows)))


def plan_from_sizes(source_url: str, sources: dict[str, str], sizes: ImageSizes,
                    config: PatchConfig, fingerprint: str) -> BuildPlan:
    """The plan of a build whose inspection pass found `sizes` (listing order)."""
    keys, fingerprints = list(sources), list(sources.values())
    skipped = [{"key": keys[i], "reason": reason} for i, reason in sorted(sizes.errors.items())]
    n_images = len(keys) - len(sizes.errors)
    if not n_images:
        raise ValueError(f"image collection {source_url}: no usable images ({skipped})")
    table = plan_entries(sizes, keys, fingerprints, config)
    attrs = StoreAttrs.of_build(config, fingerprint, n_patches=table.total_patches,
                                extent=table.total_patches, source_url=source_url,
                                **table_attrs(table), skipped=skipped)
    return BuildPlan(fingerprint, table, skipped, n_images, config.shard_patches, attrs)
