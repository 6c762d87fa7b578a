"""The `srcnn` command line: real console script and real flows behind it."""

import json
import subprocess
import sys

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from srcnn.config import ModelConfig
from srcnn.model import SRCNN
from srcnn.weights import save_model

COMMANDS = ("patches", "train", "register", "upscale", "evaluate", "pipeline")


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in COMMANDS:
        assert command in out


@pytest.fixture
def model_dir(tmp_path) -> str:
    path = str(tmp_path / "model")
    model = SRCNN(ModelConfig())
    torch.nn.init.zeros_(model.conv3.weight)  # zero residual: the net returns its bicubic input
    save_model(model, 3, path)
    return path


def test_evaluate_json_reports_protocol_numbers(model_dir, set5):
    result = CliRunner().invoke(app, ["evaluate", "--model", model_dir, "--dataset", str(set5),
                                      "--scale", "3", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["dataset"] == "Set5" and row["bicubic_psnr"] == pytest.approx(30.40, abs=0.02)
    assert len(row["images"]) == 5 and row["paper_psnr"] == 32.75
    # SR = bicubic here, up to the 8-bit quantisation of the output.
    assert row["psnr"] == pytest.approx(row["bicubic_psnr"], abs=0.05)


def test_evaluate_rejects_wrong_scale(model_dir, set5):
    result = CliRunner().invoke(app, ["evaluate", "--model", model_dir, "--dataset", str(set5),
                                      "--scale", "2"])
    assert result.exit_code != 0
    assert "trained for x3" in str(result.exception)


@pytest.mark.usefixtures("prefect_server")
def test_upscale_command_writes_outputs(model_dir, tmp_path, mlflow_home):
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for name in ("x.png", "y.png"):
        Image.fromarray(rng.integers(0, 255, (21, 34, 3), dtype=np.uint8)).save(inp / name)
    result = CliRunner().invoke(app, ["upscale", str(inp), str(tmp_path / "out"), "--scale", "3",
                                      "--model", model_dir, "--tile-size", "32"])
    assert result.exit_code == 0, result.output
    assert "2 upscaled, 0 already current, 0 failed" in result.output
    assert Image.open(tmp_path / "out" / "y.png").size == (102, 63)


def test_train_options_override_the_preset_and_are_validated():
    from flows.cli import training_configs
    from srcnn.presets import get_preset

    recipe = get_preset("x3")
    no_net = {"arch": None, "n1": None, "n2": None}
    model, training = training_configs("x3", no_net, {"lr": 2e-4, "max_minutes": 7.0,
                                                      "batch_size": None, "device": "cpu"})
    assert model == recipe.model  # the preset's net
    assert (training.lr, training.max_minutes, training.device) == (2e-4, 7.0, "cpu")
    assert training.batch_size == recipe.training.batch_size  # not given: the preset's
    assert training.rollback_db == recipe.training.rollback_db
    model, training = training_configs(None, no_net | {"arch": "9-1-5"}, {"epochs": 3, "lr": None})
    assert model.arch == "9-1-5" and training.epochs == 3 and training.lr == 1e-3
    assert (model.n1, model.n2) == (64, 32)  # the paper's filter counts
    model, _ = training_configs("x3", {"arch": "9-5-5", "n1": None, "n2": 16}, {})
    assert (model.arch, model.n1, model.n2) == ("9-5-5", recipe.model.n1, 16)  # given: it wins
    model, _ = training_configs(None, no_net | {"arch": "3-3-3-3-3", "n1": 24}, {})
    assert (model.depth, model.n1, model.n2, model.macs_per_pixel) == (5, 24, 32, 25_848)
    with pytest.raises(pydantic.ValidationError):
        training_configs("x3", no_net, {"lr": -1.0})
    with pytest.raises(ValueError, match="one kernel size"):
        training_configs(None, no_net | {"arch": "9-3-1-5"}, {})
