"""Build a patch store from an image collection, with Dask doing the per-image work.

Two passes of coarse Dask tasks (one per group of images, one per shard):
1. `inspect_group` decodes each image (catching unreadable, truncated or too-small files) and
   counts its patches; `plan_shards` (pure) turns the counts into shard-aligned regions.
2. `write_shard` extracts the patches of exactly one shard, writes that region, then the
   shard's completion marker, so parallel writes need no locks and a retried task rewrites
   only its own shard.
The store is published (`complete: true`) only when every shard has its marker. A build that
died half-way (or had a shard fail) resumes on re-run: same fingerprint, same arrays, and only
the shards without a marker are written (`srcnn.store.open_for_build`).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

import dask
import numpy as np
from PIL import Image

from srcnn.color import bicubic_resize, training_planes
from srcnn.config import PatchConfig
from srcnn.images import BadImageError, decode_image, read_image
from srcnn.patches import assign_splits, crop_patches, grid_positions, patch_count, resized_size
from srcnn.storage import filesystem, join, list_images
from srcnn.store import (
    SourceEntry,
    base_attrs,
    build_fingerprint,
    open_for_build,
    publish,
    read_marker,
    read_markers,
    store_arrays,
    store_attrs,
    table_attrs,
    write_marker,
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
    shards_written: int = 0  # shards this run wrote
    shards_reused: int = 0  # shards a failed or killed earlier run of the same build had written
    resumed: bool = False  # True when an unpublished store of the same build was resumed


@dataclass(frozen=True)
class BuildPlan:
    """Everything the write pass needs, computed by the driver from the inspection pass."""

    fingerprint: str
    entries: list[SourceEntry]
    skipped: list[dict]
    n_images: int
    shards: list[ShardPlan]
    attrs: dict

    @property
    def n_patches(self) -> int:
        return self.shards[-1].stop if self.shards else 0


class ShardWriteError(RuntimeError):
    """Some shards failed; the others are written and marked, so a re-run redoes only these."""


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
    """Cut the concatenation of per-image patch ranges into shards of `shard_patches`, in one
    walk over entries and shards together (linear in both: at a million images, checking
    every entry against every shard was ~10^11 steps)."""
    plans, pieces, start, entry_start = [], [], 0, 0
    for entry, n in enumerate(counts):
        done = 0  # patches of this entry already placed
        while done < n:
            take = min(n - done, start + shard_patches - (entry_start + done))
            pieces.append(Piece(entry, done, done + take))
            done += take
            if entry_start + done == start + shard_patches:  # the shard is full
                plans.append(ShardPlan(len(plans), start, start + shard_patches, tuple(pieces)))
                start, pieces = start + shard_patches, []
        entry_start += n
    if pieces:
        plans.append(ShardPlan(len(plans), start, entry_start, tuple(pieces)))
    return plans


def piece_patches(img: Image.Image, entry: SourceEntry, piece: Piece, config: PatchConfig,
                  ) -> dict[str, np.ndarray]:
    """The arrays of patches [piece.start, piece.stop) of one entry: `lr`, `hr` (float16),
    `position`, and `lr_native` (the LR patches) when the grid is aligned to the scale.

    The same patches as `image_patches(...)[piece.start:piece.stop]`, but only this piece is
    cropped, from planes cast to float16 once: at stride 7 every pixel lies in ~20 patches,
    and an image can straddle shards, so cutting all its patches per shard was most of a
    worker's time (tested equal to `image_patches`).
    """
    if entry.factor != 1.0:
        img = bicubic_resize(img.convert("RGB"), resized_size(img.width, img.height, entry.factor))
    lr_y, bic_y, hr_y = training_planes(img, config.scale)
    positions = grid_positions(*hr_y.shape, config.patch_size, config.stride)
    if len(positions) != entry.n_patches:  # the image changed since it was inspected
        raise RuntimeError(f"{entry.key}: {len(positions)} patches, inspected {entry.n_patches}")
    pos = positions[piece.start : piece.stop]
    out = {"lr": crop_patches(bic_y.astype(np.float16), pos, config.patch_size),
           "hr": crop_patches(hr_y.astype(np.float16), pos, config.patch_size), "position": pos}
    if config.lr_native:  # the same windows of the LR image (positions are multiples of s)
        out["lr_native"] = crop_patches(lr_y.astype(np.float16), pos // config.scale,
                                        config.patch_size // config.scale)
    return out


def _marks(marker: dict | None, shard: ShardPlan, fingerprint: str) -> bool:
    """Whether `marker` records `shard` as written by build `fingerprint`."""
    return bool(marker) and (marker["fingerprint"], marker["start"], marker["stop"]) == (
        fingerprint, shard.start, shard.stop)


def write_shard(store_url: str, source_url: str, plan: ShardPlan,
                entries: Mapping[int, SourceEntry] | list[SourceEntry], config: PatchConfig,
                fingerprint: str) -> int:
    """Extract and write the patches of one shard, then its completion marker.

    `entries` needs only the entries of this shard's pieces (the driver sends just those).
    A shard already marked by this build is left alone: when a worker dies, Dask reruns the
    tasks whose results it held, and those shards are written already.
    """
    if _marks(read_marker(store_url, plan.index), plan, fingerprint):
        return plan.stop - plan.start
    fs, root = filesystem(source_url)  # once per shard: settings are read on every call
    parts: dict[str, list[np.ndarray]] = {name: [] for name in store_arrays(config)}
    for piece in plan.pieces:
        entry = entries[piece.entry]
        img = decode_image(fs.cat_file(posixpath.join(root.rstrip("/"), entry.key)), entry.key)
        for name, data in piece_patches(img, entry, piece, config).items():
            parts[name].append(data)
        parts["source"].append(np.full(piece.stop - piece.start, piece.entry, dtype=np.int32))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    write_region(store_url, plan.start, arrays)
    write_marker(store_url, plan.index, plan.start, plan.stop, fingerprint)
    return plan.stop - plan.start


def _write_shard_outcome(store_url: str, source_url: str, plan: ShardPlan,
                         entries: Mapping[int, SourceEntry], config: PatchConfig,
                         fingerprint: str) -> tuple[int, str | None]:
    """`write_shard`, but a failure comes back as a value, so one bad shard does not cancel
    the others: every shard that can be written is, and the driver raises after all ran."""
    try:
        return write_shard(store_url, source_url, plan, entries, config, fingerprint), None
    except Exception as exc:  # re-raised by the driver as ShardWriteError, with this reason
        log.exception("shard %d failed", plan.index)
        return 0, f"shard {plan.index}: {type(exc).__name__}: {exc}"


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def plan_entries(infos: list[ImageInfo], sources: dict[str, str], config: PatchConfig,
                 ) -> list[SourceEntry]:
    """One entry per (usable image, augmentation factor), with contiguous patch offsets."""
    good = [i for i in infos if i.error is None]
    splits = assign_splits([i.key for i in good], config.val_fraction)
    entries, offset = [], 0
    for info in good:
        factors = config.augment_scales if splits[info.key] == "train" else (1.0,)
        for factor in factors:
            w, h = resized_size(info.width, info.height, factor)
            n = patch_count(w, h, config.scale, config.patch_size, config.stride)
            if n:
                entries.append(SourceEntry(info.key, sources[info.key], w, h, offset, n,
                                           splits[info.key], factor))
                offset += n
    return entries


def plan_build(source_url: str, sources: dict[str, str], config: PatchConfig,
               fingerprint: str) -> BuildPlan:
    """Pass 1: inspect every image with Dask, then plan the entries and shards (pure)."""
    groups = _chunks(list(sources), config.images_per_task)
    infos = [i for g in dask.compute(*[dask.delayed(inspect_group)(source_url, g, config)
                                       for g in groups]) for i in g]
    skipped = [{"key": i.key, "reason": i.error} for i in infos if i.error is not None]
    n_images = sum(i.error is None for i in infos)
    if not n_images:
        raise ValueError(f"image collection {source_url}: no usable images ({skipped})")
    entries = plan_entries(infos, sources, config)
    shards = plan_shards([e.n_patches for e in entries], config.shard_patches)
    attrs = base_attrs(config, fingerprint) | {
        "n_patches": sum(e.n_patches for e in entries),
        "source_url": source_url,
        **table_attrs(entries),
        "skipped": skipped,
    }
    return BuildPlan(fingerprint, entries, skipped, n_images, shards, attrs)


def pending_shards(store_url: str, plan: BuildPlan) -> list[ShardPlan]:
    """The shards of `plan` without a completion marker of this very build."""
    markers = read_markers(store_url)
    return [s for s in plan.shards if not _marks(markers.get(s.index), s, plan.fingerprint)]


def build_patch_store(source_url: str, store_url: str, config: PatchConfig,
                      include: list[str] | None = None, force: bool = False) -> BuildReport:
    """Build (or confirm up to date, or finish) the patch store of `source_url` at `store_url`.

    Runs on whatever Dask scheduler is active (a distributed Client, if one is set).
    """
    sources = list_images(source_url, include=include)
    if not sources:
        raise FileNotFoundError(f"image collection {source_url}: no images found")
    fingerprint = build_fingerprint(sources, config)
    existing = store_attrs(store_url)
    if not force and existing and existing.get("complete") and existing.get("fingerprint") == fingerprint:
        log.info("patch store %s is up to date (fingerprint %s)", store_url, fingerprint[:12])
        n_images = int(existing["n_images"])
        return BuildReport(store_url, int(existing["n_patches"]), n_images,
                           existing.get("skipped", []), False, fingerprint)

    plan = plan_build(source_url, sources, config, fingerprint)
    resumed = open_for_build(store_url, plan.n_patches, config, plan.attrs, plan.entries,
                             resume=not force)
    todo = pending_shards(store_url, plan) if resumed else plan.shards
    if resumed:
        log.info("patch store %s: resuming build %s, %d of %d shards left", store_url,
                 fingerprint[:12], len(todo), len(plan.shards))
    # Each task gets only its own entries: handing every task the whole list made Dask walk
    # and ship it once per shard (seconds of driver time on an augmented T91).
    outcomes = dask.compute(*[dask.delayed(_write_shard_outcome)(
        store_url, source_url, s, {p.entry: plan.entries[p.entry] for p in s.pieces}, config,
        fingerprint) for s in todo])
    errors = [e for _, e in outcomes if e]
    if errors:
        raise ShardWriteError(f"patch store {store_url}: {len(errors)} of {len(todo)} shards "
                              f"failed (re-run to resume): " + "; ".join(errors))
    missing = pending_shards(store_url, plan)
    if missing:
        raise ShardWriteError(f"patch store {store_url}: shards without a completion marker: "
                              f"{[s.index for s in missing]}")
    publish(store_url, plan.attrs)
    log.info("patch store %s: %d patches from %d images (%d skipped, %d shards written, "
             "%d reused)", store_url, plan.n_patches, plan.n_images, len(plan.skipped),
             len(todo), len(plan.shards) - len(todo))
    return BuildReport(store_url, plan.n_patches, plan.n_images, plan.skipped, True, fingerprint,
                       shards_written=len(todo), shards_reused=len(plan.shards) - len(todo),
                       resumed=resumed)
