"""Bounded concurrency, one mechanism: a window of submitted work, refilled as work ends, from
the futures of a well-kept library (concurrent.futures, Dask, Prefect). No polling loops.

- `ahead(pool, fn, items, depth)`: results in the items' order, `depth` calls ahead (the
  reads of an upscale chunk, the training input's prefetch).
- `windowed(submissions, limit, as_completed)`: futures as they end, at most `limit` drawn
  and not yet yielded (upscale-bucket's shards on Prefect, the listing's partitions).
- `run_bounded(fn, jobs, window)`: the same window over Dask tasks, one scheduler message per
  refill (build-patches' shards).

`run_bounded(fn, jobs, window)` runs fn(*args) for each (tag, args) of `jobs` (taken from the
iterable only as tasks are submitted) and yields (tag, result) as each task completes.

On a distributed Client (the product's LocalCluster or a cluster's scheduler) at most `window`
tasks are in flight and a new one is submitted as each ends, so a slow task holds up only
itself. The batches this replaced (`window` tasks per `dask.compute`) waited for each
batch's slowest task: on two workers that cost little, but with as many workers as a batch
has tasks, one slow image kept every other worker idle until it ended. Without a Client, or
where `dask.config.set(scheduler=...)` picks one of Dask's local schedulers, the tasks go
`window` at a time through `dask.compute`.

A task that raises re-raises here, when its result is taken; the tasks still in flight are
released (cancelled) as the generator closes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from itertools import islice
from typing import Any, TypeVar

import dask

T = TypeVar("T")
F = TypeVar("F")


def ahead(pool: Executor, fn: Callable[[T], Any], items: Iterable[T], depth: int,
          ) -> Iterator[tuple[T, Future]]:
    """(item, future of fn(item)) in the items' order, with at most `depth` calls submitted
    beyond the one yielded. Items are drawn only as calls are submitted; a call's error is
    raised by its future's `result()`."""
    if depth < 0:
        raise ValueError(f"depth {depth}: must not be negative")
    pending: deque[tuple[T, Future]] = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) > depth:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


def windowed(submissions: Iterable[F], limit: int,
             as_completed: Callable[[list[F]], Iterator[F]]) -> Iterator[F]:
    """Each future of `submissions` once it has ended (completed or failed), whatever their
    order, the next one drawn (submitted) as each ends: at most `limit` drawn and not yet
    yielded, so a slow one holds up only itself. `as_completed` is the futures' library's own
    (concurrent.futures', Prefect's, Dask's)."""
    if limit < 1:
        raise ValueError(f"limit {limit}: must be positive")
    out: set[F] = set()

    def first_ended() -> F:
        ended = next(as_completed(list(out)))
        out.remove(ended)
        return ended

    for future in submissions:
        out.add(future)
        if len(out) >= limit:
            yield first_ended()
    while out:
        yield first_ended()


def current_client():
    """The distributed Client that `dask.compute` would use here, or None: none is open, or
    `dask.config.set(scheduler=...)` chose a local scheduler."""
    from dask.base import get_scheduler
    from distributed import Client

    client = getattr(get_scheduler(), "__self__", None)  # Client.get, bound to its Client
    return client if isinstance(client, Client) else None


def batches(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last may be shorter), taken from `items` only as each list
    is made (toolz.partition_all reads a list ahead: a window of jobs more in the driver)."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def run_bounded(fn: Callable, jobs: Iterable[tuple[Any, tuple]], window: int,
                ) -> Iterator[tuple[Any, Any]]:
    """(tag, fn(*args)) for each (tag, args) of `jobs`, in the order the tasks complete; at
    most `window` tasks submitted and not yet yielded."""
    if window < 1:
        raise ValueError(f"window {window}: must be positive")
    client = current_client()
    if client is None:
        for batch in batches(jobs, window):
            results = dask.compute(*[dask.delayed(fn)(*args) for _, args in batch])
            yield from zip((tag for tag, _ in batch), results)
        return
    from distributed import as_completed

    pending = iter(jobs)
    tags: dict[str, Any] = {}
    done = as_completed()

    def submit(n: int) -> None:  # one scheduler message for the lot
        take = list(islice(pending, n))
        if take:
            futures = client.map(fn, *zip(*(args for _, args in take)), pure=False)
            for (tag, _), future in zip(take, futures):
                tags[future.key] = tag
            done.update(futures)

    try:
        submit(window)
        for ready in done.batches():  # every task that has ended since the last look
            results = client.gather(ready)  # one round trip; a task's error is raised here
            for future, result in zip(ready, results):
                yield tags.pop(future.key), result
            submit(len(ready))  # the others run on meanwhile
    finally:
        done.clear()  # drops the futures still in flight: the scheduler forgets them
