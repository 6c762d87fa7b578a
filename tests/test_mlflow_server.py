"""MLflow as a service: a real `mlflow server` (SQLite backend, artifacts proxied to the moto S3
server), the real train-srcnn and register-best flows logging through it, then a reviewer's
view of the champion with an MlflowClient on the server's URL and the objects in the bucket."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from servers import BIN, free_port, harness_env, service
from test_mlflow_models import reference_upscale, rgb_crop, serve_and_post

from flows.build_patches import build_patches
from flows.cli_output import MLFLOW_SERVER_ENV
from flows.register_best import register_best
from flows.train_srcnn import train_srcnn
from srcnn import __version__
from srcnn.config import ModelConfig, PatchConfig, TrainConfig
from srcnn.data.store.patch_store import PatchStore
from srcnn.registry.resolve import resolve_model
from srcnn.tracking.runs import TRAIN_EXPERIMENT, curve

pytestmark = pytest.mark.usefixtures("prefect_server")

TINY = ModelConfig.from_arch("9-1-5", n1=16, n2=8)
QUICK = TrainConfig(epochs=2, steps_per_epoch=20, batch_size=32)
PREFIX = "mlflow"  # artifacts live under s3://<bucket>/mlflow/


@pytest.fixture
def mlflow_server(tmp_path, s3_bucket, monkeypatch, set5, databases):
    """`mlflow server` on a free loopback port; the flows' settings point at it."""
    _, bucket = s3_bucket
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ) | MLFLOW_SERVER_ENV | {  # started as `srcnn ui` starts it
        "MLFLOW_S3_ENDPOINT_URL": os.environ["SRCNN_S3_ENDPOINT_URL"]}
    argv = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri",
            databases.mlflow(tmp_path / "mlflow.db", "mlflow-artifacts:/"),
            "--artifacts-destination", f"s3://{bucket}/{PREFIX}"]
    with service("mlflow-server", argv, env, tmp_path, f"{url}/health", 120) as server:
        monkeypatch.setenv("SRCNN_MLFLOW_TRACKING_URI", url)
        # Proxied artifacts: the client talks HTTP to the server, which writes to S3.
        monkeypatch.setenv("SRCNN_MLFLOW_ARTIFACT_ROOT", "mlflow-artifacts:/srcnn")
        monkeypatch.setenv("SRCNN_EVAL_DATASETS", str(set5))
        yield url, server


