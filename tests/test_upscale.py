"""upscale-bucket for an operator: precision, bad inputs, re-runs, kills, damaged records, the
formats phones and the web write (each format's outputs: `test_upscale_formats.py`)."""

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
from PIL import Image, ImageCms
from servers import harness_env
from upscale_inputs import RNG, chunk, job, kinds, rand, tiny_model

from flows.upscale_bucket import REPORT_KEY, UpscaleFailures, upscale_bucket
from srcnn.batch.job import (
    MANIFESTS,
    BucketOptions,
    UpscaleOptions,
    report_lines,
    upscale_chunk,
)
from srcnn.models.files import save_model


@pytest.fixture
def model_dir(tmp_path) -> str:
    path = str(tmp_path / "model")
    save_model(tiny_model(), 2, path)
    return path


def test_bf16_precision_is_an_option_of_its_own(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(rand(14, 21, 3)).save(tmp_path / "in" / "a.png")
    fp32, bf16 = UpscaleOptions(scale=2), UpscaleOptions(scale=2, precision="bf16")
    assert fp32.token("etag", "m") != bf16.token("etag", "m")  # a precision change redoes outputs
    for name in ("fp32", "bf16"):
        result = upscale_chunk(tiny_model(), job(tmp_path, name, scale=2, precision=name),
                               chunk("a.png"))
        assert result.done == 1
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
def test_bad_inputs_fail_alone_and_rerun_is_idempotent(tmp_path, model_dir, dask_cluster):
    """Seven runs over one bucket, on one Dask cluster (an existing scheduler, as
    SRCNN_DASK_ADDRESS gives: each run's model is its own worker plugin)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    good = kinds(inp)
    bad = _bad_corpus(inp)
    kwargs = dict(model=model_dir, options=UpscaleOptions(scale=2, max_pixels=4000),
                  bucket=BucketOptions(chunk_size=4), dask_address=dask_cluster.scheduler.address)
    with pytest.raises(UpscaleFailures) as failure:
        upscale_bucket(str(inp), str(out), **kwargs)
    assert "6 of 15 images failed" in str(failure.value)
    report = json.loads((out / REPORT_KEY).read_text())
    assert (report["done"], report["failed"]) == (len(good), len(bad))
    assert len(report["failures"]) == len(bad)  # the summary shows them (capped at 20)
    status = {i["key"]: i for i in report_lines(str(out), report["flow_run_id"])}
    assert {k for k, v in status.items() if v["status"] == "done"} == set(good)
    for key, words in bad.items():
        assert status[key]["status"] == "failed" and words in status[key]["reason"], status[key]
        assert not (out / key).exists()
    # A second run over the same bucket skips every current output and retries the bad ones.
    mtimes = {k: (out / k).stat().st_mtime_ns for k in good}
    with pytest.raises(UpscaleFailures, match="6 of 15 images failed"):
        upscale_bucket(str(inp), str(out), **kwargs)
    again = json.loads((out / REPORT_KEY).read_text())
    assert (again["done"], again["skipped"], again["failed"]) == (0, len(good), len(bad))
    assert {k: (out / k).stat().st_mtime_ns for k in good} == mtimes
    # Without the bad files every output is current (a removed key that ended a chunk merges
    # two chunks, whose images are redone once: still none lost or failed).
    for key in bad:
        (inp / key).unlink()
    cleaned = upscale_bucket(str(inp), str(out), **kwargs)
    assert cleaned["failed"] == 0 and cleaned["done"] + cleaned["skipped"] == len(good)
    mtimes = {k: (out / k).stat().st_mtime_ns for k in good}
    again = upscale_bucket(str(inp), str(out), **kwargs)
    assert (again["done"], again["skipped"], again["failed"]) == (0, len(good), 0)
    assert {k: (out / k).stat().st_mtime_ns for k in good} == mtimes
    # A changed input is redone, alone.
    Image.fromarray(rand(12, 17, 3)).save(inp / "rgb.png")
    changed = upscale_bucket(str(inp), str(out), **kwargs)
    assert (changed["done"], changed["skipped"]) == (1, len(good) - 1)
    # New weights redo everything; manifests are replaced in place, not added.
    manifests = sorted((out / MANIFESTS).rglob("*.json"))
    save_model(tiny_model(seed=1), 2, model_dir + "-v2")
    new = upscale_bucket(str(inp), str(out), **{**kwargs, "model": model_dir + "-v2"})
    assert new["done"] == len(good) and new["skipped"] == 0
    assert sorted((out / MANIFESTS).rglob("*.json")) == manifests
    recorded: list[str] = []
    for path in manifests:
        body = json.loads(path.read_text())
        if body["run"] == new["flow_run_id"]:  # the others belong to chunks gone since
            assert body["weights"] == new["weights"] != again["weights"]
            recorded += list(body["tokens"])
    assert sorted(recorded) == sorted(good)  # each image in one manifest
    forced = upscale_bucket(str(inp), str(out), **{**kwargs, "model": model_dir + "-v2",
                                                   "bucket": BucketOptions(chunk_size=4,
                                                                           overwrite=True)})
    assert forced["done"] == len(good)


def recorded(out: Path) -> set[str]:
    """Keys recorded as current in the manifests under `out`."""
    keys: set[str] = set()
    for path in (out / MANIFESTS).rglob("*.json") if (out / MANIFESTS).exists() else []:
        try:
            keys |= set(json.loads(path.read_text())["tokens"])
        except (json.JSONDecodeError, FileNotFoundError):  # not there yet: written whole later
            pass
    return keys


@pytest.mark.usefixtures("prefect_server")
def test_killed_run_completes_on_restart(tmp_path, model_dir):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    n = 40
    for i in range(n):
        Image.fromarray(rand(160, 160, 3)).save(inp / f"img{i:02d}.png")
    env = harness_env()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "upscale", str(inp), str(out),
                             "--scale", "2", "--model", model_dir, "--chunk-size", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if len(recorded(out)) >= 5:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its LocalCluster's workers
    proc.wait()
    first = recorded(out)
    assert 5 <= len(first) < n
    summary = upscale_bucket(str(inp), str(out), model_dir, UpscaleOptions(scale=2),
                             BucketOptions(chunk_size=2))
    assert summary["failed"] == 0 and summary["skipped"] >= len(first)
    assert summary["done"] + summary["skipped"] == n
    outputs = sorted(p.name for p in out.glob("*.png"))
    assert outputs == sorted(p.name for p in inp.glob("*.png"))  # none missing, none extra
    for p in out.glob("*.png"):
        with Image.open(p) as img:
            img.load()  # not truncated
            assert img.size == (320, 320)


def test_damaged_manifests_and_report_lines_are_work_to_redo(tmp_path, model_dir, caplog,
                                                            dask_cluster):
    """A chunk's manifest cut short by a crash, or altered by hand, counts as missing: the
    re-run redoes that chunk's images (and only those) instead of failing it for good; a
    damaged line of a run's report is skipped with a warning naming it."""
    inp, out = tmp_path / "in", tmp_path / "out"
    good = kinds(inp)
    kwargs = dict(model=model_dir, options=UpscaleOptions(scale=2),
                  bucket=BucketOptions(chunk_size=3), dask_address=dask_cluster.scheduler.address)
    first = upscale_bucket(str(inp), str(out), **kwargs)
    assert first["done"] == len(good)
    manifests = sorted((out / MANIFESTS).rglob("*.json"))
    assert len(manifests) >= 3
    cut, altered = manifests[0], manifests[1]
    redo = set(json.loads(cut.read_text())["tokens"]) | set(json.loads(altered.read_text())
                                                            ["tokens"])
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])  # a crash mid-write
    altered.write_text("[]")  # JSON, but not a manifest
    mtimes = {k: (out / k).stat().st_mtime_ns for k in good}
    again = upscale_bucket(str(inp), str(out), **kwargs)
    assert (again["done"], again["skipped"], again["failed"]) == (len(redo), len(good) - len(redo),
                                                                   0)
    changed = {k for k in good if (out / k).stat().st_mtime_ns != mtimes[k]}
    assert changed == redo
    assert json.loads(cut.read_text())["run"] == again["flow_run_id"]  # whole again

    reports = sorted((out / "_srcnn" / "reports" / again["flow_run_id"]).rglob("*.jsonl"))
    lines = reports[0].read_text().splitlines()
    reports[0].write_text("\n".join([lines[0][:7], *lines[1:]]) + "\n")
    with caplog.at_level("WARNING", logger="srcnn.storage"):
        kept = list(report_lines(str(out), again["flow_run_id"]))
    assert len(kept) == len(redo) - 1
    assert f"{reports[0]} line 1: unreadable record" in caplog.text


