"""A patch-store build that fails or is killed part way resumes: only the shards it lacks
are written again, and the store equals one built whole (through a real Dask LocalCluster on
real files, and on S3)."""

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import dask
import pytest
from stores import assert_same_store, awkward_config

from srcnn.data.build import builder as patch_build
from srcnn.data.build import shard_writer
from srcnn.data.build.builder import build_patch_store, plan_build
from srcnn.data.build.shard_writer import ShardWriteError, write_shard
from srcnn.data.store.markers import marker_url
from srcnn.data.store.patch_store import (
    IncompleteStoreError,
    PatchStore,
    build_fingerprint,
    open_for_build,
    read_markers,
    read_source_entries,
    store_attrs,
)
from srcnn.storage import list_images


def _marker_times(url: str) -> dict[int, int]:
    return {int(p.stem.split("-")[1]): p.stat().st_mtime_ns
            for p in (Path(url) / "_build").glob("shard-*.json")}


def test_failed_build_resumes_only_missing_shards(small_collection, tmp_path, dask_cluster,
                                                  monkeypatch):
    """One image becomes unreadable between inspection and writing (as a flaky disk or
    bucket would do; an image that reads but does not decode fails alone instead): its shards
    fail, every other shard is written and marked, the store
    stays unpublished; the re-run writes exactly the failed shards (and one whose marker a
    crash cut short: a damaged marker counts as missing) and equals a clean build."""
    victim = small_collection / "t10.png"
    data, stat = victim.read_bytes(), victim.stat()
    real_plan = patch_build.plan_from_sizes

    def plan_then_break_image(*args):  # runs in the driver after inspection
        victim.unlink()  # gone for now (a flaky disk or bucket): its shards fail and retry
        return real_plan(*args)

    url = str(tmp_path / "store.zarr")
    monkeypatch.setattr(patch_build, "plan_from_sizes", plan_then_break_image)
    with pytest.raises(ShardWriteError, match="t10.png"):
        build_patch_store(str(small_collection), url, awkward_config())
    monkeypatch.undo()
    monkeypatch.setattr(shard_writer, "MARKERS_PER_READ", 4)  # the markers read in batches
    with pytest.raises(IncompleteStoreError):
        PatchStore(url)
    attrs = store_attrs(url)
    (t10,) = [asdict(s) for s in read_source_entries(url) if s.key == "t10.png"]
    shard = awkward_config().shard_patches
    n_shards = math.ceil(attrs.n_patches / shard)
    failed = {i for i in range(n_shards)
              if i * shard < t10["offset"] + t10["n_patches"] and t10["offset"] < (i + 1) * shard}
    before = _marker_times(url)
    assert failed and before and set(before) == set(range(n_shards)) - failed
    damaged = min(before)
    marker = Path(marker_url(url, damaged))
    marker.write_bytes(marker.read_bytes()[:20])  # cut short: its shard is written again
    del before[damaged]

    victim.write_bytes(data)  # the image is back, unchanged (same size and mtime)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    def no_second_inspection(*args, **kwargs):
        raise AssertionError("the re-run inspected the images again")

    monkeypatch.setattr(patch_build, "inspect_images", no_second_inspection)
    report = build_patch_store(str(small_collection), url, awkward_config())
    monkeypatch.undo()
    assert report.built and report.resumed and report.fingerprint == attrs.fingerprint
    assert (report.shards_written, report.shards_reused) == (len(failed) + 1, len(before))
    after = _marker_times(url)
    assert read_markers(url)[damaged]["shard"] == damaged  # whole again
    assert set(after) == set(range(n_shards))
    assert {i: after[i] for i in before} == before  # reused shards were not rewritten
    clean = str(tmp_path / "clean.zarr")
    build_patch_store(str(small_collection), clean, awkward_config())
    assert_same_store(url, clean)
    assert not build_patch_store(str(small_collection), url, awkward_config()).built


def test_changed_build_recreates_half_written_store(small_collection, tmp_path):
    """A half-written store of another build is not resumed: its markers go with it."""
    url = str(tmp_path / "store.zarr")
    source = str(small_collection)
    with dask.config.set(scheduler="sync"):
        old = awkward_config(stride=20)
        plan = plan_build(source, list_images(source), old,
                          build_fingerprint(list_images(source), old))
        open_for_build(url, plan.n_patches, old, plan.attrs, plan.table)
        first = plan.shard(0)
        write_shard(url, source, first, plan.entries_of(first), old, plan.fingerprint)
        report = build_patch_store(source, url, awkward_config())
    assert not report.resumed and report.shards_reused == 0
    markers = read_markers(url)
    assert {m["fingerprint"] for m in markers.values()} == {report.fingerprint}
    assert len(markers) == report.shards_written == math.ceil(
        report.n_patches / awkward_config().shard_patches)


def test_killed_build_resumes_on_s3(small_collection, tmp_path, s3_bucket):
    """A build killed after some shards (the pure pieces called directly, as the workers
    would) resumes on S3 through the same code path: only the other shards are written."""
    fs, bucket = s3_bucket
    url, source, config = f"s3://{bucket}/x3.zarr", str(small_collection), awkward_config()
    with dask.config.set(scheduler="sync"):  # the S3 endpoint lives in this process's env
        sources = list_images(source)
        plan = plan_build(source, sources, config, build_fingerprint(sources, config))
        assert not open_for_build(url, plan.n_patches, config, plan.attrs, plan.table)
        for shard in map(plan.shard, range(0, plan.n_shards, 2)):
            write_shard(url, source, shard, plan.entries_of(shard), config, plan.fingerprint)
        done = {i: json.loads(fs.cat(f"{bucket}/x3.zarr/_build/shard-{i:06d}.json"))
                for i in range(0, plan.n_shards, 2)}
        report = build_patch_store(source, url, config)
        assert report.resumed and report.shards_reused == len(done)
        assert report.shards_written == plan.n_shards - len(done)
        markers = read_markers(url)
        assert {i: markers[i] for i in done} == done  # untouched: same write time
        build_patch_store(source, str(tmp_path / "clean.zarr"), config)
    assert_same_store(url, str(tmp_path / "clean.zarr"))
