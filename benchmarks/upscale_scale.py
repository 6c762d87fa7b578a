"""upscale-bucket at bucket scale: the figures of issue 11, each section in one run.

    python benchmarks/upscale_scale.py simulate [--keys 1000000 10000000]
    python benchmarks/upscale_scale.py local [--sizes 2000 20000]
    python benchmarks/upscale_scale.py s3 [--sizes 200 2000]
    python benchmarks/upscale_scale.py scaling [--images 40]

(The GPU figures: benchmarks/upscale_gpu.py, on a CUDA machine.)

simulate: the real planning code (`srcnn.batch.planning.plan`), the flow's aggregation of shard
    summaries, and the real record and report code (a manifest per chunk, a JSON Lines report
    per shard, written to fsspec's memory filesystem and dropped) driven by a stand-in listing
    (a generator of keys and ETags in 16 partitions), in a child process per size: peak RSS,
    keys/s, Prefect task runs.
local / s3: the real flow on tiny images (12x12 -> 36x36 with the shipped x3 weights) on local
    disk / the moto S3 server on loopback, each size in a child process of its own against one
    Prefect server: first pass and all-current re-run; marginal ms per image between the two
    sizes, and driver peak-RSS growth per 1,000 images.
scaling: a real `dask scheduler` with one, then two `dask worker` processes (one thread each),
    on a compute-bound bucket: the speed-up of two workers over one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: list[str], env: dict | None = None) -> dict:
    """Run this script's `args` in a fresh Python; its last stdout line is JSON."""
    out = subprocess.run([sys.executable, str(Path(__file__)), *args], capture_output=True,
                         text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{args}: exit {out.returncode}\n{out.stdout[-3000:]}\n"
                           f"{out.stderr[-6000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- simulate ---------------------------------------------------------------------------------

def _standin(partition: int, n: int):
    """Pages of `n` keys of one partition, as a listing would return them (key order)."""
    from srcnn.storage import PAGE, Listed

    def pages():
        for start in range(0, n, PAGE):
            yield [Listed(f"p{partition:02d}/{i:09d}.jpg", f"{partition:02d}{i:030x}")
                   for i in range(start, min(n, start + PAGE))]
    return pages


def simulate_child(n_keys: int, records: bool) -> dict:
    """The driver's part (planning, shards handed out, summaries added up), and with `records`
    also the workers' record and report code run here on every chunk and shard."""
    from flows.upscale_bucket import _add
    from srcnn.batch.job import (
        ChunkResult,
        Job,
        ShardSummary,
        UpscaleOptions,
        manifest_url,
        write_shard_report,
    )
    from srcnn.batch.planning import plan
    from srcnn.storage import filesystem

    parts = 16
    sources = [(f"p{p:02d}/", _standin(p, n_keys // parts + (p < n_keys % parts)))
               for p in range(parts)]
    job = Job("memory://in", "memory://out", UpscaleOptions(), "pretrained:x3", "0" * 64, "sim")
    fs, _ = filesystem("memory://out")
    totals = {"done": 0, "skipped": 0, "failed": 0, "pixels": 0, "worker_seconds": 0.0,
              "shards": 0}
    failures: list[str] = []
    start = time.perf_counter()
    chunks = 0
    in_flight: list = []
    for shard in plan(sources, 64, keep=lambda k: True):
        chunks += len(shard.chunks)
        in_flight = (in_flight + [shard])[-3:]  # the flow keeps three shards out
        if not records:
            _add(totals, failures, ShardSummary(shard.index, shard.n_keys, 0, 0, 0, 0.0, (),
                                                None), _Quiet())
            continue
        results = []
        for chunk in shard.chunks:  # what each chunk's worker records and reports
            items = chunk.items
            tokens = {i.key: job.options.token(i.etag, job.weights_digest) for i in items}
            fs.pipe_file(manifest_url("memory://out", chunk.id), json.dumps(
                {"chunk": chunk.id, "tokens": tokens}).encode())
            results.append(ChunkResult(done=len(items), lines=[
                {"key": i.key, "status": "done", "output": f"memory://out/{i.key}",
                 "seconds": 0.01} for i in items]))
        summary = write_shard_report(job, shard.index, results)
        del results
        fs.rm("/out", recursive=True)  # the simulated objects do not accumulate here
        _add(totals, failures, summary, _Quiet())
    seconds = time.perf_counter() - start
    return {"keys": totals["done"], "shards": totals["shards"], "chunks": chunks,
            "seconds": seconds, "keys_per_s": totals["done"] / seconds, "peak_rss_mb": rss_mb()}


class _Quiet:
    def info(self, *args) -> None:
        pass


def simulate(sizes: list[int]) -> None:
    from srcnn.batch.planning import shard_count

    print("== simulation: the real planning code driven by a stand-in listing (16 partitions)")
    print("driver: planning, three shards in flight, summaries added up; + workers' code: the "
          "same with each chunk's manifest and each shard's report built and written here")
    print("| keys | planning keys/s | Prefect task runs per flow run (shards + 2) | chunks "
          "(Dask tasks, manifests) | driver peak RSS (MB) | with workers' record + report "
          "code: keys/s, peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        r = child(["_simulate", str(n), "driver"])
        w = child(["_simulate", str(n), "records"])
        assert r["keys"] == w["keys"] == n and r["shards"] <= shard_count(n) + 1
        print(f"| {n:,} | {r['keys_per_s']:,.0f} | {r['shards'] + 2} | {r['chunks']:,} | "
              f"{r['peak_rss_mb']:.0f} | {w['keys_per_s']:,.0f}, {w['peak_rss_mb']:.0f} |",
              flush=True)


# -- real runs --------------------------------------------------------------------------------

def tiny_png(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def flow_child(input_url: str, output_url: str) -> dict:
    from flows.upscale_bucket import upscale_bucket

    s = upscale_bucket(input_url, output_url, "pretrained")
    return {"done": s["done"], "skipped": s["skipped"], "seconds": s["wall_seconds"],
            "peak_rss_mb": rss_mb()}


def real_runs(kind: str, sizes: list[int]) -> None:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "WARNING"}
        if kind == "s3":
            from loopback_s3 import loopback_s3

            with loopback_s3() as endpoint:
                import s3fs

                env |= {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                   "AWS_DEFAULT_REGION", "SRCNN_S3_ENDPOINT_URL")}
                fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
                fs.mkdir("bench")
                rows = _measure(sizes, env, lambda key, data: fs.pipe(f"bench/{key}", data),
                                lambda name: f"s3://bench/{name}")
        else:
            def put(key: str, data: bytes) -> None:
                path = Path(tmp) / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            rows = _measure(sizes, env, put, lambda name: str(Path(tmp) / name))
    _print_real(kind, rows)


def _measure(sizes, env, put, url) -> dict:
    rng = np.random.default_rng(0)
    rows = {}
    for n in sizes:
        for i in range(n):  # 100 folders: partitions listed in parallel
            put(f"in{n}/d{i % 100:02d}/{i:06d}.png", tiny_png(rng))
        first = child(["_flow", url(f"in{n}"), url(f"out{n}")], env)
        again = child(["_flow", url(f"in{n}"), url(f"out{n}")], env)
        assert first["done"] == n and again["skipped"] == n, (first, again)
        rows[n] = (first, again)
        print(f"  {n:,} images: first pass {first['seconds']:.1f} s, re-run "
              f"{again['seconds']:.2f} s, driver peak RSS {first['peak_rss_mb']:.0f} MB",
              flush=True)
    return rows


def _print_real(kind: str, rows: dict) -> None:
    (n1, (f1, a1)), (n2, (f2, a2)) = sorted(rows.items())[:2]
    dn = n2 - n1
    print(f"| {kind} | first pass ms/image (marginal) | all-current re-run ms/image (marginal) "
          f"| driver RSS growth per 1,000 images (MB) |")
    print("|---|---|---|---|")
    print(f"| {n1:,} -> {n2:,} images | {(f2['seconds'] - f1['seconds']) / dn * 1e3:.2f} | "
          f"{(a2['seconds'] - a1['seconds']) / dn * 1e3:.3f} | "
          f"{(f2['peak_rss_mb'] - f1['peak_rss_mb']) / dn * 1e3:.2f} |")


# -- scaling ----------------------------------------------------------------------------------

def scaling(n_images: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from prefect.testing.utilities import prefect_test_harness
    from test_dask_cluster import _start, _stop

    from flows.upscale_bucket import upscale_bucket
    from srcnn.batch.job import BucketOptions

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        (tmp / "in").mkdir()
        for i in range(n_images):
            Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(
                tmp / "in" / f"{i:03d}.png")
        sched = _start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(tmp / "s.json")], tmp / "s.log")
        procs = [sched]
        try:
            while not (tmp / "s.json").exists():
                time.sleep(0.2)
            time.sleep(0.5)
            address = json.loads((tmp / "s.json").read_text())["address"]
            times = {}
            for n in (1, 2):
                procs.append(_start(["worker", address, "--nthreads", "1", "--no-dashboard",
                                     "--host", "127.0.0.1", "--local-directory",
                                     str(tmp / f"w{n}")], tmp / f"w{n}.log"))
                from distributed import Client

                with Client(address) as c:
                    c.wait_for_workers(n, timeout=60)
                s = upscale_bucket(str(tmp / "in"), str(tmp / f"out{n}"), "pretrained",
                                   bucket=BucketOptions(chunk_size=2), dask_address=address)
                assert s["done"] == n_images
                times[n] = s["wall_seconds"]
                print(f"  {n} worker(s): {times[n]:.1f} s for {n_images} images "
                      f"({s['output_mpx_per_s']:.2f} output Mpx/s)", flush=True)
        finally:
            for p in reversed(procs):
                _stop(p)
    print(f"| workers | 1 | 2 |\n|---|---|---|\n| seconds | {times[1]:.1f} | {times[2]:.1f} |\n"
          f"2 workers over 1: {times[1] / times[2]:.2f}x")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    if sys.argv[1] == "_simulate":
        print(json.dumps(simulate_child(int(sys.argv[2]), sys.argv[3] == "records")))
        return
    if sys.argv[1] == "_flow":
        print(json.dumps(flow_child(sys.argv[2], sys.argv[3])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("section", choices=["simulate", "local", "s3", "scaling"])
    p.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--sizes", type=int, nargs="+")
    p.add_argument("--images", type=int)
    a = p.parse_args()
    if a.section == "simulate":
        simulate(a.keys)
    elif a.section in ("local", "s3"):
        real_runs(a.section, a.sizes or ([2000, 20000] if a.section == "local" else [200, 2000]))
    else:
        scaling(a.images or 40)


if __name__ == "__main__":
    main()
