"""Training asks a Dask cluster for a GPU worker, and runs locally when there is none."""

import pytest
from distributed import LocalCluster
from mlflow import MlflowClient

from flows.build_patches import build_patches
from flows.train_srcnn import train_srcnn
from srcnn.config import ModelConfig, PatchConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_server")

TINY = ModelConfig.from_arch("9-1-5", n1=8, n2=4)
QUICK = TrainConfig(epochs=1, steps_per_epoch=5, batch_size=16)


@pytest.mark.parametrize("gpu", [True, False])
def test_training_runs_on_a_gpu_worker_when_the_cluster_has_one(
        gpu, small_collection, tmp_path, mlflow_home, set5, monkeypatch):
    store = str(tmp_path / "p.zarr")
    build_patches(str(small_collection), store, PatchConfig(scale=3))
    resources = {"GPU": 1} if gpu else {}
    # Workers start after the MLflow settings are in the environment, so they inherit them.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, resources=resources,
                      dashboard_address=":0") as cluster:
        monkeypatch.setenv("SRCNN_DASK_ADDRESS", cluster.scheduler_address)
        (worker,) = cluster.scheduler.workers
        result = train_srcnn(store, TINY, QUICK, [str(set5)])
    uri = f"sqlite:///{mlflow_home / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["dask_worker"] == (worker if gpu else "none")
    assert run.data.tags["prefect_flow_run_id"]
