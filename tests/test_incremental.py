"""Incremental patch-store builds, through a real Dask LocalCluster on real files: only the
new shards and the index are written, splits and offsets of kept images stay, the new
patches equal a full build's, old readers keep their version, and a failed run resumes."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stores import ARRAYS, awkward_config

from srcnn.data.build import builder as patch_build
from srcnn.data.build.builder import build_patch_store
from srcnn.data.build.shard_writer import ShardWriteError
from srcnn.data.store.patch_store import PatchStore, read_markers, read_source_entries, store_attrs

ADDED = ("t40.png", "t42.png", "t43.png", "t44.png")


def _files(url: str) -> dict[str, str]:
    """{path in the store: sha256 of its bytes} of every file."""
    root = Path(url)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def _shard_of(path: str) -> int | None:
    """The shard index of an array's shard object (`bicubic/c/5/0/0` -> 5), None for others."""
    parts = path.split("/")
    return int(parts[2]) if parts[0] in ARRAYS and parts[1] == "c" else None


def _rows(url: str) -> dict[tuple[str, float, int], object]:
    return {(e.key, e.factor, e.copy): e for e in read_source_entries(url)}


def _assert_rows_hold_the_same_patches(url: str, ref_url: str, keys) -> None:
    """Every row of `keys` in `url` holds the patches its row in `ref_url` holds."""
    store, ref = PatchStore(url), PatchStore(ref_url)
    rows, ref_rows = _rows(url), _rows(ref_url)
    for row, e in rows.items():
        key = row[0]
        if key not in keys:
            continue
        r = ref_rows[row]
        assert (e.n_patches, e.split, e.width, e.height) == (r.n_patches, r.split, r.width,
                                                             r.height)
        for name in ("bicubic", "hr", "position"):
            np.testing.assert_array_equal(
                store.array(name)[e.offset : e.offset + e.n_patches],
                ref.array(name)[r.offset : r.offset + r.n_patches], err_msg=f"{key} {name}")


def _assert_split_cover(url: str) -> None:
    """The splits together cover every indexed patch once, and only those."""
    store = PatchStore(url)
    train, val = store.split_indices("train"), store.split_indices("val")
    both = np.concatenate([train, val])
    indexed = np.concatenate([np.arange(e.offset, e.offset + e.n_patches)
                              for e in store.sources])
    assert len(both) == len(np.unique(both)) == len(store) == len(indexed)
    np.testing.assert_array_equal(np.sort(both), np.sort(indexed))
    assert both.max() < store.extent <= store.array("bicubic").shape[0]


def _copy(t91: Path, folder: Path, names) -> None:
    for name in names:
        shutil.copy(t91 / name, folder / name)


