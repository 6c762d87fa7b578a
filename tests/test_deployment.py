"""End to end as a service: a real Prefect server and process worker, deployed with `make deploy`.

`prefect server start` on loopback (own PREFECT_HOME and SQLite file), `make deploy` registers
deployments/prefect.yaml, a `prefect worker start --pool srcnn-process` picks up
`prefect deployment run upscale-bucket/nightly`, which upscales images in a bucket on the moto
S3 server. Checks the flow run's final state through the API, every output object, and the
schedules registered on the training deployment. Run alone with `pytest -m deployment`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from servers import BIN, ROOT, free_port, run, service

from flows.upscale_bucket import REPORT_KEY
from srcnn.batch.job import report_lines
from srcnn.config import ModelConfig, PatchConfig
from srcnn.data.build.builder import build_patch_store
from srcnn.models.files import save_model
from srcnn.models.srcnn import SRCNN

pytestmark = pytest.mark.deployment

POOL = "srcnn-process"
DEPLOYMENTS = {"upscale-bucket/nightly", "build-patches/t91", "train-srcnn/nightly-x3",
               "register-best/x3"}
# Input key -> (height, width, PIL mode); nested keys keep their folders in the output.
IMAGES = {"a.png": (20, 30, "RGB"), "nested/grey.png": (17, 23, "L"), "c.png": (31, 12, "RGB")}


def prefect_env(home: Path, api: str) -> dict[str, str]:
    """The test's environment without its PREFECT_* settings, pointed at our server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"PREFECT_HOME": str(home), "PREFECT_API_URL": api, "DO_NOT_TRACK": "1",
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO"}


@contextmanager
def api_client(api: str):
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        yield client


def put_images(fs, prefix: str) -> None:
    rng = np.random.default_rng(0)
    for key, (h, w, mode) in IMAGES.items():
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        with fs.open(f"{prefix}/{key}", "wb") as f:
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(f, format="PNG")


def flow_run_id(stdout: str) -> str:
    match = re.search(r"UUID: ([0-9a-f-]{36})", stdout)
    assert match, stdout
    return match.group(1)


def wait_for_run(api: str, deployment: str, timeout: float, wrk) -> object:
    """The first run of `deployment` that an automation created, once it is final."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout
    with api_client(api) as client:
        dep_id = client.read_deployment_by_name(deployment).id
        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[dep_id]))) if r.created_by
                    and r.created_by.type == "AUTOMATION"]
            if runs and runs[0].state.is_final():
                return runs[0]
            time.sleep(1)
    pytest.fail(f"no finished run of {deployment} after {timeout} s\n{wrk.tail()}")


def chain_through_triggers(api, env, worker_env, fs, images, tmp_path, srv, wrk) -> None:
    """The nightly chain on events: a completed train-srcnn/nightly-x3 run triggers
    register-best/x3, whose promotion of `champion` emits srcnn.champion.moved, which triggers
    upscale-bucket/nightly (default parameters: s3://srcnn/incoming/ -> upscaled-x3/)."""
    store = str(tmp_path / "t91-tiny.zarr")
    build_patch_store(str(images), store,
                      PatchConfig(scale=3, patch_size=72, stride=24, val_fraction=0.34))
    fs.mkdir("srcnn")
    put_images(fs, "srcnn/incoming")
    params = {"store": store, "training": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 8},
              "eval_datasets": [str(ROOT.parent / "shared" / "datasets" / "Set5")],
              "run_name": "triggered-chain"}
    done = run([str(BIN / "prefect"), "deployment", "run", "train-srcnn/nightly-x3",
                "--params", json.dumps(params), "--watch", "--watch-timeout", "300"],
               env, 360, also=(srv, wrk))
    with api_client(api) as client:
        trained = client.read_flow_run(UUID(flow_run_id(done.stdout)))
    assert trained.state.is_completed(), (trained.state, wrk.tail())
    assert trained.parameters["preset"] == "real-x3"  # the deployment's, merged in
    assert trained.parameters["init_model"] == "pretrained:robust"

    registered = wait_for_run(api, "register-best/x3", 240, wrk)
    assert registered.state.is_completed(), (registered.state, wrk.tail())
    assert registered.start_time >= trained.end_time  # after training, never beside it
    uri = worker_env["SRCNN_MLFLOW_TRACKING_URI"]
    ml = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (champion,) = ml.search_model_versions("name = 'srcnn-x3'")
    assert ml.get_run(champion.run_id).info.run_name == "triggered-chain"
    trained_run = ml.get_run(champion.run_id)  # the real-x3 preset's net, within the budget
    assert trained_run.data.params["model.family"] == "espcn"
    assert trained_run.data.params["model.depth"] == "8"
    assert champion.tags["family"] == "espcn" and int(champion.tags["macs_per_pixel"]) <= 6500
    assert "multiply-adds per output pixel" in champion.description
    assert ml.get_model_version_by_alias("srcnn-x3", "champion").version == champion.version

    upscaled = wait_for_run(api, "upscale-bucket/nightly", 300, wrk)
    assert upscaled.state.is_completed(), (upscaled.state, wrk.tail())
    report = json.loads(fs.cat(f"srcnn/upscaled-x3/{REPORT_KEY}"))
    assert report["flow_run_id"] == str(upscaled.id) and report["done"] == len(IMAGES)
    assert report["model"] == f"models:/srcnn-x3/{champion.version}"