def test_train_and_register_through_mlflow_server(mlflow_server, s3_bucket, small_collection,
                                                  tmp_path, set5):
    fs, bucket = s3_bucket
    url, server = mlflow_server
    store = str(tmp_path / "patches.zarr")
    patches = PatchConfig(scale=3, val_fraction=0.34)  # validation split by source image
    assert build_patches(str(small_collection), store, patches).built
    try:
        trained = train_srcnn(store, TINY, QUICK, [str(set5)], run_name="served")
        reg = register_best(3, trained["run_id"])
    except Exception as exc:  # the server's side of the story, if it has one
        raise AssertionError(f"flow failed: {exc!r}\n{server.tail()}") from exc
    run_id, psnr = trained["run_id"], trained["scores"][0]["psnr"]
    assert reg["promoted"] and reg["name"] == "srcnn-x3"

    # A reviewer's view, through the server only.
    ml = MlflowClient(tracking_uri=url, registry_uri=url)
    champion = ml.get_model_version_by_alias("srcnn-x3", "champion")
    assert str(champion.version) == str(reg["version"]) and champion.run_id == run_id
    assert "set5_x3_psnr" not in champion.tags  # its rows: on its logged model (below)
    assert float(champion.tags["selection_psnr"]) == pytest.approx(trained["selection_psnr"],
                                                                   abs=1e-3)
    assert "| Set5 | x3 |" in champion.description and run_id in champion.description
    assert champion.tags["patch_store_fingerprint"] == PatchStore(store).attrs.fingerprint
    assert champion.tags["code_version"] == __version__
    flow_run_id = champion.tags["prefect_flow_run_id"]
    assert flow_run_id
    with get_client(sync_client=True) as client:  # the tag names the train-srcnn flow run
        flow_run = client.read_flow_run(UUID(flow_run_id))
        assert client.read_flow(flow_run.flow_id).name == "train-srcnn"

    run = ml.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/srcnn/" + TRAIN_EXPERIMENT)
    assert run.data.metrics["set5_x3_psnr"] == pytest.approx(psnr, abs=1e-3)
    assert [m.step for m in ml.get_metric_history(run_id, curve("val_psnr"))] == [1, 2]

    def listed(path: str) -> set[str]:
        return {a.path for a in ml.list_artifacts(run_id, path)}

    plots = listed("plots")
    assert {"plots/learning_curves.png", "plots/filters.png", "plots/crops_Set5.png"} <= plots
    assert listed("evaluation") == {"evaluation/table.md"}
    table = ml.download_artifacts(run_id, "evaluation/table.md", str(tmp_path))
    assert "| Set5 | x3 |" in Path(table).read_text()

    # The model is an MLflow 3 logged model of the run, its evaluation attached to it.
    model_id = run.data.tags["model_id"]
    assert champion.source == f"models:/{model_id}"  # the version is the logged model
    logged = ml.get_logged_model(model_id)
    assert logged.source_run_id == run_id and logged.experiment_id == run.info.experiment_id
    assert logged.tags["arch"] == TINY.arch
    assert int(logged.tags["macs_per_pixel"]) == TINY.macs_per_pixel
    assert logged.params["model.n1"] == str(TINY.n1)
    attached = {(m.key, m.dataset_name): m.value for m in logged.metrics}
    assert attached[("set5_x3_psnr", "Set5")] == pytest.approx(psnr, abs=1e-3)
    assert ("selection_psnr", None) in attached

    # The objects really are in the bucket: the run's under its artifact folder, the model's
    # under the experiment's models/ folder.
    experiment = f"{bucket}/{PREFIX}/srcnn/{TRAIN_EXPERIMENT}"
    run_prefix = f"{experiment}/{run_id}/artifacts"
    objects = {key.removeprefix(run_prefix + "/") for key in fs.find(run_prefix)}
    assert {"evaluation/table.md"} | plots <= objects, sorted(objects)
    model_prefix = f"{experiment}/models/{model_id}/artifacts"
    model_objects = {key.removeprefix(model_prefix + "/") for key in fs.find(model_prefix)}
    assert {"MLmodel", "pyfunc_model.py", "artifacts/model.safetensors",
            "artifacts/config.json"} <= model_objects, sorted(model_objects)
    assert not any(key.endswith((".pkl", ".pickle")) for key in model_objects)

    # It loads back through the server, as upscale-bucket would load it...
    loaded = resolve_model("champion", 3, ml)
    assert loaded.source == f"models:/srcnn-x3/{champion.version}"
    assert loaded.model.config == TINY
    # ... and as MLflow loads it, and serves it (both: the same pixels as srcnn's own path).
    image = rgb_crop(set5, 23, 31)
    expected = reference_upscale(loaded.model, image, 3)
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    pyfunc = mlflow.pyfunc.load_model("models:/srcnn-x3@champion")
    assert np.array_equal(pyfunc.predict(image), expected)
    served = serve_and_post("models:/srcnn-x3@champion", image, tmp_path,
                            {"MLFLOW_TRACKING_URI": url})
    assert np.array_equal(served, expected)


