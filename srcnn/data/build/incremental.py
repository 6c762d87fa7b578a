"""Incremental patch-store builds: what changed since the published index, and the plan that
writes only that.

A published store whose layout settings match the build (`rebuild_reason` is None) is
updated instead of rebuilt: the listing is diffed with the published index by key and
fingerprint (`diff_listing`); kept rows keep their offsets and splits, removed images drop out,
a changed image's old rows drop out and it is planned as new. Only the new and changed images
are inspected; `plan_increment` gives them offsets from the next shard boundary at or after
the published `extent`, so the shards it writes are new objects and no stored one is touched.

Everything here derives from the published root attributes and index, never from the arrays'
sizes (which a killed run may have grown): a re-run computes the same plan, the same shards
and the same index path, and writes only the shards without this build's marker.

Splits stay by source image and stable: kept images keep theirs, a changed image keeps its
old split, a new image gets `split_of` (a hash of its key). The full build's fix-up (at least
one validation and one training image) is applied to the new images only, where the store
would otherwise lack a split: an image already assigned never moves, so an incremental store
can differ from a full build's in that degenerate case (and a build that only removes images
may leave a split empty; it is logged).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zarr

from srcnn.config import PatchConfig
from srcnn.data.build.plan import BuildPlan, ImageSizes, plan_entries
from srcnn.data.patches import ensure_both_splits, split_of
from srcnn.data.store.attrs import SOURCES, StoreAttrs
from srcnn.data.store.patch_store import (
    HR,
    _read_sources,
    _write_sources,
    table_attrs,
    zarr_store,
)
from srcnn.data.store.source_table import SPLITS, SourceTable
from srcnn.storage import filesystem

log = logging.getLogger(__name__)

# What a build's settings fix in the root attributes: a published store whose attributes differ
# in any of these is rebuilt whole, not updated.
LAYOUT_FIELDS = ("format", "scale", "patch_size", "stride", "val_fraction", "color_space",
                 "degradation", "augmentation", "has_lr")


@dataclass(frozen=True, eq=False)
class ListingDiff:
    """The listing against the published index."""

    kept_rows: np.ndarray  # (k,) int64 rows of the published index that stay, in order
    new_keys: list[str]  # added and changed images (to inspect), listing order
    new_fingerprints: list[str]
    prior_val: np.ndarray  # (len(new_keys),) int8: a changed image's old split (1 val), else -1
    added: int
    removed: int
    changed: int
    kept: int


def rebuild_reason(existing: StoreAttrs, source_url: str, config: PatchConfig,
                   chunks: tuple[int, int]) -> str | None:
    """Why a published store with root attributes `existing` and arrays of (chunk, shard)
    lengths `chunks` cannot be updated in place by a build of `source_url` with `config`
    (then it is rebuilt whole), or None where it can."""
    wanted = StoreAttrs.of_build(config, "")
    for name in LAYOUT_FIELDS:
        if getattr(existing, name) != getattr(wanted, name):
            return f"{name} {getattr(existing, name)!r} -> {getattr(wanted, name)!r}"
    if existing.source_url != source_url:
        return f"source_url {existing.source_url!r} -> {source_url!r}"
    if chunks != (config.chunk_patches, config.shard_patches):
        return f"chunk and shard lengths {chunks} -> {(config.chunk_patches, config.shard_patches)}"
    return None


def array_chunks(url: str) -> tuple[int, int]:
    """(chunk, shard) lengths of the store's patch arrays, along the patch index."""
    hr = zarr.open_group(zarr_store(url, read_only=True), mode="r")[HR]
    return int(hr.chunks[0]), int((hr.shards or hr.chunks)[0])


def read_index(url: str, attrs: StoreAttrs) -> dict[str, np.ndarray]:
    """The index version that root attributes `attrs` name, as columns."""
    return _read_sources(zarr.open_group(zarr_store(url, read_only=True), mode="r"), attrs)


def diff_listing(published: dict[str, np.ndarray], sources: dict[str, str]) -> ListingDiff:
    """Compare `sources` ({key: fingerprint}, the listing) with the published index by key."""
    row_keys, row_fps = published["key"].tolist(), published["fingerprint"].tolist()
    old = dict(zip(row_keys, row_fps))  # one entry per image (rows of an image agree)
    old_val = dict(zip(row_keys, (published["split"] == "val").tolist()))
    kept_rows = np.flatnonzero(np.fromiter((sources.get(k) == f for k, f in zip(row_keys, row_fps)),
                                           dtype=bool, count=len(row_keys)))
    new = [(k, f) for k, f in sources.items() if old.get(k) != f]
    changed = sum(k in old for k, _ in new)
    removed = sum(k not in sources for k in old)
    prior = np.array([int(old_val[k]) if k in old else -1 for k, _ in new], dtype=np.int8)
    return ListingDiff(kept_rows, [k for k, _ in new], [f for _, f in new], prior,
                       added=len(new) - changed, removed=removed, changed=changed,
                       kept=len(old) - changed - removed)


