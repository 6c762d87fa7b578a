"""Patch extraction and the Zarr store, built through a real Dask LocalCluster."""

import io
import math
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from PIL import Image
from stores import assert_same_store, awkward_config

from srcnn import concurrency as bounded
from srcnn.config import PatchConfig
from srcnn.data.build.builder import build_patch_store
from srcnn.data.build.plan import Piece, plan_shards
from srcnn.data.build.shard_writer import piece_patches
from srcnn.data.color import luma
from srcnn.data.degradation import training_pair
from srcnn.data.images import HEAD_BYTES
from srcnn.data.patches import (
    collection_patches,
    grid_positions,
    image_patches,
    patch_count,
    resized_size,
)
from srcnn.data.store.attrs import OutdatedStoreError, StoreAttrs
from srcnn.data.store.patch_store import (
    IncompleteStoreError,
    PatchStore,
    SourceEntry,
    create_store,
)


def test_t91_patch_count_matches_paper(t91):
    total = 0
    for path in sorted(t91.glob("*.png")):
        with Image.open(path) as img:
            total += patch_count(img.width, img.height, 3, 33, 14)
    assert total == 21_884  # the count the SRCNN paper reports for T91 at x3


def test_grid_positions():
    pos = grid_positions(47, 33, 33, 14)
    assert pos.tolist() == [[0, 0], [14, 0]]
    assert len(grid_positions(20, 50, 33, 14)) == 0


@pytest.mark.parametrize("counts,shard", [([5, 0, 7, 3], 4), ([11], 3), ([1, 1, 1], 11)])
def test_plan_shards_partition_every_patch_once(counts, shard):
    plans = plan_shards(counts, shard)
    assert [p.start for p in plans] == list(range(0, sum(counts), shard))
    seen = {i: [] for i in range(len(counts))}
    for plan in plans:
        assert plan.stop - plan.start == sum(pc.stop - pc.start for pc in plan.pieces) <= shard
        for pc in plan.pieces:
            seen[pc.entry].append((pc.start, pc.stop))
    for entry, ranges in seen.items():
        covered = [i for a, b in sorted(ranges) for i in range(a, b)]
        assert covered == list(range(counts[entry]))


def _random_counts(rng, case: int) -> list[int]:
    """Patch counts of random rows: small ones, then (every third case) mostly empty rows
    between rows that span many shards."""
    if case % 3 == 2:
        n = int(rng.integers(1, 30))
        return [int(c) for c in np.where(rng.random(n) < 0.6, 0, rng.integers(30, 200, n))]
    return [int(c) for c in rng.integers(0, 25, rng.integers(0, 30))]


def test_plan_shards_matches_the_direct_cut():
    """The binary-search cut gives exactly what intersecting every entry with every shard
    gives, with empty rows and rows spanning many shards."""
    rng = np.random.default_rng(0)
    for case in range(300):
        counts = _random_counts(rng, case)
        shard = int(rng.integers(1, 40))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        expected = []
        for start in range(0, int(offsets[-1]), shard):
            stop = min(start + shard, int(offsets[-1]))
            expected.append((start, stop, [(e, max(a, start) - a, min(b, stop) - a)
                                           for e, (a, b) in enumerate(zip(offsets, offsets[1:]))
                                           if max(a, start) < min(b, stop)]))
        got = [(p.start, p.stop, [(pc.entry, pc.start, pc.stop) for pc in p.pieces])
               for p in plan_shards(counts, shard)]
        assert got == expected and [p.index for p in plan_shards(counts, shard)] == list(
            range(len(expected)))


