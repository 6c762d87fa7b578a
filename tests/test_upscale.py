"""upscale-bucket for an operator: every kind of image, bad inputs, re-runs, kills."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from flows.upscale_bucket import REPORT_KEY, UpscaleFailures, upscale_bucket
from srcnn.config import ModelConfig
from srcnn.model import SRCNN
from srcnn.upscale import RECORDS, UpscaleOptions, upscale_object
from srcnn.weights import save_model

RNG = np.random.default_rng(0)


def rand(h, w, c=None, dtype=np.uint8, high=256):
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, high, shape, dtype=dtype)


def tiny_model(seed: int = 0) -> SRCNN:
    torch.manual_seed(seed)
    return SRCNN(ModelConfig.from_arch("9-1-5", n1=8, n2=4)).eval()


@pytest.fixture
def model_dir(tmp_path) -> str:
    path = str(tmp_path / "model")
    save_model(tiny_model(), 2, path)
    return path


def _kinds(folder: Path) -> dict[str, tuple]:
    """Write one image of each kind; returns {key: (expected size, mode, format)}."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rand(12, 17, 3)).save(folder / "rgb.png")
    Image.fromarray(rand(12, 17)).save(folder / "grey.png")
    Image.fromarray(rand(12, 17, 4)).save(folder / "rgba.png")
    Image.merge("LA", [Image.fromarray(rand(12, 17)), Image.fromarray(rand(12, 17))]).save(
        folder / "la.png")
    Image.fromarray(rand(12, 17, 3)).convert("P").save(folder / "palette.png")
    Image.fromarray(rand(12, 17, dtype=np.uint16, high=65535)).save(folder / "deep.png")
    Image.fromarray(rand(12, 17, 4), "CMYK").save(folder / "cmyk.jpg")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rand(12, 17, 3)).save(folder / "icc.png", icc_profile=icc)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(rand(12, 17, 3)).save(folder / "exif.jpg", exif=exif.tobytes())
    return {
        "rgb.png": ((34, 24), "RGB", "PNG"), "grey.png": ((34, 24), "L", "PNG"),
        "rgba.png": ((34, 24), "RGBA", "PNG"), "la.png": ((34, 24), "LA", "PNG"),
        "palette.png": ((34, 24), "RGB", "PNG"), "deep.png": ((34, 24), "I;16", "PNG"),
        "cmyk.jpg": ((34, 24), "CMYK", "JPEG"), "icc.png": ((34, 24), "RGB", "PNG"),
        "exif.jpg": ((24, 34), "RGB", "JPEG"),  # orientation applied: width and height swap
    }


def test_every_kind_of_image_round_trips(tmp_path):
    expected = _kinds(tmp_path / "in")
    options = UpscaleOptions(scale=2, tile_size=16)
    model = tiny_model()
    for key, (size, mode, fmt) in expected.items():
        result = upscale_object(model, "m", str(tmp_path / "in"), str(tmp_path / "out"), key,
                                "fp", options)
        assert result.status == "done", (key, result.reason)
        with Image.open(tmp_path / "out" / key) as out:
            assert (out.size, out.mode, out.format) == (size, mode, fmt), key
    deep = np.asarray(Image.open(tmp_path / "out" / "deep.png"))
    assert deep.dtype.kind in "iu" and deep.max() > 255  # still 16-bit data
    src_alpha = np.asarray(Image.open(tmp_path / "in" / "rgba.png").getchannel("A"))
    out_alpha = Image.open(tmp_path / "out" / "rgba.png").getchannel("A")
    bicubic = Image.fromarray(src_alpha).resize(out_alpha.size, Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(out_alpha), np.asarray(bicubic))  # alpha kept, upscaled
    icc = Image.open(tmp_path / "in" / "icc.png").info["icc_profile"]
    assert Image.open(tmp_path / "out" / "icc.png").info.get("icc_profile") == icc


def test_bf16_precision_is_an_option_of_its_own(tmp_path):
    Image.fromarray(rand(14, 21, 3)).save(tmp_path / "a.png")
    fp32, bf16 = UpscaleOptions(scale=2), UpscaleOptions(scale=2, precision="bf16")
    assert fp32.token("etag", "m") != bf16.token("etag", "m")  # a precision change redoes outputs
    for name, options in (("fp32", fp32), ("bf16", bf16)):
        result = upscale_object(tiny_model(), "m", str(tmp_path), str(tmp_path / name), "a.png",
                                "etag", options)
        assert result.status == "done"
    a, b = (np.asarray(Image.open(tmp_path / n / "a.png"), dtype=int) for n in ("fp32", "bf16"))
    assert a.shape == b.shape == (28, 42, 3) and np.abs(a - b).max() <= 8