def new_splits(diff: ListingDiff, usable: np.ndarray, kept_val: np.ndarray,
               val_fraction: float) -> np.ndarray:
    """(len(diff.new_keys),) bool, True for validation: a changed image's old split, else
    `split_of`; then the fix-up over the new usable images where the store lacks a split."""
    val = np.array([bool(p) if p >= 0 else split_of(k, val_fraction) == "val"
                    for k, p in zip(diff.new_keys, diff.prior_val.tolist())], dtype=bool)
    candidates = np.flatnonzero(usable)
    if val_fraction <= 0 or len(kept_val) + len(candidates) < 2:
        return val
    has_val = bool(kept_val.any() or val[candidates].any())
    has_train = bool((~kept_val).any() or (~val[candidates]).any())
    if not ensure_both_splits(val, diff.new_keys, candidates.tolist(), has_val, has_train):
        log.warning("incremental build: the store keeps no %s image (no new image to assign)",
                    "validation" if not has_val else "training")
    return val


def next_index_path(attrs: StoreAttrs) -> str:
    """The group of the index version after the one `attrs` name (`sources` is version 1)."""
    path = attrs.sources_path
    version = 1 if path == SOURCES else int(path.rsplit("-v", 1)[1])
    return f"{SOURCES}-v{version + 1:06d}"


def _merge(published: dict[str, np.ndarray], diff: ListingDiff, new: SourceTable,
           ) -> SourceTable:
    """Kept rows (in published order) then the new rows, as one table."""
    new_columns = new.columns()
    return SourceTable.from_columns({
        name: np.concatenate([values[diff.kept_rows], new_columns[name]])
        for name, values in published.items()})


def plan_increment(source_url: str, existing: StoreAttrs, published: dict[str, np.ndarray],
                   diff: ListingDiff, sizes: ImageSizes, config: PatchConfig,
                   fingerprint: str) -> BuildPlan:
    """The plan that turns the published store into the build of the listing `diff` came
    from: only the new rows' shards to write, and the next index version's attributes."""
    usable = np.ones(len(diff.new_keys), dtype=bool)
    usable[list(sizes.errors)] = False
    kept_val = published["split"][diff.kept_rows] == SPLITS[1]
    val = new_splits(diff, usable, kept_val, config.val_fraction)
    shard = config.shard_patches
    published_extent = existing.patch_extent
    base = -(-published_extent // shard) * shard  # no stored shard object is rewritten
    new = plan_entries(sizes, diff.new_keys, diff.new_fingerprints, config, val=val, start=base)
    table = _merge(published, diff, new)
    if not len(table):
        raise ValueError(f"image collection {source_url}: no usable images")
    extent = max(published_extent, table.total_patches)  # never shrinks (old readers)
    skipped = [{"key": diff.new_keys[i], "reason": reason}
               for i, reason in sorted(sizes.errors.items())]
    attrs = StoreAttrs.of_build(config, fingerprint, n_patches=int(table.n_patches.sum()),
                                extent=extent, source_url=source_url, **table_attrs(table),
                                skipped=skipped, sources_path=next_index_path(existing))
    first = base // shard if len(new) else -(-extent // shard)  # no new rows: no shard
    return BuildPlan(fingerprint, table, skipped, table.n_images, shard, attrs, first_shard=first)


def grow_arrays(url: str, extent: int, names: Sequence[str]) -> None:
    """Resize the patch arrays to `extent` patches (metadata only: no chunk is written)."""
    root = zarr.open_group(zarr_store(url), mode="r+")
    for name in names:
        array = root[name]
        if array.shape[0] != extent:
            array.resize((extent, *array.shape[1:]))


def write_index(url: str, table: SourceTable, path: str) -> None:
    """Write index version `path` whole, replacing what a killed run left there (no reader
    reads it before the root attributes name it)."""
    fs, root = filesystem(url)
    folder = posixpath.join(root.rstrip("/"), path)
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    _write_sources(zarr.open_group(zarr_store(url), mode="r+"), table, path)


def drop_old_indexes(url: str, keep: Sequence[str]) -> list[str]:
    """Delete index versions other than `keep` (the current and the previous one, which a
    reader that opened before the last publish still reads); the names deleted."""
    fs, root = filesystem(url)
    fs.invalidate_cache()
    dropped = []
    for path in fs.ls(root.rstrip("/"), detail=False):
        name = posixpath.basename(path.rstrip("/"))
        if (name == SOURCES or name.startswith(f"{SOURCES}-v")) and name not in keep:
            fs.rm(path, recursive=True)
            dropped.append(name)
    return dropped
