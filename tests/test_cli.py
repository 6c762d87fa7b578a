"""The `srcnn` command line: real console script and real flows behind it."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from servers import harness_env
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_fields import field_options
from srcnn.batch.job import BucketOptions, UpscaleOptions
from srcnn.config import (
    DegradationConfig,
    ModelConfig,
    ModelOverrides,
    PatchConfig,
    TrainConfig,
)
from srcnn.models.files import save_model
from srcnn.models.srcnn import SRCNN
from srcnn.presets import get_preset, training_settings

COMMANDS = ("patches", "train", "register", "upscale", "evaluate", "export", "gate", "pipeline")
# Each command's options that come from the typed configs, and their defaults' notes.
DERIVED = {"patches": (PatchConfig, DegradationConfig), "train": (ModelConfig, TrainConfig),
           "upscale": (UpscaleOptions, BucketOptions), "pipeline": (TrainConfig,)}
OWN = {"patches": {"--preset", "--dask-address", "--force"},
       "train": {"--preset", "--arch", "--eval-dataset", "--run-name", "--probe-dataset",
                 "--init-model"},
       "register": {"--scale", "--run-id"}, "upscale": {"--model", "--dask-address"},
       "evaluate": {"--model", "--dataset", "--scale", "--json"},
       "export": {"--model", "--to", "--scale", "--dataset"},
       "gate": {"--to", "--images", "--scale", "--clean", "--robust", "--copies", "--steps",
                "--dataset"},
       "pipeline": {"--workdir", "--source", "--upscale-input", "--scale"}}


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in COMMANDS:
        assert command in out


def _flat(text: str) -> str:
    """Help text without Rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_shows_its_own_options(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    shown = set(re.findall(r"(--[a-z0-9-]+)", result.output))
    assert OWN[command] <= shown, OWN[command] - shown
    text = _flat(result.output)
    for config in DERIVED.get(command, ()):
        for name, field in config.model_fields.items():
            if name == "degradation":  # a nested model: its own fields are the options
                continue
            flag = "--" + name.replace("_", "-")
            assert flag in shown, f"{command}: {flag} ({config.__name__}.{name}) missing"
            assert _flat(field.description) in text, f"{command} {flag}: help is not the field's"
    if command == "train":  # the default is read from the model, and the preset may change it
        assert f"(default: {TrainConfig().epochs}, or the preset's)" in text
        assert "<cosine|constant>" in text and "[1<=x<=15]" in text  # choices and bounds
    if command == "upscale":
        assert "(default: 32)" in text and "<PNG|JPEG|BMP|TIFF|WEBP|GIF|AVIF|HEIF|none>" in text


def test_options_reach_the_configs_and_bad_values_name_the_field(tmp_path):
    probe = typer.Typer()
    got = {}

    @probe.command()
    @field_options(model=ModelConfig, training=TrainConfig)
    def run(store: str, *, model, training) -> None:
        got.update(model=model, training=training)

    runner = CliRunner(env={"COLUMNS": "400"})
    result = runner.invoke(probe, ["s", "--lr", "2e-4", "--max-minutes", "none", "--n2", "16",
                                   "--no-augment", "--lr-schedule", "constant"])
    assert result.exit_code == 0, result.output
    assert got["model"].given() == {"n2": 16}  # only what was given: the rest is the preset's
    assert got["training"].given() == {"lr": 2e-4, "max_minutes": None, "augment": False,
                                       "lr_schedule": "constant"}
    model, training = training_settings("x3", got["model"], got["training"])
    recipe = get_preset("x3")
    assert (model.n2, model.n1, model.depth) == (16, recipe.model.n1, recipe.model.depth)
    assert training.max_minutes is None and training.epochs == recipe.training.epochs
    assert training.batch_size == recipe.training.batch_size
    model, training = training_settings(None, got["model"], got["training"])
    assert model.arch == "9-5-5" and training.epochs == TrainConfig().epochs

    for argv, message in (
        (["--lr", "-1"], "lr: Input should be greater than 0"),
        (["--lr-schedule", "linear"], "linear"),
        (["--epochs", "0"], "'--epochs': Input should be greater than or equal to 1"),
    ):
        result = runner.invoke(probe, ["s", *argv])
        assert result.exit_code == 2 and message in _flat(result.output), result.output
    # The real command refuses before any work, naming the field.
    result = runner.invoke(app, ["train", str(tmp_path / "none.zarr"), "--f1", "4"])
    assert result.exit_code == 2 and "f1=4: kernel sizes must be odd" in _flat(result.output)
    result = runner.invoke(app, ["train", str(tmp_path / "none.zarr"), "--arch", "9-3-1-5"])
    assert result.exit_code == 2 and "one kernel size" in _flat(result.output)
    result = runner.invoke(
        app, ["upscale", str(tmp_path), str(tmp_path / "o"), "--output-format", "JPG"]
    )
    assert result.exit_code == 2 and "JPG" in result.output


def test_arch_sets_the_kernel_fields_and_explicit_fields_win():
    from flows.cli import with_arch

    model, _ = training_settings("x3", with_arch(ModelOverrides(), "9-5-5"), None)
    assert (model.arch, model.n1) == ("9-5-5", get_preset("x3").model.n1)
    model, _ = training_settings(None, with_arch(ModelOverrides(n1=24), "3-3-3-3-3"), None)
    assert (model.depth, model.n1, model.n2, model.macs_per_pixel) == (5, 24, 32, 25_848)
    model, _ = training_settings(None, with_arch(ModelOverrides(f3=3), "9-5-5"), None)
    assert model.arch == "9-5-3"


@pytest.fixture
def model_dir(tmp_path) -> str:
    path = str(tmp_path / "model")
    model = SRCNN(ModelConfig())
    torch.nn.init.zeros_(model.conv3.weight)  # zero residual: the net returns its bicubic input
    save_model(model, 3, path)
    return path


def test_evaluate_json_reports_protocol_numbers(model_dir, set5):
    result = CliRunner().invoke(
        app, ["evaluate", "--model", model_dir, "--dataset", str(set5), "--scale", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["dataset"] == "Set5" and row["bicubic_psnr"] == pytest.approx(30.40, abs=0.02)
    assert len(row["images"]) == 5 and row["paper_psnr"] == 32.75
    # SR = bicubic here, up to the 8-bit quantisation of the output.
    assert row["psnr"] == pytest.approx(row["bicubic_psnr"], abs=0.05)


def test_evaluate_under_named_degradations(model_dir, set5):
    """`--degradation cubic`: the LR images are made as OpenCV's INTER_CUBIC makes them (no
    antialiasing), here recomputed with OpenCV itself, and the table is labelled with it."""
    import cv2
    import numpy as np
    from PIL import Image

    from srcnn.data.color import luma
    from srcnn.evaluation.metrics import psnr_y

    result = CliRunner().invoke(app, ["evaluate", "--model", model_dir, "--dataset", str(set5),
                                      "--degradation", "bicubic", "--degradation", "cubic",
                                      "--json"])
    assert result.exit_code == 0, result.output
    clean, cubic = json.loads(result.output)
    assert clean["degradation"] == "bicubic" and cubic["degradation"] == "cubic"
    assert clean["bicubic_psnr"] == pytest.approx(30.40, abs=0.02) and clean["paper_psnr"]
    assert cubic["paper_psnr"] is None  # the paper's figure is for its own protocol only
    expected = []
    for path in sorted(set5.glob("*.png")):
        with Image.open(path) as img:
            hr = img.convert("RGB")
        hr = hr.crop((0, 0, hr.width - hr.width % 3, hr.height - hr.height % 3))
        lr = cv2.resize(np.asarray(hr, dtype=np.float32), (hr.width // 3, hr.height // 3),
                        interpolation=cv2.INTER_CUBIC)
        lr = Image.fromarray(np.clip(np.round(lr), 0, 255).astype(np.uint8))
        bic = lr.resize(hr.size, Image.Resampling.BICUBIC)
        expected.append(psnr_y(luma(hr), luma(bic), 3))
    assert cubic["bicubic_psnr"] == pytest.approx(float(np.mean(expected)), abs=0.01)
    assert cubic["bicubic_psnr"] < clean["bicubic_psnr"] - 0.3  # aliasing costs bicubic too
    bad = CliRunner().invoke(app, ["evaluate", "--model", model_dir, "--dataset", str(set5),
                                   "--degradation", "jpeg"])
    assert bad.exit_code == 2 and "choose one of bicubic, cubic" in bad.output


def test_evaluate_rejects_wrong_scale(model_dir, set5):
    result = CliRunner().invoke(
        app, ["evaluate", "--model", model_dir, "--dataset", str(set5), "--scale", "2"]
    )
    assert result.exit_code != 0
    assert "trained for x3" in str(result.exception)


def test_benchmark_folders_by_path_or_bare_name_and_a_clear_error_before_any_work(
    model_dir, set5, tmp_path, monkeypatch
):
    """`--dataset Set5` means shared/datasets/Set5 above the working directory (as the README's
    commands spell it); a path is taken as given; a folder that is not there stops the command
    with a usage error naming it, before a store is opened or a server started."""
    from flows.datasets import resolve_dataset

    root = tmp_path / "shared" / "datasets"
    (root / "Set5").mkdir(parents=True)
    (tmp_path / "work" / "deep").mkdir(parents=True)
    (tmp_path / "work" / "Local").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_dataset("Set5") == str(root / "Set5")
    assert resolve_dataset("Local") == "Local"  # a folder here wins over the root
    monkeypatch.chdir(tmp_path / "work" / "deep")
    assert resolve_dataset("Set5") == str(root / "Set5")
    with pytest.raises(FileNotFoundError, match=r"'Set6': no such folder .*datasets"):
        resolve_dataset("Set6")
    with pytest.raises(FileNotFoundError, match=r"'sub/Set5': no such folder"):
        resolve_dataset("sub/Set5")  # a path is never looked up under the root

    runner = CliRunner(env={"COLUMNS": "400"})
    store = tmp_path / "no-store.zarr"  # never opened: the datasets are checked first
    for argv, option in (
        (["train", str(store), "--probe-dataset", "Set6"], "--probe-dataset"),
        (
            ["train", str(store), "--eval-dataset", "Set5", "--eval-dataset", "Set6"],
            "--eval-dataset",
        ),
        (["evaluate", "--model", model_dir, "--dataset", "Set6"], "--dataset"),
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert option in result.output and "'Set6': no such folder" in _flat(result.output)
    assert not store.exists()
    # A bare name scores the folder under the root (a copy of Set5's first image here).
    Image.open(sorted(set5.iterdir())[0]).save(root / "Set5" / "one.png")
    result = runner.invoke(
        app, ["evaluate", "--model", model_dir, "--dataset", "Set5", "--scale", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["dataset"] == "Set5" and [i["name"] for i in row["images"]] == ["one"]


@pytest.mark.usefixtures("prefect_server")
def test_upscale_command_writes_outputs(model_dir, tmp_path, mlflow_home):
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for name in ("x.png", "y.png"):
        Image.fromarray(rng.integers(0, 255, (21, 34, 3), dtype=np.uint8)).save(inp / name)
    result = CliRunner().invoke(
        app,
        [
            "upscale",
            str(inp),
            str(tmp_path / "out"),
            "--scale",
            "3",
            "--model",
            model_dir,
            "--tile-size",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 upscaled, 0 already current, 0 failed" in result.output
    assert Image.open(tmp_path / "out" / "y.png").size == (102, 63)


def test_patches_degradation_options_reach_the_store(small_collection, tmp_path, prefect_server):
    """`srcnn patches --kind real --seed 5 --jpeg-prob 1`: the preset's degradation with those
    fields replaced is what the store records; a bad range is refused before any work."""
    from srcnn.data.store.patch_store import PatchStore

    runner = CliRunner(env={"COLUMNS": "400"})
    store = str(tmp_path / "real.zarr")
    bad = runner.invoke(app, ["patches", str(small_collection), store, "--kind", "real",
                              "--jpeg-quality", "90", "--jpeg-quality", "40"])
    assert bad.exit_code == 2 and "jpeg_quality" in _flat(bad.output)
    same = runner.invoke(app, ["patches", str(small_collection), store, "--copies", "2"])
    assert same.exit_code == 2 and "copies 2: several copies need a `real` degradation" in (
        _flat(same.output))
    assert not (tmp_path / "real.zarr").exists()
    result = subprocess.run(  # the command as a user runs it, in its own process
        [sys.executable, "-m", "flows.cli", "patches", str(small_collection), store, "--kind",
         "real", "--seed", "5", "--jpeg-prob", "1", "--stride", "33", "--copies", "2"],
        capture_output=True, text=True, env=harness_env())
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    built = PatchStore(store)
    recorded = built.attrs.degradation
    assert (recorded.kind, recorded.seed, recorded.jpeg_prob) == ("real", 5, 1.0)
    assert recorded.resize_cubic == DegradationConfig().resize_cubic  # the rest: defaults
    assert built.attrs.augmentation.degraded_copies == 2
    copies = {(s.key, s.copy) for s in built.sources if s.split == "train"}
    assert {c for _, c in copies} == {0, 1} and len(copies) == 2 * len({k for k, _ in copies})


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("argv, error", [
    (["upscale", "{images}", "{file}"], "error: output {file}: is a file, not a folder"),
    (["upscale", "{missing}", "{tmp}/out"], "error: input {missing}: no such folder"),
    (["patches", "{images}", "{file}/store"], "error: patch store {file}/store: lies under "
                                                "{file}, which is a file"),
    (["patches", "{file}", "{tmp}/store"], "error: source {file}: is a file, not a folder"),
    (["train", "{missing}"], "error: patch store {missing}: no such folder"),
])
def test_a_path_that_cannot_serve_is_one_error_before_any_work(tmp_path, small_collection,
                                                                argv, error):
    """`srcnn upscale in out.png` (out.png a file) and its kin: one line naming the path and
    why, exit code 2, no traceback, no flow run, nothing written."""
    file = tmp_path / "out.png"
    file.write_bytes(b"an image someone keeps")
    names = {"images": small_collection, "file": file, "missing": tmp_path / "nope",
             "tmp": tmp_path}
    result = subprocess.run([sys.executable, "-m", "flows.cli",
                             *(a.format(**names) for a in argv)], capture_output=True, text=True,
                            env=harness_env())
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert result.stderr.strip() == error.format(**names)
    assert file.read_bytes() == b"an image someone keeps"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out.png"]