@pytest.mark.parametrize("factor", [1.0, 0.7])
def test_piece_patches_equal_image_patches(small_collection, factor):
    """The writer's fast path (crop one piece from float16 planes) is the reference cut."""
    img = Image.open(small_collection / "t2.png")
    lr, hr, pos = image_patches(img, 3, 33, 7, factor)
    w, h = resized_size(img.width, img.height, factor)
    entry = SourceEntry("t2.png", "fp", w, h, 0, len(pos), "train", factor)
    got = piece_patches(img, entry, Piece(0, 5, len(pos) - 3), PatchConfig(scale=3, stride=7))
    assert "lr" not in got  # a 33-pixel patch on a 7-pixel grid is not whole LR pixels
    expected = {"bicubic": lr[5:-3].astype(np.float16), "hr": hr[5:-3].astype(np.float16),
                "position": pos[5:-3]}
    assert got.keys() == expected.keys()
    for name, b in expected.items():
        assert got[name].dtype == b.dtype
        np.testing.assert_array_equal(got[name], b)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_aligned_patches_carry_the_lr_patch_of_the_same_window(small_collection, scale):
    """What LR-space nets train on: the LR image's own pixels under each HR patch, from the
    same degradation (PIL bicubic downscale of the mod-cropped image, 8-bit, then Y)."""
    img = Image.open(small_collection / "t2.png").convert("RGB")
    config = PatchConfig(scale=scale, patch_size=8 * scale, stride=3 * scale)
    _, _, pos = image_patches(img, scale, config.patch_size, config.stride)
    entry = SourceEntry("t2.png", "fp", img.width, img.height, 0, len(pos), "train")
    got = piece_patches(img, entry, Piece(0, 0, len(pos)), config)
    hr = img.crop((0, 0, img.width - img.width % scale, img.height - img.height % scale))
    lr_y = luma(hr.resize((hr.width // scale, hr.height // scale), Image.Resampling.BICUBIC))
    assert got["lr"].shape == (len(pos), 8, 8) and len(pos) > 4
    for i in (0, len(pos) // 2, len(pos) - 1):
        y, x = pos[i] // scale
        np.testing.assert_array_equal(got["lr"][i], lr_y[y : y + 8, x : x + 8]
                                      .astype(np.float16))


def test_in_memory_patches_equal_the_store(small_collection, tmp_path, dask_cluster):
    """`collection_patches` (GPU machines without Zarr) cuts what `build-patches` stores: the
    same split by source image, the same downscaled copies, the same patches."""
    config = awkward_config(augment_scales=(1.0, 0.8))
    url = str(tmp_path / "store.zarr")
    build_patch_store(str(small_collection), url, config)
    store = PatchStore(url)
    images = {p.name: Image.open(p).convert("RGB") for p in sorted(small_collection.glob("*.png"))}
    memory = collection_patches(images, 3, config.patch_size, config.stride, config.val_fraction,
                                config.augment_scales)
    for split in ("train", "val"):
        lr, hr = store.load(split)
        assert len(lr) > 0
        np.testing.assert_array_equal(lr, memory[split][0])  # same order, too
        np.testing.assert_array_equal(hr, memory[split][1])


def test_build_store_counts_positions_and_split(small_collection, tmp_path, dask_cluster):
    url = str(tmp_path / "store.zarr")
    config = awkward_config()
    report = build_patch_store(str(small_collection), url, config)
    store = PatchStore(url)
    expected = {}
    for path in sorted(small_collection.glob("*.png")):
        with Image.open(path) as img:
            expected[path.name] = patch_count(img.width, img.height, 3, 33, 14)
    assert report.built and report.n_patches == len(store) == sum(expected.values())
    assert {s.key: s.n_patches for s in store.sources} == expected
    source = store.array("source")[:]
    position = store.array("position")[:]
    for i, entry in enumerate(store.sources):
        assert (source[entry.offset : entry.offset + entry.n_patches] == i).all()
    # The HR (and LR) patch at a recorded position equals that crop of the source.
    rng = np.random.default_rng(0)
    for index in rng.choice(len(store), 8, replace=False):
        entry = store.sources[source[index]]
        lr_y, hr_y = training_pair(Image.open(small_collection / entry.key), 3)
        y, x = position[index]
        np.testing.assert_array_equal(store.array("hr")[index],
                                      hr_y[y : y + 33, x : x + 33].astype(np.float16))
        np.testing.assert_array_equal(store.array("bicubic")[index],
                                      lr_y[y : y + 33, x : x + 33].astype(np.float16))
    # Split by source image: both splits present, no image in both.
    splits = {s.split for s in store.sources}
    assert splits == {"train", "val"}
    train_idx, val_idx = store.split_indices("train"), store.split_indices("val")
    assert len(train_idx) + len(val_idx) == len(store)
    assert not set(source[train_idx]) & set(source[val_idx])
    # Sharding: one object per shard and array, not one per chunk.
    shards = math.ceil(len(store) / config.shard_patches)
    lr_objects = [p for p in (Path(url) / "bicubic").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(lr_objects) == shards
    assert store.attrs.scale == 3 and store.attrs.fingerprint == report.fingerprint


def test_rebuild_is_noop_and_changed_sources_rebuild(small_collection, tmp_path, dask_cluster):
    url = str(tmp_path / "store.zarr")
    first = build_patch_store(str(small_collection), url, awkward_config())
    again = build_patch_store(str(small_collection), url, awkward_config())
    assert not again.built and again.fingerprint == first.fingerprint
    (small_collection / "t30.png").unlink()
    changed = build_patch_store(str(small_collection), url, awkward_config())
    assert changed.built and changed.n_patches < first.n_patches
    assert len(PatchStore(url)) == changed.n_patches


def test_bad_images_are_skipped_with_reason(small_collection, tmp_path, dask_cluster):
    (small_collection / "empty.png").write_bytes(b"")
    (small_collection / "notes.png").write_bytes(b"this is not an image")
    data = (small_collection / "t1.png").read_bytes()
    (small_collection / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (20, 20)).save(small_collection / "tiny.png")
    report = build_patch_store(str(small_collection), str(tmp_path / "s.zarr"), awkward_config())
    reasons = {s["key"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"empty.png", "notes.png", "truncated.png", "tiny.png"}
    assert "0 bytes" in reasons["empty.png"] and "too small" in reasons["tiny.png"]
    assert report.n_images == 6
    assert PatchStore(str(tmp_path / "s.zarr")).attrs.skipped == report.skipped


def test_pixels_that_do_not_decode_fail_their_image_alone(small_collection, tmp_path,
                                                         dask_cluster):
    clean_url, url = str(tmp_path / "clean.zarr"), str(tmp_path / "s.zarr")
    clean = build_patch_store(str(small_collection), clean_url, awkward_config())
    buf = io.BytesIO()  # a header that reads, pixel data cut short: found only by decoding
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)
                    ).save(buf, "PNG")
    (small_collection / "cut.png").write_bytes(buf.getvalue()[: HEAD_BYTES + 4096])
    report = build_patch_store(str(small_collection), url, awkward_config())
    assert [s["key"] for s in report.skipped] == ["cut.png"]
    assert "not a readable image" in report.skipped[0]["reason"]
    store, ref = PatchStore(url), PatchStore(clean_url)
    assert (report.n_images, report.n_patches) == (clean.n_images, clean.n_patches)
    assert store.attrs.skipped == report.skipped and store.attrs.n_images == 6
    assert {e.key for e in store.sources} == {e.key for e in ref.sources}
    assert store.extent > len(store)  # the cut image's patches are there, unindexed
    for split in ("train", "val"):  # the other images' patches, exactly the clean build's
        for a, b in zip(store.load(split), ref.load(split)):
            np.testing.assert_array_equal(a, b)
    assert not build_patch_store(str(small_collection), url, awkward_config()).built  # up to date


def test_unpublished_store_is_refused(tmp_path):
    url = str(tmp_path / "half.zarr")
    create_store(url, 10, awkward_config(), StoreAttrs.of_build(awkward_config(), "t"))
    with pytest.raises(IncompleteStoreError, match="not complete"):
        PatchStore(url)


def test_a_store_of_an_older_format_is_refused_with_the_command_that_rebuilds_it(
        small_collection, tmp_path):
    """Format 2 named the bicubic upscale `lr` and the LR patches `lr_native`; reading it as
    format 3 would feed a net the wrong array, so it is refused, and a build replaces it."""
    url = str(tmp_path / "old.zarr")
    build_patch_store(str(small_collection), url, awkward_config())
    root = zarr.open_group(url, mode="r+")
    old = dict(root.attrs)
    old.update(format=2, lr_native=old.pop("has_lr"))
    root.attrs.put(old)  # the root attributes as format 2 wrote them
    with pytest.raises(OutdatedStoreError, match=rf"format 2.*srcnn patches SOURCE {url} "
                                                 rf"--scale 3 --force"):
        PatchStore(url)
    report = build_patch_store(str(small_collection), url, awkward_config())
    assert report.built and not report.resumed and PatchStore(url).attrs.format == 3


def test_build_in_small_windows_equals_one_window(small_collection, tmp_path, dask_cluster,
                                                 monkeypatch):
    """Both passes with two tasks in flight, on the LocalCluster (a task submitted as each
    ends) and on Dask's local threaded scheduler (two per `dask.compute`), write the store
    that the default window (every task at once here) writes."""
    config = awkward_config(augment_scales=(1.0, 0.8))
    one = str(tmp_path / "one.zarr")
    report = build_patch_store(str(small_collection), one, config)
    n_shards = math.ceil(report.n_patches / config.shard_patches)
    assert n_shards > 4
    two = str(tmp_path / "two.zarr")
    again = build_patch_store(str(small_collection), two, config, tasks_in_flight=2)
    assert again.shards_written == n_shards
    assert_same_store(two, one)

    real_compute, batches = dask.compute, []

    def counting_compute(*tasks, **kw):
        batches.append(len(tasks))
        return real_compute(*tasks, **kw)

    monkeypatch.setattr(bounded.dask, "compute", counting_compute)
    small = str(tmp_path / "small.zarr")
    with dask.config.set(scheduler="threads"):
        again = build_patch_store(str(small_collection), small, config, tasks_in_flight=2)
    groups = math.ceil(6 / config.images_per_task)
    assert max(batches) == 2 and len(batches) == math.ceil(groups / 2) + math.ceil(n_shards / 2)
    assert sum(batches) == groups + n_shards and again.shards_written == n_shards
    assert_same_store(small, one)
