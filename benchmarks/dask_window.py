"""A bounded window of tasks against bounded batches, on a cluster with as many worker threads
as a tenth of the window: how `srcnn.concurrency.run_bounded` (a task submitted as each one ends)
and the batches it replaced (`window` tasks per `dask.compute`, each batch waiting for its
slowest task) use the workers when a few tasks are slow (a large image, a slow read).

Stand-in tasks sleep (no CPU: this 2-core machine can then play a 32-thread cluster): most take
`--fast-ms`, one in `--slow-every` takes `--slow-ms`, the same sequence for both. Run both
twice, interleaved; prints wall time, worker utilisation and the ratio.

    python benchmarks/dask_window.py [--threads 32] [--tasks 4096] [--window 256]
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np
from distributed import Client, LocalCluster

from srcnn.concurrency import batches, run_bounded


def stand_in(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def by_batches(durations: list[float], window: int) -> None:
    for batch in batches(durations, window):
        dask.compute(*[dask.delayed(stand_in)(d) for d in batch])


def by_window(durations: list[float], window: int) -> None:
    for _ in run_bounded(stand_in, ((i, (d,)) for i, d in enumerate(durations)), window):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=4096)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--fast-ms", type=float, default=20.0)
    parser.add_argument("--slow-ms", type=float, default=600.0)
    parser.add_argument("--slow-every", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    slow = rng.random(args.tasks) < 1 / args.slow_every
    durations = np.where(slow, args.slow_ms, args.fast_ms).astype(float) / 1e3
    work = float(durations.sum())
    print(f"{args.tasks} stand-in tasks ({int(slow.sum())} of {args.slow_ms:.0f} ms, the rest "
          f"{args.fast_ms:.0f} ms; {work:.1f} s of work) on a LocalCluster of 1 worker process x "
          f"{args.threads} threads, {args.window} tasks in flight / per batch")
    best = {"batches": float("inf"), "window": float("inf")}
    with LocalCluster(n_workers=1, threads_per_worker=args.threads, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster):
        for _ in range(2):
            for name, fn in (("batches", by_batches), ("window", by_window)):
                start = time.perf_counter()
                fn(durations.tolist(), args.window)
                best[name] = min(best[name], time.perf_counter() - start)
    ideal = work / args.threads
    for name, seconds in best.items():
        print(f"  {name:8s} {seconds:6.2f} s, workers busy {100 * ideal / seconds:5.1f}% "
              f"(ideal {ideal:.2f} s)")
    print(f"  window / batches throughput: {best['batches'] / best['window']:.2f}x")


if __name__ == "__main__":
    main()
