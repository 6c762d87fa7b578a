"""Build a patch store from an image collection, with Dask doing the per-image work.

Two passes of coarse Dask tasks (one per group of images, one per shard):
1. `inspect_group` reads each image's size from its header (`probe_image`: a ranged read, no
   pixel decoded; unreadable headers, empty or too-small files are skipped with a reason)
   and counts its patches; `srcnn.data.build.plan` (pure) turns the sizes into the source table,
   in columns, and each shard into arithmetic over its offsets.
2. `srcnn.data.build.shard_writer` writes each shard's region and marker, decoding each image it cuts
   from (the only decode of a build); an image whose pixels do not decode fails alone and
   is left out of the index the build publishes (a skipped image, with the reason).
The store is published (`complete: true`) only when every shard has its marker. A build that
died half-way (or had a shard fail) resumes on re-run: same fingerprint, same arrays, and only
the shards without a marker are written (`srcnn.data.store.patch_store.open_for_build`).

A published store with the same layout settings is updated instead (`srcnn.data.build.incremental`):
only added or changed images are inspected and only their new shards written, then the next
index version is written and published; readers keep the old version meanwhile.

Both passes go to Dask with at most `TASKS_IN_FLIGHT` tasks in flight, a new one as each ends
(`srcnn.concurrency`), and each task carries only its own images, or its own pieces and rows: the
driver of a million-image build holds a window of tasks, not a million.
(`ShardWriteError`, `piece_patches` and `write_shard` live in `srcnn.data.build.shard_writer`.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from srcnn.concurrency import run_bounded
from srcnn.config import PatchConfig
from srcnn.data.build.incremental import (
    array_chunks,
    diff_listing,
    drop_old_indexes,
    grow_arrays,
    next_index_path,
    plan_increment,
    read_index,
    rebuild_reason,
    write_index,
)
from srcnn.data.build.plan import BuildPlan, ImageSizes, plan_from_sizes
from srcnn.data.build.shard_writer import (
    TASKS_IN_FLIGHT,
    pending_shards,
    without_bad,
    write_and_check,
)
from srcnn.data.images import BadImageError, probe_image
from srcnn.data.patches import patch_count
from srcnn.data.store.attrs import StoreAttrs
from srcnn.data.store.patch_store import (
    build_fingerprint,
    open_for_build,
    publish,
    store_arrays,
    store_attrs,
)
from srcnn.data.store.source_table import SourceTable
from srcnn.storage import join, list_images

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


def inspect_group(source_url: str, keys: list[str], config: PatchConfig) -> list[ImageInfo]:
    """Sizes and patch counts of `keys`, from their headers (the write pass decodes each
    image, once per shard it feeds, and drops one that does not decode)."""
    infos = []
    for key in keys:
        try:
            width, height = probe_image(join(source_url, key), key)
            n = patch_count(width, height, config.scale, config.patch_size, config.stride)
            if n == 0:
                raise BadImageError(
                    key,
                    f"too small ({width}x{height}) for one "
                    f"{config.patch_size}px patch at x{config.scale}",
                )
            infos.append(ImageInfo(key, width, height, n))
        except BadImageError as exc:
            log.warning("skipping %s", exc)
            infos.append(ImageInfo(key, error=exc.reason))
    return infos


def inspect_images(
    source_url: str, keys: list[str], config: PatchConfig, tasks_in_flight: int = TASKS_IN_FLIGHT
) -> ImageSizes:
    """Pass 1: the size of every image (or why it is skipped), one task per
    `images_per_task` images, reduced into columns as each task returns."""
    width, height = np.zeros(len(keys), np.int32), np.zeros(len(keys), np.int32)
    errors: dict[int, str] = {}
    step = config.images_per_task
    groups = ((i, (source_url, keys[i : i + step], config)) for i in range(0, len(keys), step))
    for first, infos in run_bounded(inspect_group, groups, tasks_in_flight):
        for i, info in enumerate(infos, first):
            if info.error is None:
                width[i], height[i] = info.width, info.height
            else:
                errors[i] = info.error
    return ImageSizes(width, height, errors)


def plan_build(
    source_url: str,
    sources: dict[str, str],
    config: PatchConfig,
    fingerprint: str,
    tasks_in_flight: int = TASKS_IN_FLIGHT,
) -> BuildPlan:
    """Pass 1: inspect every image with Dask, then plan the entries and shards (pure)."""
    sizes = inspect_images(source_url, list(sources), config, tasks_in_flight)
    return plan_from_sizes(source_url, sources, sizes, config, fingerprint)


def stored_plan(store_url: str, attrs: StoreAttrs, config: PatchConfig) -> BuildPlan:
    """The plan of the unpublished build whose root attributes are `attrs` (same listing and
    settings: same fingerprint), read back from the index it wrote when it created the
    store, so a retried or re-run build re-lists the images but does not inspect them again."""
    table = SourceTable.from_columns(read_index(store_url, attrs))
    return BuildPlan(attrs.fingerprint, table, list(attrs.skipped), table.n_images,
                     config.shard_patches, attrs.replace(complete=False))


def build_increment(
    source_url: str,
    store_url: str,
    config: PatchConfig,
    sources: dict[str, str],
    fingerprint: str,
    existing: StoreAttrs,
    tasks_in_flight: int = TASKS_IN_FLIGHT,
) -> BuildReport:
    """Update the published store (root attributes `existing`) to the build of `sources`:
    inspect and write only added and changed images, then publish the next index version."""
    published = read_index(store_url, existing)
    diff = diff_listing(published, sources)
    sizes = inspect_images(source_url, diff.new_keys, config, tasks_in_flight)
    plan = plan_increment(source_url, existing, published, diff, sizes, config, fingerprint)
    if plan.n_shards > plan.first_shard:
        grow_arrays(store_url, plan.extent, list(store_arrays(config)))
    written, bad = write_and_check(
        store_url, source_url, plan, pending_shards(store_url, plan), config, tasks_in_flight
    )
    path = plan.attrs.sources_path
    table, attrs = without_bad(source_url, plan, bad, path) if bad else (plan.table, plan.attrs)
    write_index(store_url, table, path)
    publish(store_url, attrs)  # one write of zarr.json: readers switch versions here
    drop_old_indexes(store_url, keep=(path, existing.sources_path))
    reused = plan.n_shards - plan.first_shard - written
    # listed images new to the index that are still unusable (skipped again) are not added
    added = diff.added - sum(
        diff.prior_val[i] < 0 and (i in sizes.errors or key in bad)
        for i, key in enumerate(diff.new_keys)
    )
    log.info(
        "patch store %s: updated to %s: %d images added, %d changed, %d removed, %d kept; "
        "%d shards written (%d reused), %d of %d patches indexed",
        store_url,
        fingerprint[:12],
        added,
        diff.changed,
        diff.removed,
        diff.kept,
        written,
        reused,
        attrs.n_patches,
        plan.extent,
    )
    return BuildReport(
        store_url,
        attrs.n_patches,
        table.n_images,
        attrs.skipped,
        True,
        fingerprint,
        shards_written=written,
        shards_reused=reused,
        resumed=reused > 0,
        incremental=True,
        images_added=int(added),
        images_removed=diff.removed,
        images_changed=diff.changed,
        images_kept=diff.kept,
    )


def build_patch_store(
    source_url: str,
    store_url: str,
    config: PatchConfig,
    include: list[str] | None = None,
    force: bool = False,
    tasks_in_flight: int = TASKS_IN_FLIGHT,
) -> BuildReport:
    """Build (or confirm up to date, or finish) the patch store of `source_url` at `store_url`.

    Runs on whatever Dask scheduler is active (a distributed Client, if one is set), at most
    `tasks_in_flight` tasks at a time.
    """
    sources = list_images(source_url, include=include)
    if not sources:
        raise FileNotFoundError(f"image collection {source_url}: no images found")
    fingerprint = build_fingerprint(sources, config)
    existing = store_attrs(store_url)
    if not force and existing and existing.complete and existing.fingerprint == fingerprint:
        log.info("patch store %s is up to date (fingerprint %s)", store_url, fingerprint[:12])
        return BuildReport(store_url, existing.n_patches, existing.n_images, existing.skipped,
                           False, fingerprint)

    if not force and existing and existing.complete:
        reason = rebuild_reason(existing, source_url, config, array_chunks(store_url))
        if reason is None:
            return build_increment(
                source_url, store_url, config, sources, fingerprint, existing, tasks_in_flight
            )
        log.info("patch store %s: rebuilding whole (%s)", store_url, reason)

    if not force and existing and not existing.complete and existing.fingerprint == fingerprint:
        plan = stored_plan(store_url, existing, config)  # a retry: no second inspection pass
    else:
        plan = plan_build(source_url, sources, config, fingerprint, tasks_in_flight)
    resumed = open_for_build(
        store_url, plan.extent, config, plan.attrs, plan.table, resume=not force
    )
    todo = pending_shards(store_url, plan) if resumed else range(plan.n_shards)
    written, bad = write_and_check(store_url, source_url, plan, todo, config, tasks_in_flight)
    reused = plan.n_shards - written
    if resumed:
        log.info(
            "patch store %s: resumed build %s, %d of %d shards were left",
            store_url,
            fingerprint[:12],
            written,
            plan.n_shards,
        )
    attrs, n_images = plan.attrs, plan.n_images
    if bad:  # published as the next index version: the one created with the store has them
        path = next_index_path(plan.attrs)
        table, attrs = without_bad(source_url, plan, bad, path)
        write_index(store_url, table, path)
        n_images = table.n_images
    publish(store_url, attrs)
    log.info(
        "patch store %s: %d patches from %d images (%d skipped, %d shards written, %d reused)",
        store_url,
        attrs.n_patches,
        n_images,
        len(attrs.skipped),
        written,
        reused,
    )
    return BuildReport(
        store_url,
        attrs.n_patches,
        n_images,
        attrs.skipped,
        True,
        fingerprint,
        shards_written=written,
        shards_reused=reused,
        resumed=resumed,
        images_added=n_images,
    )
