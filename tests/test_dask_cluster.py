"""`--dask-address`: a build through a real `dask scheduler` and two `dask worker` processes.

The processes are the venv's own `dask` CLI on loopback, as an operator would start them on
other machines; each is started in its own process group and ended by that group's id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import get_task_stream

from srcnn.cluster import dask_client
from srcnn.config import PatchConfig
from srcnn.patch_build import build_patch_store
from srcnn.store import PatchStore

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


@pytest.fixture
def dask_scheduler_with_two_workers(tmp_path):
    """(address, worker logs) of a scheduler and two single-threaded workers on loopback."""
    scheduler_file = tmp_path / "scheduler.json"
    procs = []
    try:
        log = tmp_path / "scheduler.log"
        procs.append(_start(["scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(scheduler_file)], log))
        address = _scheduler_address(scheduler_file, procs[0], log)
        for i in range(2):
            procs.append(_start(["worker", address, "--nworkers", "1", "--nthreads", "1",
                                 "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}",
                                 "--local-directory", str(tmp_path / f"w{i}")],
                                tmp_path / f"worker{i}.log"))
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


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
    for name in ("lr", "hr", "source", "position"):
        np.testing.assert_array_equal(store.array(name)[:], ref.array(name)[:], err_msg=name)
