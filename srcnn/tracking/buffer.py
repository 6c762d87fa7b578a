"""Calls to the tracking server that training must not wait on: made in order on a thread of
their own, each retried with backoff while the server does not answer.

A training loop hands its per-epoch metrics and checkpoints to a `TrackingBuffer` and goes on.
A restart of the MLflow server (or of its database) for a minute delays the records, never the
training: nothing is dropped, the calls are made in the order given once the server is back,
and `close` waits for the last one. An outage longer than `outage_s` fails the buffer with one
clear error, which the training loop raises at its next epoch (its last checkpoint is kept to
resume from). The queue is bounded: when it is full, the loop waits rather than drop records.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# MLflow errors that a retry cannot mend: the request itself is wrong.
PERMANENT = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST",
                       "RESOURCE_ALREADY_EXISTS", "INVALID_STATE", "PERMISSION_DENIED",
                       "UNAUTHENTICATED"})


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer for longer than the buffer waits."""


# Local errors a retry cannot mend either (a network's errors are other OSErrors).
LOCAL = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def transient(exc: BaseException) -> bool:
    """Whether a failed call may succeed later (the server or the network was away)."""
    code = getattr(exc, "error_code", None)
    if code:
        return code not in PERMANENT
    return isinstance(exc, Exception) and not isinstance(exc, LOCAL)


class TrackingBuffer:
    """A FIFO of calls made on one thread, each retried until it succeeds or the outage has
    lasted `outage_s` seconds (counted from the call's first try)."""

    def __init__(self, where: str, outage_s: float = 600.0, max_pending: int = 10_000,
                 first_wait_s: float = 0.5, max_wait_s: float = 15.0):
        self.where, self.outage_s = where, outage_s
        self._first, self._max = first_wait_s, max_wait_s
        self._queue: queue.Queue = queue.Queue(max_pending)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=f"tracking {where}", daemon=True)
        self._thread.start()

    def submit(self, what: str, fn: Callable[..., object], *args, **kwargs) -> None:
        """Queue `fn(*args, **kwargs)` (`what` names it in messages); raises the buffer's error
        if it has failed."""
        self.check()
        self._queue.put((what, fn, args, kwargs))

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self, timeout_s: float | None = None) -> None:
        """Wait until every queued call is made (at most the outage limit plus `timeout_s`);
        raises the buffer's error if one failed."""
        self._queue.put(None)
        self._thread.join(None if timeout_s is None else self.outage_s + timeout_s)
        self.check()
        if self._thread.is_alive():
            raise TrackingUnavailable(f"tracking server {self.where}: records still pending "
                                      f"after {self.outage_s + (timeout_s or 0):.0f} s")

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is None:
                self._call(*item)
        # after a failure the rest is dropped with the error raised to the caller

    def _call(self, what: str, fn, args, kwargs) -> None:
        first, wait, warned = time.monotonic(), self._first, False
        while True:
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                down = time.monotonic() - first
                if not transient(exc):
                    self.error = exc
                    return
                if down + wait > self.outage_s:
                    self.error = TrackingUnavailable(
                        f"tracking server {self.where} did not answer for {down:.0f} s "
                        f"(the limit is {self.outage_s:.0f} s, SRCNN_TRACKING_OUTAGE_S): "
                        f"{what} not recorded: {exc}")
                    self.error.__cause__ = exc
                    return
                if not warned:
                    log.warning("tracking server %s not answering (%s): %s is retried, "
                                "training goes on", self.where, type(exc).__name__, what)
                    warned = True
                time.sleep(wait)
                wait = min(wait * 2, self._max)
            else:
                if warned:
                    log.warning("tracking server %s answers again: %s recorded after %.0f s",
                                self.where, what, time.monotonic() - first)
                return
