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
