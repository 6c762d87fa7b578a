"""Registered versions are MLflow models: `mlflow.pyfunc.load_model` and `mlflow models serve`
give the same pixels as `srcnn upscale`, loading unpickles nothing, and srcnn's own loader reads
these versions and the older folder layout. MLflow on SQLite here; through an `mlflow server`
with S3 artifacts in test_mlflow_server.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from PIL import Image
from servers import BIN, free_port, service
from typer.testing import CliRunner

from flows.cli import app
from srcnn.batch.job import upscale_pil
from srcnn.config import ModelConfig
from srcnn.inference.tiling import prepare
from srcnn.models.files import load_model, save_model
from srcnn.models.srcnn import SRCNN
from srcnn.registry.champion import register, seed_registry
from srcnn.registry.resolve import resolve_model
from srcnn.settings import get_settings
from srcnn.tracking.runs import TRAIN_EXPERIMENT, ensure_experiment, make_client


def rgb_crop(folder: Path, height: int, width: int) -> np.ndarray:
    first = sorted(folder.glob("*.png"))[0]
    with Image.open(first) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB"))[:height, :width])


def reference_upscale(model, image: np.ndarray, scale: int) -> np.ndarray:
    """What `srcnn upscale` computes for one decoded image (its per-image function)."""
    return np.asarray(upscale_pil(prepare(model, "cpu"), Image.fromarray(image), scale, 256))


def serve_and_post(model_uri: str, image: np.ndarray, log_dir: Path, env: dict) -> np.ndarray:
    """`mlflow models serve` on loopback; POST one image as JSON to /invocations."""
    port = free_port()
    argv = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # an activated venv: uvicorn
    with service("mlflow-serve", argv, dict(os.environ) | env | {"PATH": path}, log_dir,
                 f"http://127.0.0.1:{port}/ping", 180) as served:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": image.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body = json.loads(response.read())
        except OSError as exc:
            pytest.fail(f"POST /invocations: {exc}\n{served.tail()}")
    return np.asarray(body["predictions"], dtype=np.uint8)


@pytest.fixture
def registry(mlflow_home):
    client = make_client(get_settings())
    return client


@pytest.mark.usefixtures("prefect_server")
def test_champion_is_an_mlflow_model_equal_to_srcnn_upscale(registry, tmp_path, set5):
    reg = seed_registry(registry, get_settings(), 3)  # the shipped weights, as a fresh registry
    assert reg.promoted and reg.version in (1, "1")
    image = rgb_crop(set5, 40, 52)
    Image.fromarray(image).save((tmp_path / "in").mkdir() or tmp_path / "in" / "crop.png")

    pyfunc = mlflow.pyfunc.load_model("models:/srcnn-x3@champion")
    predicted = pyfunc.predict(image)
    assert predicted.dtype == np.uint8 and predicted.shape == (120, 156, 3)
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "in"), str(tmp_path / "out"),
                                      "--model", "champion"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "crop.png") as out:
        assert np.array_equal(predicted, np.asarray(out))
    # Params reach the same code: any tile size gives the same pixels (tiling is exact).
    assert np.array_equal(pyfunc.predict(image, params={"tile_size": 32}), predicted)
    with pytest.raises(Exception, match="uint8"):
        pyfunc.predict(image.astype(np.float32))

    # The signature: uint8 RGB of any height and width, in and out.
    signature = pyfunc.metadata.signature
    (spec,) = signature.inputs.inputs
    assert (spec.type, spec.shape) == (np.dtype(np.uint8), (-1, -1, 3))
    assert {p.name for p in signature.params.params} == {"tile_size", "precision"}

    # Loading runs no pickled code: the model is code + safetensors + JSON.
    local = Path(
        mlflow.artifacts.download_artifacts("models:/srcnn-x3/1", dst_path=str(tmp_path / "dl"))
    )
    spec_yaml = yaml.safe_load((local / "MLmodel").read_text())
    pyfunc_conf = spec_yaml["flavors"]["python_function"]
    assert pyfunc_conf["model_code_path"].endswith("pyfunc_model.py")
    assert "python_model" not in pyfunc_conf  # no cloudpickled PythonModel
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"artifacts/model.safetensors", "artifacts/config.json", "input_example.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth"))]


def test_own_loader_reads_new_versions_and_the_old_layout(registry, tmp_path):
    settings = get_settings()
    tiny = ModelConfig.from_arch("9-1-5", n1=8, n2=4)
    net = SRCNN(tiny)
    exp = ensure_experiment(registry, TRAIN_EXPERIMENT, settings)
    run = registry.create_run(exp)  # a run from before MLflow models: a plain folder
    folder = tmp_path / "old"
    save_model(net, 3, str(folder))
    registry.log_artifacts(run.info.run_id, str(folder), "model")
    registry.set_terminated(run.info.run_id)
    old = register(registry, run.info.run_id, 3, 25.0, {}, "old layout")
    assert old.promoted
    loaded = resolve_model("champion", 3, registry)
    assert loaded.model.config == tiny and loaded.source == f"models:/srcnn-x3/{old.version}"
    for a, b in zip(loaded.model.state_dict().values(), net.state_dict().values()):
        assert (a == b).all()

    exported = tmp_path / "exported"  # `srcnn export` writes an MLflow model folder
    result = CliRunner().invoke(app, ["export", "--model", str(folder), "--to", str(exported)])
    assert result.exit_code == 0, result.output
    assert (exported / "MLmodel").is_file()
    assert load_model(str(exported)).model.config == tiny
    image = np.zeros((9, 7, 3), np.uint8)
    image[3:6, 2:5] = 200
    assert np.array_equal(
        mlflow.pyfunc.load_model(str(exported)).predict(image), reference_upscale(net, image, 3)
    )
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_model(str(tmp_path))


def test_saving_and_loading_the_model_warns_of_nothing(tmp_path):
    """What a user sees when the model is logged or loaded (in a fresh process, as MLflow's own
    warning filters show a warning once per process): no warning. MLflow warns that `predict`
    has no type hints on every execution of the model's code, unless it has ones it infers no
    schema from; the logged signature stays the tensor one."""
    folder = tmp_path / "model"
    script = f"""
import mlflow, numpy as np
from srcnn.models.files import load_model
from srcnn.models.reference import pretrained_dir
from srcnn.tracking.runs import save_pyfunc
save_pyfunc(load_model(pretrained_dir(3, "fast")), {str(folder)!r})
print(mlflow.pyfunc.load_model({str(folder)!r}).predict(np.zeros((4, 5, 3), np.uint8)).shape)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(12, 15, 3)" in out.stdout
    assert "Warning" not in out.stderr and "type hint" not in out.stderr, out.stderr[-3000:]
    signature = yaml.safe_load((folder / "MLmodel").read_text())["signature"]
    assert json.loads(signature["inputs"])[0]["tensor-spec"] == {"dtype": "uint8",
                                                                 "shape": [-1, -1, 3]}


def test_served_champion_answers_a_request(registry, tmp_path, set5):
    seed_registry(registry, get_settings(), 3)
    image = rgb_crop(set5, 17, 25)
    expected = reference_upscale(resolve_model("champion", 3, registry).model, image, 3)
    served = serve_and_post(
        "models:/srcnn-x3@champion",
        image,
        tmp_path,
        {"MLFLOW_TRACKING_URI": get_settings().tracking_uri},
    )
    assert np.array_equal(served, expected)
