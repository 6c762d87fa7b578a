"""Gated pairs (`srcnn.models.gated`): two LR-space nets and a gate that picks one per image,
trained by `srcnn gate`, shipped as `pretrained:real`."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from srcnn.config import GatedConfig, ModelConfig
from srcnn.data.color import luma
from srcnn.data.degradation import SUITE, lr_pair
from srcnn.inference.tiling import prepare, upscale_rgb_tiled
from srcnn.models.files import load_model
from srcnn.models.gated import GatedNet
from srcnn.models.reference import pretrained_dir
from srcnn.training.gate import best_threshold

FAST = ModelConfig(family="espcn", f1=3, f2=3, f3=3, n1=8, n2=8, depth=4)


def test_gated_config_pairs_lr_space_nets_and_costs_the_dearer_one():
    wide = FAST.model_copy(update={"n1": 16, "n2": 16})
    config = GatedConfig(clean=FAST, robust=wide, gate_width=8)
    gate_per_lr_pixel = 9 * 8 + 9 * 8 * 8 * 2 + 8 * 2  # 3 x 3: 1->8, 8->8, 8->8; 1 x 1: 8->2
    assert config.macs(3) == wide.macs(3) + -(-gate_per_lr_pixel // 9)
    with pytest.raises(ValidationError, match="LR-space nets"):
        GatedConfig(clean=ModelConfig(), robust=wide)


def test_threshold_maximises_mean_psnr_and_prefers_the_robust_net_on_ties():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=40)
    psnr = np.stack([30 + rng.normal(size=40), 30 + rng.normal(size=40)], 1)
    t = best_threshold(scores, psnr)

    def mean(th: float) -> float:
        return float(np.where(scores > th, psnr[:, 0], psnr[:, 1]).mean())

    every = [-np.inf, *sorted(scores)]  # each distinct split, by brute force
    assert mean(t) == pytest.approx(max(mean(th) for th in every))
    # Equal nets: nothing to gain, so the clean net never runs.
    same = np.stack([psnr[:, 1], psnr[:, 1]], 1)
    assert (scores > best_threshold(scores, same)).sum() == 0


def test_threshold_keeps_every_realistic_row_near_the_robust_net():
    """A row where the clean net loses 3 dB on the images the gate scores highest: the
    threshold must keep that row within the tolerance, the best mean among such thresholds."""
    from srcnn.training.gate import ROW_TOLERANCE

    rng = np.random.default_rng(5)
    scores = rng.normal(size=30)
    psnr = np.stack([31 + 0.1 * rng.normal(size=30), 30 + 0.1 * rng.normal(size=30)], 1)
    row_scores = rng.normal(size=8) + 1.0
    row_psnr = np.stack([np.full(8, 27.0), np.full(8, 30.0)], 1)
    t = best_threshold(scores, psnr, [(row_scores, row_psnr)])

    def mean(th: float) -> float:
        return float(np.where(scores > th, psnr[:, 0], psnr[:, 1]).mean())

    def row_ok(th: float) -> bool:
        chosen = np.where(row_scores > th, row_psnr[:, 0], row_psnr[:, 1]).mean()
        return chosen >= 30.0 - ROW_TOLERANCE

    assert row_ok(t) and not row_ok(best_threshold(scores, psnr))  # the row binds
    every = [-np.inf, *sorted(np.concatenate([scores, row_scores]))]
    assert mean(t) == pytest.approx(max(mean(th) for th in every if row_ok(th)))


def test_a_gated_model_refuses_to_run_unchosen():
    model = GatedNet(GatedConfig(clean=FAST, robust=FAST), 3)
    with pytest.raises(RuntimeError, match="choose"):
        model.infer(torch.zeros(1, 1, 16, 16))


@pytest.fixture(scope="module")
def real_x3():
    return load_model(pretrained_dir(3, "real"))


@pytest.mark.parametrize("degradation,expected", [("bicubic", "clean"), ("cubic", "robust"),
                                                  ("cubic+jpeg60", "robust")])
def test_shipped_gate_runs_the_net_the_input_calls_for(t91, real_x3, degradation, expected):
    """On a held-out T91 photograph: the fast net on a clean downscale, the robust net on an
    aliased one; whichever runs, the tiled output is exactly that net's on the whole image."""
    model = prepare(real_x3.model, "cpu")
    hr, lr = lr_pair(Image.open(t91 / "t65.png"), 3, SUITE[degradation], key="t65.png")
    chosen = model.choose(luma(lr))
    assert chosen is {"clean": model.clean, "robust": model.robust}[expected]
    tiled = upscale_rgb_tiled(model, lr, 3, tile_size=40)  # several tiles, one choice
    alone = upscale_rgb_tiled(chosen, lr, 3, tile_size=1000)
    assert np.array_equal(np.asarray(tiled), np.asarray(alone))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_real_records_how_it_was_made(scale):
    """Each shipped pair: made by `srcnn gate` on T91, better than either net on its held-out
    images, and holding the shipped fast and robust nets' very weights."""
    real = load_model(pretrained_dir(scale, "real"))
    meta, config = real.metadata, real.model.config
    assert meta["recipe"].startswith("srcnn gate") and "T91" in meta["training_data"]
    held = meta["held_out"]  # the threshold's own held-out images: it must have helped there
    assert held["gated"] > held["robust"] and held["gated"] > held["clean"]
    assert {"t65.png", "t3.png"} <= set(meta["held_out_images"])
    assert meta["robust_from"] == f"pretrained:robust-x{scale}"
    for name, kind in (("clean", "fast"), ("robust", "robust")):
        shipped = load_model(pretrained_dir(scale, kind))
        assert getattr(config, name) == shipped.model.config
        net = getattr(real.model, name)
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                      shipped.model.state_dict().values()))


