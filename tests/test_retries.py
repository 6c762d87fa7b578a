"""The network retry policy: transient errors are retried, permanent ones are not."""

import pytest
from prefect import flow, task

from tasks import NETWORK_RETRIES

pytestmark = pytest.mark.usefixtures("prefect_server")


def _flaky(calls: list, error: Exception, failures: int):
    @task(**{**NETWORK_RETRIES, "retry_delay_seconds": 0, "retry_jitter_factor": None})
    def step() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "ok"

    @flow
    def run() -> str:
        return step()

    return run


def test_transient_error_is_retried():
    calls = []
    assert _flaky(calls, ConnectionError("S3 reset the connection"), failures=2)() == "ok"
    assert len(calls) == 3


def test_permanent_error_is_not_retried():
    calls = []
    with pytest.raises(LookupError):
        _flaky(calls, LookupError("models:/srcnn-x3@champion: not found"), failures=5)()
    assert len(calls) == 1


def test_fewer_retries_asked_for_are_kept(monkeypatch):
    """SRCNN_TASK_RETRIES lowers the patience of a process's tasks at their next failure
    (the outage tests give a long outage one retry, where users keep 3)."""
    monkeypatch.setenv("SRCNN_TASK_RETRIES", "1")
    calls = []
    with pytest.raises(ConnectionError):
        _flaky(calls, ConnectionError("S3 reset the connection"), failures=5)()
    assert len(calls) == 2
    monkeypatch.setenv("SRCNN_TASK_RETRIES", "0")
    calls = []
    with pytest.raises(ConnectionError):
        _flaky(calls, ConnectionError("S3 reset the connection"), failures=5)()
    assert len(calls) == 1
