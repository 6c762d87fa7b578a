"""Build a patch store from an image collection, with Dask doing the per-image work.

Two passes of coarse Dask tasks (one per group of images, one per shard):
1. `inspect_group` decodes each image (catching unreadable, truncated or too-small files) and
   counts its patches; `plan_shards` (pure) turns the counts into shard-aligned regions.
2. `write_shard` extracts the patches of exactly one shard and writes that region, so parallel
   writes need no locks and a retried task rewrites only its own shard.
The store is published (`complete: true`) only when every shard is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dask
import numpy as np

from srcnn.config import PatchConfig
from srcnn.images import BadImageError, read_image
from srcnn.patches import image_patches, patch_count, resized_size
from srcnn.storage import join, list_images
from srcnn.store import (
    SourceEntry,
    assign_splits,
    base_attrs,
    build_fingerprint,
    create_store,
    entries_as_attrs,
    publish,
    store_attrs,
    write_region,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageInfo:
    key: str
    width: int = 0
    height: int = 0
    n_patches: int = 0
    error: str | None = None


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


@dataclass(frozen=True)
class BuildReport:
    store: str
    n_patches: int
    n_images: int
    skipped: list[dict]
    built: bool  # False when the store was already up to date
    fingerprint: str


def inspect_group(source_url: str, keys: list[str], config: PatchConfig) -> list[ImageInfo]:
    infos = []
    for key in keys:
        try:
            img = read_image(join(source_url, key), key)
            n = patch_count(img.width, img.height, config.scale, config.patch_size, config.stride)
            if n == 0:
                raise BadImageError(key, f"too small ({img.width}x{img.height}) for one "
                                         f"{config.patch_size}px patch at x{config.scale}")
            infos.append(ImageInfo(key, img.width, img.height, n))
        except BadImageError as exc:
            log.warning("skipping %s", exc)
            infos.append(ImageInfo(key, error=exc.reason))
    return infos


def plan_shards(counts: list[int], shard_patches: int) -> list[ShardPlan]:
    """Cut the concatenation of per-image patch ranges into shards of `shard_patches`."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    total = int(offsets[-1])
    plans = []
    for index, start in enumerate(range(0, total, shard_patches)):
        stop = min(start + shard_patches, total)
        pieces = []
        for entry, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                pieces.append(Piece(entry, int(lo - a), int(hi - a)))
        plans.append(ShardPlan(index, start, stop, tuple(pieces)))
    return plans


def write_shard(store_url: str, source_url: str, plan: ShardPlan, entries: list[SourceEntry],
                config: PatchConfig) -> int:
    parts: dict[str, list[np.ndarray]] = {"lr": [], "hr": [], "source": [], "position": []}
    for piece in plan.pieces:
        entry = entries[piece.entry]
        img = read_image(join(source_url, entry.key), entry.key)
        lr, hr, pos = image_patches(img, config.scale, config.patch_size, config.stride,
                                    entry.factor)
        sl = slice(piece.start, piece.stop)
        parts["lr"].append(lr[sl].astype(np.float16))
        parts["hr"].append(hr[sl].astype(np.float16))
        parts["position"].append(pos[sl])
        parts["source"].append(np.full(piece.stop - piece.start, piece.entry, dtype=np.int32))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    write_region(store_url, plan.start, arrays)
    return plan.stop - plan.start


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def build_patch_store(source_url: str, store_url: str, config: PatchConfig,
                      include: list[str] | None = None, force: bool = False) -> BuildReport:
    """Build (or confirm up to date) the patch store of `source_url` at `store_url`.

    Runs on whatever Dask scheduler is active (a distributed Client, if one is set).
    """
    sources = list_images(source_url, include=include)
    if not sources:
        raise FileNotFoundError(f"image collection {source_url}: no images found")
    fingerprint = build_fingerprint(sources, config)
    existing = store_attrs(store_url)
    if not force and existing and existing.get("complete") and existing.get("fingerprint") == fingerprint:
        log.info("patch store %s is up to date (fingerprint %s)", store_url, fingerprint[:12])
        n_images = len({s["key"] for s in existing["sources"]})
        return BuildReport(store_url, int(existing["n_patches"]), n_images,
                           existing.get("skipped", []), False, fingerprint)

    keys = list(sources)
    groups = _chunks(keys, config.images_per_task)
    infos = [i for g in dask.compute(*[dask.delayed(inspect_group)(source_url, g, config)
                                       for g in groups]) for i in g]
    good = [i for i in infos if i.error is None]
    skipped = [{"key": i.key, "reason": i.error} for i in infos if i.error is not None]
    if not good:
        raise ValueError(f"image collection {source_url}: no usable images ({skipped})")
    splits = assign_splits([i.key for i in good], config.val_fraction)
    entries = []
    offset = 0
    for info in good:
        factors = config.augment_scales if splits[info.key] == "train" else (1.0,)
        for factor in factors:
            w, h = resized_size(info.width, info.height, factor)
            n = patch_count(w, h, config.scale, config.patch_size, config.stride)
            if n:
                entries.append(SourceEntry(info.key, sources[info.key], w, h, offset, n,
                                           splits[info.key], factor))
                offset += n
    total = offset
    attrs = base_attrs(config, fingerprint) | {
        "n_patches": total,
        "source_url": source_url,
        "sources": entries_as_attrs(entries),
        "skipped": skipped,
    }
    create_store(store_url, total, config, attrs)
    plans = plan_shards([e.n_patches for e in entries], config.shard_patches)
    written = dask.compute(*[dask.delayed(write_shard)(store_url, source_url, p, entries, config)
                             for p in plans])
    if sum(written) != total:
        raise RuntimeError(f"patch store {store_url}: wrote {sum(written)} of {total} patches")
    publish(store_url, attrs)
    log.info("patch store %s: %d patches from %d images (%d skipped)",
             store_url, total, len(good), len(skipped))
    return BuildReport(store_url, total, len(good), skipped, True, fingerprint)
