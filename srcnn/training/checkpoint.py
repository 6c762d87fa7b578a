"""Checkpoints of a training run, kept with the run (its MLflow artifacts: S3 in production),
and the rule that finds the run to resume.

A run is tagged with its resume key: a hash of what makes two trainings the same (the patch
store's fingerprint, the model, the training settings but for where and how often it saves,
the run name, the initial weights). A training that starts while an unfinished run of the same
key has a checkpoint (its process was killed, its Dask worker died, the tracking server went
away) continues that run from its newest readable checkpoint: same MLflow run, same epochs,
the training already done counted against the time budget, and per-epoch metrics logged once.

Checkpoints are `checkpoints/epoch-NNNNNN.pt` artifacts written by the tracking buffer's thread
(so a tracking outage delays them, never the training); the two newest are kept while the run
trains and all are removed when it ends. An object store writes a file whole or not at all; a
file copied into a local artifact folder may be cut short by a crash, and a reader then falls
back to the one before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from srcnn.config import ModelConfig, TrainConfig
from srcnn.tracking.buffer import TrackingBuffer

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

FOLDER = "checkpoints"
RESUME_TAG = "resume_key"
CHECKPOINT_TAG = "checkpoint"  # the newest checkpoint written whole, for a reader to see


def resume_key(store_fingerprint: str, model: ModelConfig, training: TrainConfig,
               run_name: str | None, init_model: str | None) -> str:
    payload = json.dumps({"store": store_fingerprint, "model": model.model_dump(),
                          "training": training.resume_key(), "run_name": run_name,
                          "init_model": init_model}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def unfinished_run(client: MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The newest run of this resume key that did not finish (running when its process died,
    or failed), if any."""
    runs = client.search_runs([experiment_id], f"tags.{RESUME_TAG} = '{key}' and "
                              "attributes.status != 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def latest_checkpoint(client: MlflowClient, run_id: str) -> dict | None:
    """The newest checkpoint of the run that reads whole (None: it has none)."""
    names = sorted(f.path for f in client.list_artifacts(run_id, FOLDER)
                   if f.path.endswith(".pt"))
    with tempfile.TemporaryDirectory() as tmp:
        for name in reversed(names):
            try:
                local = client.download_artifacts(run_id, name, tmp)
                return torch.load(local, map_location="cpu", weights_only=True)
            except Exception as exc:  # cut short by a crash: the one before it
                log.warning("run %s: checkpoint %s unreadable (%s); trying the one before",
                            run_id, name, exc)
    return None


class RunCheckpoints:
    """The training loop's `Checkpoints.save`: the state is written to a local file at once
    (the loop goes on with the next epoch) and uploaded in order by the tracking buffer."""

    def __init__(self, client: MlflowClient, run_id: str, buffer: TrackingBuffer, keep: int = 2):
        self.client, self.run_id, self.buffer, self.keep = client, run_id, buffer, keep
        self._dir = tempfile.TemporaryDirectory(prefix="srcnn-checkpoint-")
        self._repo = None  # the run's artifact store, looked up on the first prune

    def __call__(self, state: dict) -> None:
        path = Path(self._dir.name) / f"epoch-{state['epoch']:06d}.pt"
        torch.save(state, path)
        self.buffer.submit(f"checkpoint {path.name}", self._upload, path)

    def _upload(self, path: Path) -> None:
        """Upload, tag, then prune: retried whole by the buffer while the server is away, so
        each step is done once (a retry after the prune failed does not upload again a file
        already uploaded and removed)."""
        if path.exists():
            self.client.log_artifact(self.run_id, str(path), FOLDER)
            self.client.set_tag(self.run_id, CHECKPOINT_TAG, f"{FOLDER}/{path.name}")
            path.unlink()
        self.prune(self.keep)

    def prune(self, keep: int) -> None:
        """Remove all but the `keep` newest checkpoints (where the artifact store can)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        names = sorted(f.path for f in self.client.list_artifacts(self.run_id, FOLDER))
        stale = names[: max(len(names) - keep, 0)]
        if not stale:
            return
        if self._repo is None:
            self._repo = get_artifact_repository(
                self.client.get_run(self.run_id).info.artifact_uri)
        for name in stale:
            try:
                self._repo.delete_artifacts(name)
            except (NotImplementedError, OSError) as exc:
                log.warning("run %s: checkpoint %s not removed (%s)", self.run_id, name, exc)
                return

    def close(self) -> None:
        self._dir.cleanup()
