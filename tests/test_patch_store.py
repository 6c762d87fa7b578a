"""Patch extraction and the Zarr store, built through a real Dask LocalCluster."""

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srcnn.cluster import dask_client
from srcnn.color import training_pair
from srcnn.config import PatchConfig
from srcnn.patch_build import build_patch_store, plan_shards
from srcnn.patches import grid_positions, patch_count
from srcnn.store import IncompleteStoreError, PatchStore, create_store


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


@pytest.fixture(scope="module")
def dask_cluster():
    with dask_client(n_workers=2) as client:
        yield client


def _config(**kw):
    # Awkward chunk sizes (pangeo-forge style): shards straddle images.
    return PatchConfig(scale=3, chunk_patches=11, shard_chunks=3, images_per_task=2,
                       val_fraction=0.34, **kw)


def test_build_store_counts_positions_and_split(small_collection, tmp_path, dask_cluster):
    url = str(tmp_path / "store.zarr")
    config = _config()
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
        np.testing.assert_array_equal(store.array("lr")[index],
                                      lr_y[y : y + 33, x : x + 33].astype(np.float16))
    # Split by source image: both splits present, no image in both.
    splits = {s.split for s in store.sources}
    assert splits == {"train", "val"}
    train_idx, val_idx = store.split_indices("train"), store.split_indices("val")
    assert len(train_idx) + len(val_idx) == len(store)
    assert not set(source[train_idx]) & set(source[val_idx])
    # Sharding: one object per shard and array, not one per chunk.
    shards = math.ceil(len(store) / config.shard_patches)
    lr_objects = [p for p in (Path(url) / "lr").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(lr_objects) == shards
    assert store.attrs["scale"] == 3 and store.attrs["fingerprint"] == report.fingerprint


def test_rebuild_is_noop_and_changed_sources_rebuild(small_collection, tmp_path, dask_cluster):
    url = str(tmp_path / "store.zarr")
    first = build_patch_store(str(small_collection), url, _config())
    again = build_patch_store(str(small_collection), url, _config())
    assert not again.built and again.fingerprint == first.fingerprint
    (small_collection / "t30.png").unlink()
    changed = build_patch_store(str(small_collection), url, _config())
    assert changed.built and changed.n_patches < first.n_patches
    assert len(PatchStore(url)) == changed.n_patches


def test_bad_images_are_skipped_with_reason(small_collection, tmp_path, dask_cluster):
    (small_collection / "empty.png").write_bytes(b"")
    (small_collection / "notes.png").write_bytes(b"this is not an image")
    data = (small_collection / "t1.png").read_bytes()
    (small_collection / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (20, 20)).save(small_collection / "tiny.png")
    report = build_patch_store(str(small_collection), str(tmp_path / "s.zarr"), _config())
    reasons = {s["key"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"empty.png", "notes.png", "truncated.png", "tiny.png"}
    assert "0 bytes" in reasons["empty.png"] and "too small" in reasons["tiny.png"]
    assert report.n_images == 6
    assert PatchStore(str(tmp_path / "s.zarr")).attrs["skipped"] == report.skipped


def test_unpublished_store_is_refused(tmp_path):
    url = str(tmp_path / "half.zarr")
    create_store(url, 10, _config(), {"sources": []})
    with pytest.raises(IncompleteStoreError, match="not complete"):
        PatchStore(url)
