"""The write pass of a patch-store build: each shard's patches cut, written to exactly its
region, then marked; the markers checked; images that did not decode left out of the index.

`write_shard` decodes each image it cuts from (the only decode of a build, once per shard an
image feeds), writes exactly its shard's region, then the shard's completion marker, so
parallel writes need no locks and a retried task rewrites only its own shard. An image whose
pixels do not decode (truncated after a good header) fails alone: its patches are left as
zeros, the marker names it, and `without_bad` leaves it out of the index the build publishes.
Shards go to Dask with at most `TASKS_IN_FLIGHT` tasks in flight, a new one as each ends
(`srcnn.concurrency`), each task with only its own pieces and rows.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from PIL import Image

from srcnn.concurrency import batches, run_bounded
from srcnn.config import PatchConfig
from srcnn.data.build.plan import BuildPlan, Piece, ShardPlan
from srcnn.data.degradation import bicubic_resize, degradation_copy, training_planes
from srcnn.data.images import BadImageError, decode_image
from srcnn.data.patches import crop_patches, grid_positions, resized_size
from srcnn.data.store.attrs import StoreAttrs
from srcnn.data.store.patch_store import (
    BICUBIC,
    LR,
    SourceEntry,
    read_marker,
    read_markers_of,
    store_arrays,
    table_attrs,
    write_marker,
    write_region,
)
from srcnn.data.store.source_table import SourceTable
from srcnn.storage import filesystem

log = logging.getLogger(__name__)

TASKS_IN_FLIGHT = 256  # tasks submitted and not yet returned: few to hold, enough to keep
                       # a cluster's workers busy
MARKERS_PER_READ = 1024  # completion markers fetched per batched read
ERRORS_REPORTED = 20  # failed shards named in a ShardWriteError (the count is always exact)


class ShardWriteError(RuntimeError):
    """Some shards failed; the others are written and marked, so a re-run redoes only these."""


def piece_patches(img: Image.Image, entry: SourceEntry, piece: Piece, config: PatchConfig,
                  ) -> dict[str, np.ndarray]:
    """The arrays of patches [piece.start, piece.stop) of one entry: `lr`, `hr` (float16),
    `position`, and `lr` (the LR patches) when the grid is aligned to the scale.

    The same patches as `image_patches(...)[piece.start:piece.stop]`, but only this piece is
    cropped, from planes cast to float16 once: at stride 7 every pixel lies in ~20 patches,
    and an image can straddle shards, so cutting all its patches per shard was most of a
    worker's time (tested equal to `image_patches`).
    """
    if entry.factor != 1.0:
        img = bicubic_resize(img.convert("RGB"), resized_size(img.width, img.height, entry.factor))
    # each (image, factor, copy) draws its own degradation, the same in every build
    lr_y, bic_y, hr_y = training_planes(img, config.scale, config.degradation, entry.key,
                                        copy=degradation_copy(entry.factor, entry.copy))
    positions = grid_positions(*hr_y.shape, config.patch_size, config.stride)
    if len(positions) != entry.n_patches:  # the header lied, or the image changed since
        raise BadImageError(entry.key, f"{len(positions)} patches when decoded, "
                                       f"{entry.n_patches} from its header")
    pos = positions[piece.start : piece.stop]
    out = {BICUBIC: crop_patches(bic_y.astype(np.float16), pos, config.patch_size),
           "hr": crop_patches(hr_y.astype(np.float16), pos, config.patch_size), "position": pos}
    if config.lr_native:  # the same windows of the LR image (positions are multiples of s)
        out[LR] = crop_patches(lr_y.astype(np.float16), pos // config.scale,
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
    layout = store_arrays(config, plan.stop - plan.start)
    arrays = {name: np.zeros(shape, dtype) for name, (shape, dtype) in layout.items()}
    bad: dict[str, str] = {}
    at = 0
    for piece in plan.pieces:
        entry, n = entries[piece.entry], piece.stop - piece.start
        try:  # sizes came from the header: truncated or corrupt data shows here
            img = decode_image(fs.cat_file(posixpath.join(root.rstrip("/"), entry.key)),
                               entry.key)
            patches = piece_patches(img, entry, piece, config)
        except BadImageError as exc:  # this image only: its rows leave the index
            log.warning("skipping %s", exc)
            bad[entry.key] = exc.reason
            patches = {}
        for name, data in patches.items():
            arrays[name][at : at + n] = data
        arrays["source"][at : at + n] = piece.entry
        at += n
    write_region(store_url, plan.start, arrays)
    write_marker(store_url, plan.index, plan.start, plan.stop, fingerprint, bad)
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


def _own_markers(store_url: str, plan: BuildPlan) -> Iterator[tuple[int, dict | None]]:
    """(index, its marker, or None where it has none of this very build) for each shard of
    `plan`, the markers read a batch at a time as the indices are taken."""
    for batch in batches(range(plan.first_shard, plan.n_shards), MARKERS_PER_READ):
        markers = read_markers_of(store_url, batch)
        for index in batch:
            start = index * plan.shard_patches
            stop = min(start + plan.shard_patches, plan.extent)
            marker = markers.get(index)
            yield index, marker if _marks(marker, start, stop, plan.fingerprint) else None


def pending_shards(store_url: str, plan: BuildPlan) -> Iterator[int]:
    """Indices of the shards of `plan` without a completion marker of this very build."""
    return (index for index, marker in _own_markers(store_url, plan) if marker is None)


def write_shards(store_url: str, source_url: str, plan: BuildPlan, shards: Iterable[int],
                 config: PatchConfig, tasks_in_flight: int = TASKS_IN_FLIGHT,
                 ) -> tuple[int, int, list[str]]:
    """Pass 2: write `shards`, at most `tasks_in_flight` tasks in flight; (shards submitted,
    shards failed, the reasons of the first ERRORS_REPORTED failures).

    Each task gets only its own pieces and rows, cut when it is submitted: handing every task
    the whole table made Dask walk and ship it once per shard, and cutting every shard up
    front held a million shards' pieces in the driver.
    """
    def tasks() -> Iterator[tuple]:
        for index in shards:
            shard = plan.shard(index)
            yield index, (store_url, source_url, shard, plan.entries_of(shard), config,
                          plan.fingerprint)

    submitted, failed, reasons = 0, 0, []
    for _, (_, error) in run_bounded(_write_shard_outcome, tasks(), tasks_in_flight):
        submitted += 1
        if error:
            failed += 1
            if len(reasons) < ERRORS_REPORTED:
                reasons.append(error)
        if submitted % 1024 == 0:
            log.debug("patch store %s: %d shards written, %d failed", store_url, submitted,
                      failed)
    return submitted, failed, reasons


def check_markers(store_url: str, plan: BuildPlan) -> tuple[int, list[int], dict[str, str]]:
    """One pass over the markers of `plan`'s shards, a batch at a time: (shards without a
    marker of this build, the first ERRORS_REPORTED of them, {key: reason} of the images the
    marked shards could not decode)."""
    missing, named, bad = 0, [], {}
    for index, marker in _own_markers(store_url, plan):
        if marker is None:
            missing += 1
            named += [index][: ERRORS_REPORTED - len(named)]
        else:
            bad.update(marker.get("bad", {}))
    return missing, named, bad


def write_and_check(store_url: str, source_url: str, plan: BuildPlan, todo: Iterable[int],
                     config: PatchConfig, tasks_in_flight: int) -> tuple[int, dict[str, str]]:
    """Write shards `todo` of `plan`, then check that every shard of it is marked; (the
    number written, {key: reason} of images that did not decode). Raises ShardWriteError
    (the store unpublished) where any shard is not marked."""
    written, failed, reasons = write_shards(store_url, source_url, plan, todo, config,
                                            tasks_in_flight)
    if failed:
        more = f"; and {failed - len(reasons)} more" if failed > len(reasons) else ""
        raise ShardWriteError(f"patch store {store_url}: {failed} of {written} shards "
                              f"failed (re-run to resume): " + "; ".join(reasons) + more)
    missing, named, bad = check_markers(store_url, plan)
    if missing:
        raise ShardWriteError(f"patch store {store_url}: {missing} shards without a "
                              f"completion marker, first {named}")
    return written, bad


def without_bad(source_url: str, plan: BuildPlan, bad: dict[str, str], path: str,
                ) -> tuple[SourceTable, StoreAttrs]:
    """The plan's index without the images that did not decode in the write pass (their
    patches stay unindexed), and the root attributes that publish it as index `path`."""
    table = plan.table.without_keys(set(bad))
    if not len(table):
        raise ValueError(f"image collection {source_url}: no usable images (none decoded: "
                         f"{sorted(bad.items())[:ERRORS_REPORTED]})")
    skipped = plan.skipped + [{"key": k, "reason": r} for k, r in sorted(bad.items())]
    return table, plan.attrs.replace(n_patches=int(table.n_patches.sum()),
                                     **table_attrs(table), skipped=skipped, sources_path=path)