def test_srcnn_gate_trains_and_writes_a_model_that_evaluates(tmp_path, small_collection, set5):
    """The command as a user runs it: a model folder with the recipe and held-out table,
    which `srcnn evaluate` loads and scores."""
    out = tmp_path / "pair"
    run = subprocess.run([sys.executable, "-m", "flows.cli", "gate", "--to", str(out),
                          "--images", str(small_collection), "--scale", "3", "--copies", "3",
                          "--steps", "20"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gate x3: held-out mean gain over bicubic" in run.stdout
    config = json.loads((out / "artifacts" / "config.json").read_text())
    assert config["model"]["family"] == "gated" and config["recipe"].startswith("srcnn gate")
    assert config["held_out"]["examples"] == 9 * len(config["held_out_images"])
    evaluated = subprocess.run([sys.executable, "-m", "flows.cli", "evaluate", "--model",
                                str(out), "--dataset", str(set5), "--scale", "3", "--json"],
                               capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (row,) = json.loads(evaluated.stdout)
    assert row["psnr"] > row["bicubic_psnr"]


def test_gate_rejects_a_pair_that_is_not_lr_space(tmp_path, small_collection):
    run = subprocess.run([sys.executable, "-m", "flows.cli", "gate", "--to", str(tmp_path / "g"),
                          "--images", str(small_collection), "--robust", "pretrained:srcnn",
                          "--steps", "1"], capture_output=True, text=True)
    assert run.returncode != 0 and "not an LR-space net" in run.stderr
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("quality", [40, 75, 90, 95, 100])
def test_jpeg_quality_is_read_from_the_file(quality):
    from srcnn.data.images import decode_image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    assert decode_image(buf.getvalue(), "a.jpg").info["jpeg_quality"] == quality
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert "jpeg_quality" not in decode_image(buf.getvalue(), "a.png").info


def test_a_lossy_jpeg_runs_the_robust_net_whatever_the_gate_says(t91):
    """Through the job's own function: a gate that always says clean (threshold far below any
    score) still runs the robust net on a JPEG of quality 75, and the clean net on its PNG."""
    from srcnn.batch.job import upscale_pil
    from srcnn.data.images import decode_image

    torch.manual_seed(0)
    model = GatedNet(GatedConfig(clean=FAST, robust=FAST, threshold=-1e9), 3).eval()
    for net in (model.clean, model.robust):  # two different nets
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    src = Image.open(t91 / "t3.png").convert("RGB")
    outputs = {}
    for fmt, params in (("JPEG", {"quality": 75}), ("PNG", {})):
        buf = io.BytesIO()
        src.save(buf, fmt, **params)
        img = decode_image(buf.getvalue(), f"t3.{fmt.lower()}")
        got = np.asarray(upscale_pil(model, img, 3, 64))
        outputs[fmt] = {name: np.array_equal(got, np.asarray(upscale_pil(net, img, 3, 64)))
                        for name, net in (("clean", model.clean), ("robust", model.robust))}
    assert outputs == {"JPEG": {"clean": False, "robust": True},
                       "PNG": {"clean": True, "robust": False}}


@pytest.mark.usefixtures("prefect_server")
def test_the_run_report_says_which_net_ran_on_each_image(t91, tmp_path):
    """`upscale-bucket` with the shipped pair over users' kinds of input: its report line for
    each image names the net that ran (the clean one on a clean downscale, the robust one on
    an aliased downscale and on a JPEG of quality 75), and each output is that net's."""
    from flows.upscale_bucket import REPORT_KEY, report_rows, upscale_bucket
    from srcnn.batch.job import UpscaleOptions, report_lines

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    hr = Image.open(t91 / "t65.png")
    lr_pair(hr, 3, SUITE["bicubic"], key="t65.png")[1].save(inp / "clean.png")
    lr_pair(hr, 3, SUITE["cubic"], key="t65.png")[1].save(inp / "aliased.png")
    lr_pair(hr, 3, SUITE["bicubic"], key="t65.png")[1].save(inp / "web.jpg", quality=75)
    report = upscale_bucket(str(inp), str(out), "pretrained:real", UpscaleOptions(scale=3))
    assert report["done"] == 3 and report["nets"] == {"clean": 1, "robust": 2}
    rows = {r["item"]: r["value"] for r in report_rows(report)}  # the Prefect artifact's
    assert rows["upscaled by the pair's nets"] == "clean 1, robust 2"
    assert json.loads((out / REPORT_KEY).read_text())["flow_run_id"] == report["flow_run_id"]
    nets = {line["key"]: line["net"] for line in report_lines(str(out), report["flow_run_id"])}
    assert nets == {"clean.png": "clean", "aliased.png": "robust", "web.jpg": "robust"}
    pair = prepare(load_model(pretrained_dir(3, "real")).model, "cpu")
    for key, net in nets.items():
        with Image.open(inp / key) as img:
            alone = {name: np.asarray(upscale_rgb_tiled(getattr(pair, name), img.convert("RGB"),
                                                        3, tile_size=1000), dtype=np.float32)
                     for name in ("clean", "robust")}
        got = np.asarray(Image.open(out / key).convert("RGB"), dtype=np.float32)
        error = {name: float(np.abs(got - a).mean()) for name, a in alone.items()}
        if key.endswith(".png"):  # lossless: exactly that net's
            assert error[net] == 0, key
        assert error[net] < error[{"clean": "robust", "robust": "clean"}[net]], (key, error)
