"""A training that dies resumes: a real `srcnn train` process is SIGKILLed after its first
checkpoint (and, separately, the Dask worker running the training); the same command started
again (or Dask's rescheduling of the task) continues the same MLflow run from that checkpoint,
logs every epoch once, finishes, and the run registers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from servers import ROOT, harness_env

from flows.build_patches import build_patches
from flows.register_best import register_best
from srcnn.config import PatchConfig
from srcnn.tracking.runs import TRAIN_EXPERIMENT, curve
from srcnn.training.checkpoint import CHECKPOINT_TAG, FOLDER

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

EPOCHS = 6  # a kill after the checkpoint of epoch 2 leaves four to go


def train_command(store: str, set5) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "train", store, "--arch", "9-1-5", "--n1", "16",
            "--n2", "8", "--epochs", str(EPOCHS), "--steps-per-epoch", "120", "--batch-size",
            "32", "--checkpoint-minutes", "0", "--run-name", "resumable", "--eval-dataset",
            str(set5), "--degradation", "bicubic"]


@pytest.fixture
def setup(tmp_path, monkeypatch, small_collection, set5, databases):
    monkeypatch.setenv("SRCNN_HOME", str(tmp_path))
    for name in ("SRCNN_MLFLOW_TRACKING_URI", "SRCNN_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    store = str(tmp_path / "patches.zarr")
    build_patches(str(small_collection), store, PatchConfig(scale=3, val_fraction=0.34))
    env = harness_env(OMP_NUM_THREADS="1")
    ml = MlflowClient(databases.mlflow(tmp_path / "mlflow.db"))  # SRCNN_HOME's store
    return store, env, ml, train_command(store, set5)


def wait_for_checkpoint(ml: MlflowClient, proc: subprocess.Popen, min_epoch: int = 2,
                        timeout: float = 300) -> tuple[str, int]:
    """(run id, epoch) once the training's run holds a checkpoint of `min_epoch` or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended before a checkpoint: {proc.communicate()}"
        exp = ml.get_experiment_by_name(TRAIN_EXPERIMENT)
        runs = ml.search_runs([exp.experiment_id]) if exp else []
        if runs and (tag := runs[0].data.tags.get(CHECKPOINT_TAG)):
            epoch = int(tag.rsplit("-", 1)[1].removesuffix(".pt"))
            if epoch >= min_epoch:
                return runs[0].info.run_id, epoch
        time.sleep(0.1)
    pytest.fail("no checkpoint in time")


def assert_resumed_whole(ml: MlflowClient, run_id: str) -> None:
    """One run, finished, resumed; every epoch's figures once; checkpoints cleared; it
    registers."""
    exp = ml.get_experiment_by_name(TRAIN_EXPERIMENT)
    (run,) = ml.search_runs([exp.experiment_id])  # the same run went on: no second one
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert int(run.data.tags["resumed"]) >= 1
    for key in ("train_loss", "val_psnr", "held_out_psnr"):
        steps = [m.step for m in ml.get_metric_history(run_id, curve(key))]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)  # no gap, no repeat
    assert ml.list_artifacts(run_id, FOLDER) == []
    assert run.data.metrics["best_epoch"] >= 1 and "worst_gain" in run.data.metrics
    reg = register_best(3, run_id)
    assert reg["version"] == "1" and reg["promoted"]


def test_killed_training_process_resumes_in_the_same_run(setup):
    store, env, ml, command = setup
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    run_id, epoch = wait_for_checkpoint(ml, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    logged = max(m.step for m in ml.get_metric_history(run_id, curve("train_loss")))
    assert ml.get_run(run_id).info.status == "RUNNING"  # killed: nobody closed it
    assert epoch <= logged < EPOCHS

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr[-4000:]
    assert f"run {run_id}: resuming from its checkpoint of epoch" in again.stderr
    assert_resumed_whole(ml, run_id)


def test_killed_dask_worker_resumes_in_the_same_run(setup, monkeypatch):
    """The training runs on a Dask worker offering the GPU resource; that worker process is
    SIGKILLed after the first checkpoint; its nanny starts a new one and the scheduler runs
    the task again, which resumes the run."""
    from distributed import Client, LocalCluster

    store, env, ml, command = setup
    with (LocalCluster(n_workers=1, threads_per_worker=1, resources={"GPU": 1},
                       dashboard_address=None, env={"OMP_NUM_THREADS": "1"}) as cluster,
          Client(cluster) as client):
        proc = subprocess.Popen(command, cwd=ROOT, env={**env, "SRCNN_DASK_ADDRESS":
                                                        cluster.scheduler_address},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_id, _ = wait_for_checkpoint(ml, proc)
        (pid,) = client.run(os.getpid).values()
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out + err[-4000:]
        assert ml.get_run(run_id).data.tags["dask_worker"] != "none"  # it ran on the worker
    assert_resumed_whole(ml, run_id)
