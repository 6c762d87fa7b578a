"""The tracking buffer against a tracking server that is not there: records wait and are
retried; past the outage limit the buffer fails with one clear error; a request the server
refuses as wrong fails at once."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from servers import free_port

from srcnn.tracking.buffer import TrackingBuffer, TrackingUnavailable


def test_a_long_outage_fails_clearly_and_stops_taking_records(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    buffer = TrackingBuffer(url, outage_s=3, first_wait_s=0.2)
    tries = []

    def log_metric():
        tries.append(1)
        MlflowClient(url).log_metric("0" * 32, "loss", 1.0)

    buffer.submit("epoch 1's metrics", log_metric)
    with pytest.raises(TrackingUnavailable, match=rf"tracking server {url} did not answer for"):
        buffer.close(timeout_s=30)
    assert len(tries) >= 3  # retried with backoff until the limit
    with pytest.raises(TrackingUnavailable, match="epoch 1's metrics not recorded"):
        buffer.submit("epoch 2's metrics", print)  # the training loop stops here


def test_a_refused_request_is_not_retried(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    buffer = TrackingBuffer("sqlite", outage_s=600)
    tries = []

    def log_metric():
        tries.append(1)
        client.log_metric("f" * 32, "loss", 1.0)

    buffer.submit("a metric of no run", log_metric)
    with pytest.raises(Exception, match="f" * 32) as caught:
        buffer.close(timeout_s=30)
    assert not isinstance(caught.value, TrackingUnavailable) and len(tries) == 1