def test_added_images_write_only_new_shards_and_the_index(small_collection, t91, tmp_path,
                                                          dask_cluster):
    url, source, config = str(tmp_path / "store.zarr"), str(small_collection), awkward_config()
    first = build_patch_store(source, url, config)
    before, rows_before = _files(url), _rows(url)
    assert first.n_patches % config.shard_patches  # the store ends mid-shard
    _copy(t91, small_collection, ADDED)
    report = build_patch_store(source, url, config)
    after = _files(url)
    assert report.incremental and report.built
    assert (report.images_added, report.images_kept, report.images_removed,
            report.images_changed) == (len(ADDED), 6, 0, 0)
    # No stored file changed but the metadata; new files are new shards, markers, the index.
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed <= {"zarr.json"} | {f"{a}/zarr.json" for a in ARRAYS}
    assert set(before) <= set(after)
    base = -(-first.n_patches // config.shard_patches)
    new = set(after) - set(before)
    shards = {p for p in new if _shard_of(p) is not None}
    markers = {p for p in new if p.startswith("_build/")}
    index = {p for p in new if p.startswith("sources-v000002/")}
    assert new == shards | markers | index and index
    assert min(_shard_of(p) for p in shards) == base  # from the next shard boundary on
    n_new = -(-PatchStore(url).extent // config.shard_patches) - base
    assert len(markers) == report.shards_written == n_new
    assert len(shards) == n_new * len(ARRAYS)
    # Kept images keep their rows; the old index version stays for readers that opened it.
    rows = _rows(url)
    assert {k: rows[k] for k in rows_before} == rows_before
    assert (Path(url) / "sources").is_dir() and store_attrs(url).sources_path == \
        "sources-v000002"
    _assert_split_cover(url)
    # The new images' patches (and splits) are what a full build cuts for them.
    ref = str(tmp_path / "full.zarr")
    build_patch_store(source, ref, config)
    _assert_rows_hold_the_same_patches(url, ref, set(ADDED))
    assert {k: e.split for k, e in rows.items()} == {k: e.split for k, e in _rows(ref).items()}
    assert not build_patch_store(source, url, config).built  # same listing: no work


def test_removed_and_changed_images(small_collection, t91, tmp_path, dask_cluster):
    url, source, config = str(tmp_path / "store.zarr"), str(small_collection), awkward_config()
    build_patch_store(source, url, config)
    before, rows_before = _files(url), _rows(url)
    (small_collection / "t30.png").unlink()
    shutil.copy(t91 / "t50.png", small_collection / "t2.png")  # new content under an old name
    report = build_patch_store(source, url, config)
    assert (report.images_added, report.images_kept, report.images_removed,
            report.images_changed) == (0, 4, 1, 1)
    after, rows = _files(url), _rows(url)
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed <= {"zarr.json"} | {f"{a}/zarr.json" for a in ARRAYS}
    assert {k[0] for k in rows} == {k[0] for k in rows_before} - {"t30.png"}
    kept = {k: e for k, e in rows_before.items() if k[0] not in ("t30.png", "t2.png")}
    assert {k: rows[k] for k in kept} == kept
    old_t2 = {e.split for k, e in rows_before.items() if k[0] == "t2.png"}
    assert {e.split for k, e in rows.items() if k[0] == "t2.png"} == old_t2  # split kept
    assert min(e.offset for k, e in rows.items() if k[0] == "t2.png") >= max(
        e.offset + e.n_patches for e in rows_before.values())
    _assert_split_cover(url)
    ref = str(tmp_path / "full.zarr")
    build_patch_store(source, ref, config)
    _assert_rows_hold_the_same_patches(url, ref, {"t2.png"})
    # Removals only: the index and the root metadata are all that is written.
    before = _files(url)
    (small_collection / "t3.png").unlink()
    report = build_patch_store(source, url, config)
    assert report.images_removed == 1 and report.shards_written == 0
    after = _files(url)
    assert {p for p in before if p in after and after[p] != before[p]} == {"zarr.json"}
    assert {p.split("/")[0] for p in set(after) - set(before)} == {"sources-v000003"}
    # the version older than the previous one is deleted, nothing else
    assert {p.split("/")[0] for p in set(before) - set(after)} == {"sources"}
    _assert_split_cover(url)


def test_reader_opened_before_keeps_its_version(small_collection, t91, tmp_path, dask_cluster):
    url, source, config = str(tmp_path / "store.zarr"), str(small_collection), awkward_config()
    build_patch_store(source, url, config)
    eager = PatchStore(url)
    splits = {s: eager.split_indices(s) for s in ("train", "val")}
    data = {s: eager.load(s) for s in ("train", "val")}
    lazy = PatchStore(url)  # opened now, its index read only after the update
    _copy(t91, small_collection, ADDED)
    (small_collection / "t30.png").unlink()
    build_patch_store(source, url, config)
    for reader in (eager, lazy):
        assert len(reader) == len(eager)
        for split in ("train", "val"):
            np.testing.assert_array_equal(reader.split_indices(split), splits[split])
            for got, want in zip(reader.load(split), data[split]):
                np.testing.assert_array_equal(got, want)
    new = PatchStore(url)
    assert len(new) != len(eager) and new.extent > eager.extent


def test_failed_incremental_build_resumes_only_missing_shards(small_collection, t91, tmp_path,
                                                              dask_cluster, monkeypatch):
    """A new image breaks between planning and writing: its shards fail, the others are
    written and marked, the store still serves the old version; the re-run writes exactly
    the failed shards and equals an uninterrupted incremental build."""
    source, config = str(small_collection), awkward_config()
    url, clean = str(tmp_path / "store.zarr"), str(tmp_path / "clean.zarr")
    build_patch_store(source, url, config)
    build_patch_store(source, clean, config)
    old_attrs = store_attrs(url)
    _copy(t91, small_collection, ADDED)
    victim = small_collection / ADDED[1]
    data, stat = victim.read_bytes(), victim.stat()
    real_plan = patch_build.plan_increment

    def plan_then_break_image(*args):  # runs in the driver after inspection
        victim.unlink()  # gone for now (a flaky disk or bucket): its shards fail and retry
        return real_plan(*args)

    monkeypatch.setattr(patch_build, "plan_increment", plan_then_break_image)
    with pytest.raises(ShardWriteError, match=ADDED[1]):
        build_patch_store(source, url, config)
    monkeypatch.undo()
    assert store_attrs(url) == old_attrs  # still the old, complete version
    assert len(PatchStore(url)) == old_attrs.n_patches
    marked = {i: m for i, m in read_markers(url).items()
              if m["fingerprint"] != old_attrs.fingerprint}
    assert marked

    victim.write_bytes(data)  # back, unchanged (same size and mtime)
    import os
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    report = build_patch_store(source, url, config)
    assert report.incremental and report.resumed and report.shards_reused == len(marked)
    markers = read_markers(url)
    assert {i: markers[i] for i in marked} == marked  # not rewritten
    uninterrupted = build_patch_store(source, clean, config)
    assert report.shards_written == uninterrupted.shards_written - len(marked)
    assert store_attrs(url) == store_attrs(clean)
    for name in ARRAYS:
        np.testing.assert_array_equal(PatchStore(url).array(name)[:],
                                      PatchStore(clean).array(name)[:], err_msg=name)
    _assert_split_cover(url)


def test_other_layout_rebuilds_whole(small_collection, tmp_path, dask_cluster):
    url, source = str(tmp_path / "store.zarr"), str(small_collection)
    build_patch_store(source, url, awkward_config())
    report = build_patch_store(source, url, awkward_config(stride=20))
    assert report.built and not report.incremental
    assert "sources_path" not in store_attrs(url)


def test_incremental_build_on_s3(small_collection, t91, tmp_path, s3_bucket):
    """The same update through object storage: new shard objects and index only, the old
    version deleted two builds later (listing and removing prefixes on S3)."""
    import dask

    fs, bucket = s3_bucket
    url, source, config = f"s3://{bucket}/x3.zarr", str(small_collection), awkward_config()
    with dask.config.set(scheduler="sync"):  # the S3 endpoint lives in this process's env
        build_patch_store(source, url, config)
        before = {p: fs.info(p)["ETag"] for p in fs.find(f"{bucket}/x3.zarr")}
        _copy(t91, small_collection, ADDED[:2])
        report = build_patch_store(source, url, config)
        fs.invalidate_cache()
        after = {p: fs.info(p)["ETag"] for p in fs.find(f"{bucket}/x3.zarr")}
        changed = {p.split("x3.zarr/")[1] for p in before if after.get(p) != before[p]}
        assert changed <= {"zarr.json"} | {f"{a}/zarr.json" for a in ARRAYS}
        assert report.incremental and report.images_added == 2 and report.shards_written
        (small_collection / "t1.png").unlink()
        build_patch_store(source, url, config)
        fs.invalidate_cache()
        tops = {p.rsplit("/", 1)[1] for p in fs.ls(f"{bucket}/x3.zarr", detail=False)}
        assert {t for t in tops if t.startswith("sources")} == {"sources-v000002",
                                                                "sources-v000003"}
        build_patch_store(source, str(tmp_path / "full.zarr"), config)
    _assert_rows_hold_the_same_patches(url, str(tmp_path / "full.zarr"), set(ADDED[:2]))
    _assert_split_cover(url)


def test_a_realistic_degradation_gives_the_same_bytes_built_whole_or_incrementally(
        small_collection, t91, tmp_path, dask_cluster):
    """Each image, downscaled copy and degraded copy draws its degradation from its key,
    factor and copy number: a store updated with new images holds, for every image, the bytes
    a whole build makes, and these are not the bicubic protocol's; a training image has
    `copies` rows at each factor, each of its own degradation, a validation image one."""
    from srcnn.config import DegradationConfig
    from srcnn.data.degradation import degradation_copy, training_planes

    real = DegradationConfig(kind="real", seed=3, jpeg_prob=0.5, noise_prob=0.5)
    config = awkward_config(degradation=real, augment_scales=(1.0, 0.8), copies=2)
    url, source = str(tmp_path / "store.zarr"), str(small_collection)
    build_patch_store(source, url, config)
    _copy(t91, small_collection, ADDED)
    assert build_patch_store(source, url, config).incremental
    ref = str(tmp_path / "full.zarr")
    build_patch_store(source, ref, config)
    rows = _rows(url)
    _assert_rows_hold_the_same_patches(url, ref, {row[0] for row in rows})
    store = PatchStore(url)
    assert store.attrs.degradation == real
    train = {k for k, e in rows.items() if e.split == "train"}
    val = {k for k, e in rows.items() if e.split == "val"}
    assert train and val
    assert {(f, c) for _, f, c in train} == {(1.0, 0), (1.0, 1), (0.8, 0), (0.8, 1)}
    assert {(f, c) for _, f, c in val} == {(1.0, 0)}
    assert len(train) == 4 * len({k for k, _, _ in train})
    # The stored SRCNN input of each copy's first patch is its degradation's, recomputed here,
    # and the two copies of an image differ.
    key = next(k for k, _, _ in train)
    firsts = []
    for copy in (0, 1):
        entry = rows[(key, 1.0, copy)]
        with Image.open(small_collection / key) as img:
            _, bic_y, _ = training_planes(img, 3, real, key, degradation_copy(1.0, copy))
        y, x = store.array("position")[entry.offset]
        stored = store.array("bicubic")[entry.offset]
        np.testing.assert_array_equal(stored, bic_y[y : y + 33, x : x + 33].astype(np.float16))
        firsts.append(stored)
    assert not np.array_equal(*firsts)
    bicubic = str(tmp_path / "bicubic.zarr")
    build_patch_store(source, bicubic, awkward_config(augment_scales=(1.0, 0.8)))
    assert not np.array_equal(PatchStore(bicubic).array("bicubic")[:50],
                              store.array("bicubic")[:50])
