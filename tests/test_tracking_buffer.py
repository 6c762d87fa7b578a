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


def test_a_missing_local_file_is_not_retried(tmp_path):
    """A call that cannot succeed for a local reason fails the buffer at once, not after the
    outage limit."""
    buffer = TrackingBuffer("sqlite", outage_s=600)
    tries = []

    def upload():
        tries.append(1)
        (tmp_path / "gone.pt").read_bytes()

    buffer.submit("checkpoint gone.pt", upload)
    with pytest.raises(FileNotFoundError):
        buffer.close(timeout_s=30)
    assert tries == [1]


def test_a_checkpoint_upload_retried_after_its_prune_failed_is_not_redone(tmp_path):
    """The tracking server goes away after a checkpoint was uploaded, tagged and its local file
    removed, while old checkpoints are being pruned: the buffer's retry prunes, and neither
    uploads again nor fails on the removed file."""
    from srcnn.training.checkpoint import CHECKPOINT_TAG, FOLDER, RunCheckpoints

    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    listed = []

    class ServerAwayOnce(MlflowClient):  # the real client, the server away for one listing
        def list_artifacts(self, *args, **kwargs):
            listed.append(1)
            if len(listed) == 3:
                raise ConnectionError("tracking server away")
            return super().list_artifacts(*args, **kwargs)

    flaky = ServerAwayOnce(f"sqlite:///{tmp_path / 'm.db'}")
    buffer = TrackingBuffer("sqlite", outage_s=60, first_wait_s=0.05)
    saver = RunCheckpoints(flaky, run_id, buffer, keep=2)
    for epoch in (1, 2, 3):
        saver({"epoch": epoch, "weights": [epoch]})
    buffer.close(timeout_s=30)
    names = sorted(f.path for f in client.list_artifacts(run_id, FOLDER))
    assert names == [f"{FOLDER}/epoch-000002.pt", f"{FOLDER}/epoch-000003.pt"]
    assert len(listed) == 4  # the third epoch's prune, tried twice
    assert client.get_run(run_id).data.tags[CHECKPOINT_TAG] == f"{FOLDER}/epoch-000003.pt"