def test_heic_and_avif_in_and_out(tmp_path, model_dir):
    """What phones and the web write: HEIC (pillow-heif) and AVIF (Pillow) inputs upscaled
    into their own format, with the EXIF orientation applied once, the colour profile kept and
    alpha kept; a PNG written as AVIF on request; a HEIC cut short fails alone, by name."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "camera maker"
    from srcnn.data.images import encode_image

    (inp / "phone.heic").write_bytes(encode_image(
        Image.fromarray(rand(12, 17, 3)), "HEIF", exif=exif.tobytes(), icc_profile=icc,
        quality=90))
    (inp / "web.avif").write_bytes(encode_image(Image.fromarray(rand(12, 17, 4)), "AVIF",
                                                quality=90))
    whole = encode_image(Image.fromarray(rand(40, 60, 3)), "HEIF", quality=90)
    (inp / "cut.heic").write_bytes(whole[: len(whole) // 2])
    kwargs = dict(model=model_dir, bucket=BucketOptions(chunk_size=8))
    with pytest.raises(UpscaleFailures, match="1 of 3 images failed"):
        upscale_bucket(str(inp), str(out), options=UpscaleOptions(scale=2), **kwargs)
    report = json.loads((out / REPORT_KEY).read_text())
    (failure,) = report["failures"]
    assert failure.startswith("cut.heic: not a readable image")
    with Image.open(out / "phone.heic") as img:  # pillow-heif's opener: registered by the run
        assert (img.format, img.size, img.mode) == ("HEIF", (24, 34), "RGB")  # turned once
        assert img.info["icc_profile"] == icc
        assert img.getexif().get(0x010F) == "camera maker"
        assert img.getexif().get(0x0112, 1) == 1
    with Image.open(out / "web.avif") as img:
        assert (img.format, img.size, img.mode) == ("AVIF", (34, 24), "RGBA")
    Image.fromarray(rand(12, 17, 3)).save(inp / "flat.png")
    (inp / "cut.heic").unlink()
    done = upscale_bucket(str(inp), str(tmp_path / "as-avif"),
                          options=UpscaleOptions(scale=2, output_format="AVIF"), **kwargs)
    assert done["failed"] == 0
    with Image.open(tmp_path / "as-avif" / "flat.avif") as img:
        assert (img.format, img.size) == ("AVIF", (34, 24))
