"""Build a patch store from an image collection, with Dask doing the per-image work.

Two passes of coarse Dask tasks (one per group of images, one per shard):
1. `inspect_group` decodes each image (catching unreadable, truncated or too-small files) and
   counts its patches; `srcnn.build_plan` (pure) turns the sizes into the source table, in
   columns, and each shard into arithmetic over its offsets.
2. `write_shard` extracts the patches of exactly one shard, writes that region, then the
   shard's completion marker, so parallel writes need no locks and a retried task rewrites
   only its own shard.
The store is published (`complete: true`) only when every shard has its marker. A build that
died half-way (or had a shard fail) resumes on re-run: same fingerprint, same arrays, and only
the shards without a marker are written (`srcnn.store.open_for_build`).

A published store with the same layout settings is updated instead (`srcnn.incremental`):
only added or changed images are inspected and only their new shards written, then the next
index version is written and published; readers keep the old version meanwhile.

Both passes go to Dask in bounded batches (`TASKS_PER_BATCH` tasks per `dask.compute`, on
whatever scheduler is active) and each task carries only its own images, or its own pieces
and rows: the driver of a million-image build holds one batch of tasks, not a million.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice

import dask
import numpy as np
from PIL import Image

from srcnn.build_plan import (  # noqa: F401  (Piece and plan_shards: for callers and tests)
    BuildPlan,
    ImageSizes,
    Piece,
    ShardPlan,
    plan_from_sizes,
    plan_shards,
)
from srcnn.color import bicubic_resize, training_planes
from srcnn.config import PatchConfig
from srcnn.images import BadImageError, decode_image, read_image
from srcnn.incremental import (
    array_chunks,
    diff_listing,
    drop_old_indexes,
    grow_arrays,
    plan_increment,
    read_index,
    rebuild_reason,
    write_index,
)
from srcnn.patches import crop_patches, grid_positions, patch_count, resized_size
from srcnn.storage import filesystem, join, list_images
from srcnn.store import (
    SourceEntry,
    build_fingerprint,
    index_path,
    open_for_build,
    publish,
    read_marker,
    read_markers_of,
    store_arrays,
    store_attrs,
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
class BuildReport:
    store: str
    n_patches: int
    n_images: int
    skipped: list[dict]
    built: bool  # False when the store was already up to date
    fingerprint: str
    shards_written: int = 0  # shards this run wrote
    shards_reused: int = 0  # shards a failed or killed earlier run of the same build had written
    resumed: bool = False  # True when an unfinished run of the same build was resumed
    incremental: bool = False  # True when a published store was updated, not rebuilt
    images_added: int = 0  # images new to the index (a full build: every indexed image)
    images_removed: int = 0  # images of the published index no longer listed
    images_changed: int = 0  # images whose fingerprint changed (their patches rewritten)
    images_kept: int = 0  # images whose rows (offsets, split, patches) stayed


TASKS_PER_BATCH = 256  # tasks per dask.compute: few to hold, enough to keep workers busy
MARKERS_PER_READ = 1024  # completion markers fetched per batched read
ERRORS_REPORTED = 20  # failed shards named in a ShardWriteError (the count is always exact)


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


def _marks(marker: dict | None, start: int, stop: int, fingerprint: str) -> bool:
    """Whether `marker` records patches [start, stop) as written by build `fingerprint`."""
    return bool(marker) and (marker["fingerprint"], marker["start"], marker["stop"]) == (
        fingerprint, start, stop)


def write_shard(store_url: str, source_url: str, plan: ShardPlan,
                entries: Mapping[int, SourceEntry] | list[SourceEntry], config: PatchConfig,
                fingerprint: str) -> int:
    """Extract and write the patches of one shard, then its completion marker.

    `entries` needs only the entries of this shard's pieces (the driver sends just those).
    A shard already marked by this build is left alone: when a worker dies, Dask reruns the
    tasks whose results it held, and those shards are written already.
    """
    if _marks(read_marker(store_url, plan.index), plan.start, plan.stop, fingerprint):
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


def _batches(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last may be shorter), taken from `items` as needed."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def inspect_images(source_url: str, keys: list[str], config: PatchConfig,
                   tasks_per_batch: int = TASKS_PER_BATCH) -> ImageSizes:
    """Pass 1: the size of every image (or why it is skipped), one task per
    `images_per_task` images, reduced into columns as each batch of tasks returns."""
    width, height = np.zeros(len(keys), np.int32), np.zeros(len(keys), np.int32)
    errors: dict[int, str] = {}
    step = config.images_per_task
    for batch in _batches(range(0, len(keys), step), tasks_per_batch):
        results = dask.compute(*[dask.delayed(inspect_group)(source_url, keys[i : i + step], config)
                                 for i in batch])
        for first, infos in zip(batch, results):
            for i, info in enumerate(infos, first):
                if info.error is None:
                    width[i], height[i] = info.width, info.height
                else:
                    errors[i] = info.error
    return ImageSizes(width, height, errors)


def plan_build(source_url: str, sources: dict[str, str], config: PatchConfig,
               fingerprint: str, tasks_per_batch: int = TASKS_PER_BATCH) -> BuildPlan:
    """Pass 1: inspect every image with Dask, then plan the entries and shards (pure)."""
    sizes = inspect_images(source_url, list(sources), config, tasks_per_batch)
    return plan_from_sizes(source_url, sources, sizes, config, fingerprint)


def pending_shards(store_url: str, plan: BuildPlan) -> Iterator[int]:
    """Indices of the shards of `plan` without a completion marker of this very build, the
    markers read a batch at a time as the indices are taken."""
    for batch in _batches(range(plan.first_shard, plan.n_shards), MARKERS_PER_READ):
        markers = read_markers_of(store_url, batch)
        for index in batch:
            start = index * plan.shard_patches
            stop = min(start + plan.shard_patches, plan.extent)
            if not _marks(markers.get(index), start, stop, plan.fingerprint):
                yield index


def write_shards(store_url: str, source_url: str, plan: BuildPlan, shards: Iterable[int],
                 config: PatchConfig, tasks_per_batch: int = TASKS_PER_BATCH,
                 ) -> tuple[int, int, list[str]]:
    """Pass 2: write `shards`, `tasks_per_batch` tasks per `dask.compute`; (shards submitted,
    shards failed, the reasons of the first ERRORS_REPORTED failures).

    Each task gets only its own pieces and rows, cut when its batch is submitted: handing
    every task the whole table made Dask walk and ship it once per shard, and cutting every
    shard up front held a million shards' pieces in the driver.
    """
    submitted, failed, reasons = 0, 0, []
    for batch in _batches(shards, tasks_per_batch):
        tasks = []
        for index in batch:
            shard = plan.shard(index)
            tasks.append(dask.delayed(_write_shard_outcome)(
                store_url, source_url, shard, plan.entries_of(shard), config, plan.fingerprint))
        for _, error in dask.compute(*tasks):
            if error:
                failed += 1
                if len(reasons) < ERRORS_REPORTED:
                    reasons.append(error)
        submitted += len(batch)
        log.debug("patch store %s: %d shards submitted, %d failed", store_url, submitted, failed)
    return submitted, failed, reasons


def _write_and_check(store_url: str, source_url: str, plan: BuildPlan, todo: Iterable[int],
                     config: PatchConfig, tasks_per_batch: int) -> int:
    """Write shards `todo` of `plan`, then check that every shard of it is marked; the
    number written. Raises ShardWriteError (the store unpublished) where any is not."""
    written, failed, reasons = write_shards(store_url, source_url, plan, todo, config,
                                            tasks_per_batch)
    if failed:
        more = f"; and {failed - len(reasons)} more" if failed > len(reasons) else ""
        raise ShardWriteError(f"patch store {store_url}: {failed} of {written} shards "
                              f"failed (re-run to resume): " + "; ".join(reasons) + more)
    missing, named = 0, []
    for index in pending_shards(store_url, plan):  # counted, never listed whole
        missing += 1
        named += [index][: ERRORS_REPORTED - len(named)]
    if missing:
        raise ShardWriteError(f"patch store {store_url}: {missing} shards without a "
                              f"completion marker, first {named}")
    return written


def build_increment(source_url: str, store_url: str, config: PatchConfig,
                    sources: dict[str, str], fingerprint: str, existing: dict,
                    tasks_per_batch: int = TASKS_PER_BATCH) -> BuildReport:
    """Update the published store (root attributes `existing`) to the build of `sources`:
    inspect and write only added and changed images, then publish the next index version."""
    published = read_index(store_url, existing)
    diff = diff_listing(published, sources)
    sizes = inspect_images(source_url, diff.new_keys, config, tasks_per_batch)
    plan = plan_increment(source_url, existing, published, diff, sizes, config, fingerprint)
    if plan.n_shards > plan.first_shard:
        grow_arrays(store_url, plan.extent, list(store_arrays(config)))
    written = _write_and_check(store_url, source_url, plan, pending_shards(store_url, plan),
                               config, tasks_per_batch)
    path = plan.attrs["sources_path"]
    write_index(store_url, plan.table, path)
    publish(store_url, plan.attrs)  # one write of zarr.json: readers switch versions here
    drop_old_indexes(store_url, keep=(path, index_path(existing)))
    reused = plan.n_shards - plan.first_shard - written
    # listed images new to the index that are still unusable (skipped again) are not added
    added = diff.added - sum(diff.prior_val[i] < 0 for i in sizes.errors)
    log.info("patch store %s: updated to %s: %d images added, %d changed, %d removed, %d kept; "
             "%d shards written (%d reused), %d of %d patches indexed", store_url,
             fingerprint[:12], added, diff.changed, diff.removed, diff.kept, written,
             reused, plan.n_patches, plan.extent)
    return BuildReport(store_url, plan.n_patches, plan.n_images, plan.skipped, True, fingerprint,
                       shards_written=written, shards_reused=reused, resumed=reused > 0,
                       incremental=True, images_added=int(added), images_removed=diff.removed,
                       images_changed=diff.changed, images_kept=diff.kept)


def build_patch_store(source_url: str, store_url: str, config: PatchConfig,
                      include: list[str] | None = None, force: bool = False,
                      tasks_per_batch: int = TASKS_PER_BATCH) -> BuildReport:
    """Build (or confirm up to date, or finish) the patch store of `source_url` at `store_url`.

    Runs on whatever Dask scheduler is active (a distributed Client, if one is set), at most
    `tasks_per_batch` tasks at a time.
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

    if not force and existing and existing.get("complete"):
        reason = rebuild_reason(existing, source_url, config, array_chunks(store_url))
        if reason is None:
            return build_increment(source_url, store_url, config, sources, fingerprint,
                                   existing, tasks_per_batch)
        log.info("patch store %s: rebuilding whole (%s)", store_url, reason)

    plan = plan_build(source_url, sources, config, fingerprint, tasks_per_batch)
    resumed = open_for_build(store_url, plan.extent, config, plan.attrs, plan.table,
                             resume=not force)
    todo = pending_shards(store_url, plan) if resumed else range(plan.n_shards)
    written = _write_and_check(store_url, source_url, plan, todo, config, tasks_per_batch)
    reused = plan.n_shards - written
    if resumed:
        log.info("patch store %s: resumed build %s, %d of %d shards were left", store_url,
                 fingerprint[:12], written, plan.n_shards)
    publish(store_url, plan.attrs)
    log.info("patch store %s: %d patches from %d images (%d skipped, %d shards written, "
             "%d reused)", store_url, plan.n_patches, plan.n_images, len(plan.skipped),
             written, reused)
    return BuildReport(store_url, plan.n_patches, plan.n_images, plan.skipped, True, fingerprint,
                       shards_written=written, shards_reused=reused, resumed=resumed,
                       images_added=plan.n_images)