def test_deploy_and_run_upscale_bucket_through_a_worker(tmp_path, s3_bucket, small_collection,
                                                        databases):
    fs, bucket = s3_bucket
    put_images(fs, f"{bucket}/in")
    model_dir = tmp_path / "model"
    save_model(SRCNN(ModelConfig.from_arch("9-1-5", n1=8, n2=4)), 3, str(model_dir))

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = prefect_env(tmp_path / "prefect-home", api)
    server_env = env | {
        "PREFECT_API_DATABASE_CONNECTION_URL": databases.prefect(tmp_path / "prefect.db")}
    # No scheduler service: the nightly schedules are registered but create no runs here.
    server_argv = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                   str(port), "--no-ui", "--no-scheduler", "--analytics-off"]
    with service("prefect-server", server_argv, server_env, tmp_path, f"{api}/health", 180) as srv:
        # Exactly `make deploy` (creates the pool, deploys all); twice: the second run finds
        # the pool already there and updates the deployments in place.
        make = ["make", "--no-print-directory", f"VENV={sys.prefix}",
                "-o", f"{sys.prefix}/.installed", "deploy"]
        for _ in range(2):
            run(make, env, 180, also=(srv,))

        with api_client(api) as client:
            pool = client.read_work_pool(POOL)
            assert pool.type == "process"
            deployments = {f"{client.read_flow(d.flow_id).name}/{d.name}": d
                           for d in client.read_deployments()}
            assert set(deployments) == DEPLOYMENTS
            assert {d.work_pool_name for d in deployments.values()} == {POOL}
            train = client.read_deployment_by_name("train-srcnn/nightly-x3")
            upscale = client.read_deployment_by_name("upscale-bucket/nightly")
        schedules = [(s.schedule.cron, s.schedule.timezone, s.active) for s in train.schedules]
        assert schedules == [("0 1 * * *", "UTC", True)]
        assert [(s.schedule.cron, s.active) for s in upscale.schedules] == [("0 2 * * *", True)]
        # The project folder is resolved on the worker at run time, not frozen at deploy time.
        assert "{{ $SRCNN_PROJECT_DIR }}" in json.dumps(upscale.pull_steps)

        worker_env = env | {
            "SRCNN_PROJECT_DIR": str(ROOT),
            "SRCNN_MLFLOW_TRACKING_URI": databases.mlflow(tmp_path / "mlflow.db"),
            "SRCNN_MLFLOW_ARTIFACT_ROOT": (tmp_path / "mlartifacts").as_uri(),
            "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        }
        assert worker_env["SRCNN_S3_ENDPOINT_URL"] and worker_env["AWS_ACCESS_KEY_ID"]
        worker_dir = tmp_path / "worker"  # not the project: the pull step must move there
        worker_dir.mkdir()
        worker_argv = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--limit", "1"]
        with service("prefect-worker", worker_argv, worker_env, tmp_path, cwd=worker_dir) as wrk:
            wrk.wait_log("started!", 120)
            params = {"input": f"s3://{bucket}/in", "output": f"s3://{bucket}/out",
                      "model": str(model_dir), "bucket": {"chunk_size": 2}}
            done = run([str(BIN / "prefect"), "deployment", "run", "upscale-bucket/nightly",
                        "--params", json.dumps(params), "--watch", "--watch-timeout", "300"],
                       env, 360, also=(srv, wrk))

            run_id = flow_run_id(done.stdout)
            with api_client(api) as client:
                flow_run = client.read_flow_run(UUID(run_id))
            assert flow_run.state.is_completed(), (flow_run.state, wrk.tail())
            assert flow_run.deployment_id == upscale.id
            assert flow_run.parameters["input"] == params["input"]
            assert flow_run.parameters["options"] == {"scale": 3}  # the deployment's, merged in

            chain_through_triggers(api, env, worker_env, fs, small_collection, tmp_path, srv, wrk)

    for key, (h, w, mode) in IMAGES.items():
        with fs.open(f"{bucket}/out/{key}", "rb") as f, Image.open(f) as img:
            assert (img.size, img.mode) == ((3 * w, 3 * h), mode), key
    report = json.loads(fs.cat(f"{bucket}/out/{REPORT_KEY}"))
    assert report["flow_run_id"] == run_id and report["done"] == len(IMAGES)
    assert report["model"] == str(model_dir)
    lines = report_lines(f"s3://{bucket}/out", run_id)
    assert sorted(item["key"] for item in lines) == sorted(IMAGES)
