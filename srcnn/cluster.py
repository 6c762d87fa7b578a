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