def _bad_corpus(folder: Path) -> dict[str, str]:
    """{key: words the failure reason must contain}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(rand(40, 40, 3)).save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[:300])
    (folder / "text.jpg").write_bytes(b"definitely not a jpeg")
    Image.fromarray(rand(80, 80, 3)).save(folder / "huge.png")
    frames = [Image.fromarray(rand(10, 10, 3)) for _ in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(RNG.random((10, 10)).astype(np.float32), "F").save(folder / "float.tif")
    return {"empty.png": "0 bytes", "truncated.png": "not a readable image",
            "text.jpg": "not a readable image", "huge.png": "too large",
            "anim.gif": "animated", "float.tif": "unsupported image mode"}


@pytest.mark.usefixtures("prefect_server")
def test_bad_inputs_fail_alone_and_rerun_is_idempotent(tmp_path, model_dir):
    inp, out = tmp_path / "in", tmp_path / "out"
    good = _kinds(inp)
    bad = _bad_corpus(inp)
    kwargs = dict(scale=2, model=model_dir, shard_size=4, max_pixels=4000)
    with pytest.raises(UpscaleFailures) as failure:
        upscale_bucket(str(inp), str(out), **kwargs)
    assert "6 of 15 images failed" in str(failure.value)
    report = json.loads((out / REPORT_KEY).read_text())
    status = {i["key"]: i for i in report["items"]}
    assert {k for k, v in status.items() if v["status"] == "done"} == set(good)
    for key, words in bad.items():
        assert status[key]["status"] == "failed" and words in status[key]["reason"], status[key]
        assert not (out / key).exists()
    # Remove the bad files: a second run skips every current output and does nothing else.
    for key in bad:
        (inp / key).unlink()
    mtimes = {k: (out / k).stat().st_mtime_ns for k in good}
    again = upscale_bucket(str(inp), str(out), **kwargs)
    assert (again["done"], again["skipped"], again["failed"]) == (0, len(good), 0)
    assert {k: (out / k).stat().st_mtime_ns for k in good} == mtimes
    # A changed input is redone, alone.
    Image.fromarray(rand(12, 17, 3)).save(inp / "rgb.png")
    changed = upscale_bucket(str(inp), str(out), **kwargs)
    assert (changed["done"], changed["skipped"]) == (1, len(good) - 1)
    # A new model version redoes everything; records are replaced, not accumulated.
    save_model(tiny_model(seed=1), 2, model_dir + "-v2")
    new = upscale_bucket(str(inp), str(out), **{**kwargs, "model": model_dir + "-v2"})
    assert new["done"] == len(good) and new["skipped"] == 0
    records = [p for p in (out / RECORDS).rglob("*") if p.is_file()]
    assert len(records) == len(good)
    forced = upscale_bucket(str(inp), str(out), **{**kwargs, "model": model_dir + "-v2",
                                                   "overwrite": True})
    assert forced["done"] == len(good)


@pytest.mark.usefixtures("prefect_server")
def test_killed_run_completes_on_restart(tmp_path, model_dir):
    from prefect.settings import PREFECT_API_URL

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    n = 40
    for i in range(n):
        Image.fromarray(rand(160, 160, 3)).save(inp / f"img{i:02d}.png")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "upscale", str(inp), str(out),
                             "--scale", "2", "--model", model_dir, "--shard-size", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        done = list((out / RECORDS).glob("*")) if (out / RECORDS).exists() else []
        if len(done) >= 5:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = len(list((out / RECORDS).glob("*")))
    assert 5 <= first < n
    summary = upscale_bucket(str(inp), str(out), scale=2, model=model_dir, shard_size=8)
    assert summary["failed"] == 0 and summary["skipped"] >= first - 0
    assert summary["done"] + summary["skipped"] == n
    outputs = sorted(p.name for p in out.glob("*.png"))
    assert outputs == sorted(p.name for p in inp.glob("*.png"))  # none missing, none extra
    for p in out.glob("*.png"):
        with Image.open(p) as img:
            img.load()  # not truncated
            assert img.size == (320, 320)
