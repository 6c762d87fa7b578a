"""Dask's distributed client, at the edge: a LocalCluster by default, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from distributed import Client, LocalCluster

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(address: str | None = None, n_workers: int = 2) -> Iterator[Client]:
    """A Client that `dask.compute` uses while the context is open."""
    if address:
        with Client(address) as client:
            log.info("using Dask scheduler at %s (%d workers now)", address,
                     len(client.nthreads()))
            yield client
        return
    # One thread per worker process: the per-image work is GIL-bound Python and PIL.
    # dashboard_address=None still binds :8787 in this distributed release, so two clusters on
    # one machine (tests, a benchmark beside a build) would collide; ":0" takes a free port.
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        log.info("started a Dask LocalCluster with %d workers", n_workers)
        yield client


def current_worker() -> str | None:
    """The address of the Dask worker running this code, or None outside a worker."""
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return None


def gpu_workers(client: Client) -> list[str]:
    """Workers that advertise a `GPU` resource (`dask worker --resources GPU=1`)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return [addr for addr, w in workers.items() if w.get("resources", {}).get("GPU", 0) >= 1]


def run_on_gpu_worker(address: str | None, fn, *args):
    """Run `fn(*args)` on a GPU worker of the cluster at `address` when it has one (asking
    the scheduler for the `GPU` resource), here otherwise."""
    if not address:
        return fn(*args)
    with Client(address) as client:
        if not gpu_workers(client):
            log.info("no GPU workers at %s: running here", address)
            return fn(*args)
        log.info("running %s on a GPU worker at %s", getattr(fn, "__name__", fn), address)
        return client.submit(fn, *args, resources={"GPU": 1}, pure=False).result()
