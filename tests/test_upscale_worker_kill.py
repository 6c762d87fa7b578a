"""Fault tolerance of upscale-bucket: a Dask worker SIGKILLed in the middle of a run.

A real `dask scheduler` and two `dask worker` processes on loopback (`test_dask_cluster`). As
soon as the first chunk's manifest appears, a worker that is running a chunk is killed with its
whole process group. The scheduler gives its chunks (the one it was running and those whose
results it held) to the survivor; a chunk whose manifest this run already wrote is reported
as done, not redone. The run completes on its own: every output there once, whole, and every
image in the reports and the manifests exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
from distributed import Client
from PIL import Image
from test_dask_cluster import dask_processes

from flows.upscale_bucket import upscale_bucket
from srcnn.batch.job import MANIFESTS, BucketOptions, report_lines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.usefixtures("prefect_server")]

N_IMAGES = 40


def _kill_a_busy_worker(address: str, out, workers: dict, done: threading.Event,
                        kill: dict) -> None:
    try:
        with Client(address) as client:
            deadline = time.monotonic() + 300
            while not done.is_set() and time.monotonic() < deadline:
                if (out / MANIFESTS).exists() and any((out / MANIFESTS).rglob("*.json")):
                    busy = [a for a, tasks in client.processing().items() if tasks]
                    if busy:
                        names = {
                            a: w["name"] for a, w in client.scheduler_info()["workers"].items()
                        }
                        victim = names[busy[0]]
                        os.killpg(workers[victim].pid, signal.SIGKILL)
                        kill.update(
                            at=time.time(),
                            address=busy[0],
                            name=victim,
                            manifests=len(list((out / MANIFESTS).rglob("*.json"))),
                        )
                        return
                time.sleep(0.02)
    except Exception as exc:  # reported by the test's assertion, not lost in the thread
        kill["error"] = repr(exc)


def test_worker_killed_mid_upscale_loses_and_duplicates_nothing(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        (inp / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(
            inp / f"d{i % 3}" / f"{i:03d}.png"
        )
    kill: dict = {}
    done = threading.Event()
    with dask_processes(tmp_path) as (address, workers):
        with Client(address) as client:
            client.wait_for_workers(2, timeout=90)
        killer = threading.Thread(
            target=_kill_a_busy_worker, args=(address, out, workers, done, kill), daemon=True
        )
        killer.start()
        try:
            summary = upscale_bucket(
                str(inp),
                str(out),
                "pretrained",
                bucket=BucketOptions(chunk_size=3),
                dask_address=address,
            )
        finally:
            done.set()
            killer.join(30)
        victim_exit = workers[kill["name"]].wait(30) if "name" in kill else None

    assert "at" in kill, kill.get("error", "no kill: the run ended before a manifest was seen")
    assert victim_exit == -signal.SIGKILL
    total = sum(len(list((out / f"d{i}").glob("*.png"))) for i in range(3))
    manifests = list((out / MANIFESTS).rglob("*.json"))
    assert kill["manifests"] < len(manifests), "killed too late: every chunk was recorded"
    print(
        f"\nkilled {kill['name']} with {kill['manifests']} manifests written; the run "
        f"finished {summary['done']} images in {summary['wall_seconds']:.1f} s"
    )

    # Every image done once, reported once, recorded once; every output whole.
    assert (summary["done"], summary["skipped"], summary["failed"]) == (N_IMAGES, 0, 0)
    assert total == N_IMAGES
    lines = list(report_lines(str(out), summary["flow_run_id"]))
    assert Counter(x["key"] for x in lines) == Counter(
        f"d{i % 3}/{i:03d}.png" for i in range(N_IMAGES)
    )
    assert {x["status"] for x in lines} == {"done"}
    recorded = Counter()
    for path in manifests:
        recorded.update(list(json.loads(path.read_text())["tokens"]))
    assert set(recorded.values()) == {1} and len(recorded) == N_IMAGES
    for i in range(N_IMAGES):
        with Image.open(out / f"d{i % 3}" / f"{i:03d}.png") as img:
            img.load()  # not truncated
            assert img.size == (360, 270)
    assert not [p for p in out.rglob(".*tmp-*")]  # no half-written leftovers
