"""Fault tolerance: a Dask worker SIGKILLed in the middle of a patch-store build.

A real `dask scheduler` and two `dask worker` processes on loopback (`test_dask_cluster`);
as soon as the first shard's completion marker appears, one worker that has finished a shard
is killed with its whole process group. The scheduler sees the connection drop and gives that
worker's tasks (the one it was running, and any finished one whose result the driver had not
collected yet) to the survivor; a rerun task finds its shard marked and writes nothing. The
build completes on its own: every shard written and marked once, every patch once, arrays
equal to a build of the same collection made without Dask's distributed scheduler.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import dask
import numpy as np
import pytest
from distributed import get_task_stream
from test_dask_cluster import dask_processes

from srcnn.cluster import dask_client
from srcnn.config import PatchConfig
from srcnn.data.build.builder import build_patch_store
from srcnn.data.patches import grid_positions
from srcnn.data.store.patch_store import BUILD_DIR, PatchStore, read_markers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

# All 91 T91 images plus a 0.8 copy of each training image, cut at stride 8 into shards of
# 1024 patches: ~100k patches in ~100 shards, several seconds of work for two workers.
CONFIG = PatchConfig(scale=3, stride=8, augment_scales=(1.0, 0.8), chunk_patches=256,
                     shard_chunks=4)


def _is_write(key) -> bool:
    return str(key).startswith("_write_shard")


def _kill_after_first_marker(client, url: str, workers: dict, done: threading.Event,
                             kill: dict) -> None:
    """Poll the markers; at the first one, SIGKILL a worker that holds a finished shard."""
    try:
        _poll_and_kill(client, url, workers, done, kill)
    except Exception as exc:  # reported by the test's assertion, not lost in the thread
        kill["error"] = repr(exc)


def _poll_and_kill(client, url: str, workers: dict, done: threading.Event, kill: dict) -> None:
    deadline = time.monotonic() + 300
    while not done.is_set() and time.monotonic() < deadline:
        markers = read_markers(url)
        if markers:
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            finished = {a: [k for k in keys if _is_write(k)]
                        for a, keys in client.has_what().items()}
            holders = [a for a, keys in finished.items() if keys]
            if holders:
                victim = holders[0]
                os.killpg(workers[names[victim]].pid, signal.SIGKILL)
                kill.update(at=time.time(), address=victim, name=names[victim],
                            held=len(finished[victim]), markers=read_markers(url))
                return
        time.sleep(0.02)


def test_worker_killed_mid_build_loses_and_duplicates_nothing(t91, tmp_path):
    url = str(tmp_path / "store.zarr")
    kill: dict = {}
    done = threading.Event()
    with dask_processes(tmp_path) as (address, workers), dask_client(address) as client:
        client.wait_for_workers(2, timeout=90)
        killer = threading.Thread(target=_kill_after_first_marker,
                                  args=(client, url, workers, done, kill), daemon=True)
        started = time.time()
        killer.start()
        try:
            with get_task_stream(client) as stream:
                report = build_patch_store(str(t91), url, CONFIG)
        finally:
            done.set()
            killer.join(30)
        finished = time.time()
        survivors = set(client.nthreads())
        victim_exit = workers[kill["name"]].wait(30) if "name" in kill else None

    # The kill happened, mid-build, to a worker that had done real work.
    assert "at" in kill, kill.get("error", "no kill: the build ended before a marker was seen")
    assert victim_exit == -signal.SIGKILL and kill["address"] not in survivors
    n_shards = -(-report.n_patches // CONFIG.shard_patches)
    assert report.built and report.shards_written == n_shards > 50
    assert 0 < len(kill["markers"]) < n_shards / 2, "killed too late: half the shards were done"

    # What Dask did: the task the victim was running (not in the stream: it never finished)
    # was rescheduled on the survivor. The driver collects each result as its task ends
    # (srcnn.concurrency), so of the write tasks the victim had finished only those not collected
    # yet ran again (their results died with it); they found their shard marked and wrote
    # nothing.
    writes = [t for t in stream.data if _is_write(t["key"])]
    by_victim = [t for t in writes if t["worker"] == kill["address"]]
    assert by_victim, "the victim finished no write task"
    rerun = len(writes) - n_shards
    assert 0 <= rerun <= len(by_victim), (rerun, len(by_victim))
    markers = read_markers(url)
    assert {i: markers[i] for i in kill["markers"]} == kill["markers"]  # none rewritten
    after = [m for m in markers.values() if m["written_at"] > kill["at"]]
    assert len(after) >= n_shards / 2, "most shards must be written after the kill"
    print(f"\nkilled {kill['name']} {kill['at'] - started:.1f}s into a {finished - started:.1f}s "
          f"build, {len(kill['markers'])}/{n_shards} shards marked; it had finished "
          f"{len(by_victim)} write tasks: {rerun} rerun on the survivor as no-ops, "
          f"{len(after)} shards written after the kill")

    # Outputs complete, none duplicated: one marker per shard, one patch per grid position.
    names = sorted(p.name for p in (tmp_path / "store.zarr" / BUILD_DIR).glob("shard-*.json"))
    assert names == [f"shard-{i:06d}.json" for i in range(n_shards)]
    assert all((m["start"], m["stop"]) == (i * CONFIG.shard_patches,
               min((i + 1) * CONFIG.shard_patches, report.n_patches))
               and m["fingerprint"] == report.fingerprint for i, m in markers.items())
    store = PatchStore(url)  # refuses an unpublished store
    source, position = store.array("source")[:], store.array("position")[:]
    assert len(store) == report.n_patches == sum(s.n_patches for s in store.sources)
    for i, entry in enumerate(store.sources):
        h, w = entry.height - entry.height % CONFIG.scale, entry.width - entry.width % CONFIG.scale
        grid = grid_positions(h, w, CONFIG.patch_size, CONFIG.stride)
        span = slice(entry.offset, entry.offset + entry.n_patches)
        assert (source[span] == i).all() and np.array_equal(position[span], grid), entry.key
    pairs = np.column_stack([source, position])
    assert len(np.unique(pairs, axis=0)) == report.n_patches

    # Arrays equal to a clean build of the same collection on the synchronous scheduler.
    with dask.config.set(scheduler="synchronous"):
        build_patch_store(str(t91), str(tmp_path / "ref.zarr"), CONFIG)
    ref = PatchStore(str(tmp_path / "ref.zarr"))
    assert store.attrs == ref.attrs
    for name in ("bicubic", "hr", "source", "position"):
        np.testing.assert_array_equal(store.array(name)[:], ref.array(name)[:], err_msg=name)