def test_two_registrations_at_once_end_with_the_better_champion(mlflow_server, small_collection,
                                                                tmp_path, set5):
    """Two `srcnn register` processes at the same moment (a manual one beside the
    triggered one), on a real Prefect server and a real MLflow server: both versions are
    registered and the champion is the better model, whichever process got there first."""
    import subprocess
    import sys

    url, server = mlflow_server
    store = str(tmp_path / "patches.zarr")
    build_patches(str(small_collection), store, PatchConfig(scale=3, val_fraction=0.34))
    good = train_srcnn(store, TINY, QUICK, [str(set5)], run_name="good",
                       degradations=["bicubic"])
    bad = train_srcnn(store, TINY, TrainConfig(epochs=1, steps_per_epoch=1, lr=1e-7),
                      [str(set5)], run_name="bad", degradations=["bicubic"])
    assert bad["selection_psnr"] < good["selection_psnr"]
    env = harness_env()
    procs = [subprocess.Popen([sys.executable, "-m", "flows.cli", "register", "--scale",
                               "3", "--run-id", run["run_id"], "--rank-by", "mean"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for run in (bad, good)]  # the worse one first: a last-writer-wins race loses
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"{out}\n{err[-3000:]}\n{server.tail()}"
    ml = MlflowClient(tracking_uri=url, registry_uri=url)
    versions = {v.run_id: str(v.version) for v in ml.search_model_versions("name = 'srcnn-x3'")}
    assert set(versions) == {good["run_id"], bad["run_id"]}  # both registered, once each
    aliases = {k: str(v) for k, v in ml.get_registered_model("srcnn-x3").aliases.items()}
    assert aliases["champion"] == versions[good["run_id"]]
    # the worse one is challenger, or it came first (v1, champion) and was then replaced
    assert aliases.get("challenger") == versions[bad["run_id"]] or versions[bad["run_id"]] == "1"


def test_training_rides_out_a_tracking_server_restart(mlflow_server, small_collection, tmp_path,
                                                      set5):
    """The MLflow server is stopped during a real `srcnn train` process and started again
    8 s later: training goes on, the buffered records reach the server once it is back, and
    the run finishes with one point per epoch in every curve."""
    import subprocess
    import sys
    import time

    from servers import ROOT, Service

    url, server = mlflow_server
    store = str(tmp_path / "patches.zarr")
    build_patches(str(small_collection), store, PatchConfig(scale=3, val_fraction=0.34))
    epochs = 12  # with 100 steps each, training outlasts the outage (8 s, then a restart)
    # the buffer, not MLflow's client, waits
    env = harness_env(OMP_NUM_THREADS="1", MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "train", store, "--arch", "9-1-5", "--n1", "16",
         "--n2", "8", "--epochs", str(epochs), "--steps-per-epoch", "100", "--batch-size", "32",
         "--checkpoint-minutes", "0", "--eval-dataset", str(set5), "--degradation", "bicubic"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ml = MlflowClient(tracking_uri=url, registry_uri=url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        exp = ml.get_experiment_by_name(TRAIN_EXPERIMENT)
        runs = ml.search_runs([exp.experiment_id]) if exp else []
        if runs and ml.get_metric_history(runs[0].info.run_id, curve("train_loss")):
            break
        time.sleep(0.2)
    run_id = runs[0].info.run_id
    server.stop()  # the server and its workers, gone
    time.sleep(8)
    restarted = Service("mlflow-server-again", server.argv, server.env, tmp_path)
    try:
        restarted.wait_http(f"{url}/health", 120)
        try:  # under the test's own timeout, so that a stall shows what the process printed
            out, err = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("srcnn train still running 400 s after the server came back:\n"
                        + out[-2000:] + err[-6000:] + restarted.tail())
        assert proc.returncode == 0, out + err[-4000:] + restarted.tail()
        assert "not answering" in err and "answers again" in err  # the buffer rode it out
        run = ml.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in ("train_loss", "val_psnr", "lr"):
            steps = [m.step for m in ml.get_metric_history(run_id, curve(key))]
            assert sorted(steps) == list(range(1, epochs + 1)), (key, steps)
        assert ml.list_artifacts(run_id, "checkpoints") == []  # uploaded, then cleared
    finally:
        restarted.stop()
