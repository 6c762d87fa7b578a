"""`--dask-address`: a build through a real `dask scheduler` and two `dask worker` processes.

The processes are the venv's own `dask` CLI on loopback, as an operator would start them on
other machines; each is started in its own process group and ended by that group's id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import get_task_stream

from srcnn.cluster import dask_client
from srcnn.config import PatchConfig
from srcnn.data.build.builder import build_patch_store
from srcnn.data.store.patch_store import PatchStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DASK = str(Path(sys.executable).with_name("dask"))
REPO = Path(__file__).resolve().parents[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([DASK, *args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process's own group (a worker's nanny and its child), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _scheduler_address(scheduler_file: Path, proc: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dask scheduler exited ({proc.returncode}):\n{log.read_text()}")
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            time.sleep(0.2)
    pytest.fail(f"dask scheduler did not start:\n{log.read_text()}")


@contextlib.contextmanager
def dask_processes(folder: Path, n_workers: int = 2) -> Iterator[tuple[str, dict]]:
    """(address, {worker name: its process}) of a scheduler and single-threaded workers on
    loopback, each in its own process group (so a test can kill one); all ended on exit."""
    scheduler_file = folder / "scheduler.json"
    procs = []
    try:
        log = folder / "scheduler.log"
        procs.append(_start(["scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(scheduler_file)], log))
        address = _scheduler_address(scheduler_file, procs[0], log)
        workers = {}
        for i in range(n_workers):
            workers[f"w{i}"] = _start(["worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--host", "127.0.0.1", "--no-dashboard", "--name",
                                       f"w{i}", "--local-directory", str(folder / f"w{i}")],
                                      folder / f"worker{i}.log")
            procs.append(workers[f"w{i}"])
        yield address, workers
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture
def dask_scheduler_with_two_workers(tmp_path):
    """The address of a scheduler and two single-threaded workers on loopback."""
    with dask_processes(tmp_path) as (address, _):
        yield address


def test_build_through_existing_scheduler(dask_scheduler_with_two_workers, small_collection,
                                          tmp_path):
    address = dask_scheduler_with_two_workers
    config = PatchConfig(scale=3, chunk_patches=11, shard_chunks=3, images_per_task=1,
                         val_fraction=0.34)
    url = str(tmp_path / "remote.zarr")
    with dask_client(address) as client:
        client.wait_for_workers(2, timeout=90)
        workers = set(client.nthreads())
        assert len(workers) == 2 and client.scheduler.address == address
        with get_task_stream(client) as stream:
            report = build_patch_store(str(small_collection), url, config)
    assert report.built and report.shards_written > 2
    # Both workers did real work: each wrote shards (one task per shard, none twice).
    writes = [t["worker"] for t in stream.data if str(t["key"]).startswith("_write_shard")]
    assert len(writes) == report.shards_written
    assert set(writes) == workers, f"shards written by {set(writes)}, workers {workers}"

    local = str(tmp_path / "local.zarr")
    with dask_client(n_workers=2):
        build_patch_store(str(small_collection), local, config)
    store, ref = PatchStore(url), PatchStore(local)
    assert store.attrs == ref.attrs
    for name in ("bicubic", "hr", "source", "position"):
        np.testing.assert_array_equal(store.array(name)[:], ref.array(name)[:], err_msg=name)
