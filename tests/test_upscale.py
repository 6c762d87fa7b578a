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
from servers import harness_env

from flows.upscale_bucket import REPORT_KEY, UpscaleFailures, upscale_bucket
from srcnn.batch.job import (
    MANIFESTS,
    BucketOptions,
    Job,
    UpscaleOptions,
    report_lines,
    upscale_chunk,
)
from srcnn.batch.planning import Chunk, Item
from srcnn.config import ModelConfig
from srcnn.models.files import save_model
from srcnn.models.srcnn import SRCNN

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
    exif[0x010F] = "camera maker"
    Image.fromarray(rand(12, 17, 3)).save(folder / "exif.jpg", exif=exif.tobytes())
    return {
        "rgb.png": ((34, 24), "RGB", "PNG"), "grey.png": ((34, 24), "L", "PNG"),
        "rgba.png": ((34, 24), "RGBA", "PNG"), "la.png": ((34, 24), "LA", "PNG"),
        "palette.png": ((34, 24), "RGB", "PNG"), "deep.png": ((34, 24), "I;16", "PNG"),
        "cmyk.jpg": ((34, 24), "CMYK", "JPEG"), "icc.png": ((34, 24), "RGB", "PNG"),
        "exif.jpg": ((24, 34), "RGB", "JPEG"),  # orientation applied: width and height swap
    }


def job(tmp_path, out: str = "out", **options) -> Job:
    return Job(str(tmp_path / "in"), str(tmp_path / out), UpscaleOptions(**options), "m",
               "digest", "run")


def chunk(*keys: str) -> Chunk:
    return Chunk("c" + "0" * 19, tuple(Item(k, "etag") for k in keys))


def test_every_kind_of_image_round_trips(tmp_path):
    expected = _kinds(tmp_path / "in")
    result = upscale_chunk(tiny_model(), job(tmp_path, scale=2, tile_size=16), chunk(*expected))
    assert (result.done, result.failed) == (len(expected), 0), result.lines
    for key, (size, mode, fmt) in expected.items():
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
    exif = Image.open(tmp_path / "out" / "exif.jpg").getexif()  # kept, turned once
    assert exif.get(0x010F) == "camera maker" and exif.get(0x0112, 1) == 1


def lr_net(scale: int = 2):
    """The shipped fast net (an LR-space one) for `scale`, on the CPU."""
    from srcnn.inference.tiling import prepare
    from srcnn.registry.champion import resolve_spec

    return prepare(resolve_spec("pretrained:fast", scale).build(), "cpu")


def test_every_kind_of_image_becomes_a_jpeg_by_an_lr_net(tmp_path):
    """Every kind, as JPEG, from an LR-space net (RGB and grey through `upscale_for_jpeg`):
    sizes, modes, 4:2:0 chroma as Pillow writes it by default, EXIF and colour profile kept."""
    from PIL import JpegImagePlugin

    expected = _kinds(tmp_path / "in")
    result = upscale_chunk(lr_net(), job(tmp_path, scale=2, tile_size=16, output_format="JPEG"),
                           chunk(*expected))
    assert (result.done, result.failed) == (len(expected), 0), result.lines
    modes = {"L": "L", "LA": "L", "I;16": "L", "CMYK": "CMYK"}
    for key, (size, mode, _) in expected.items():
        with Image.open(tmp_path / "out" / key.replace(".png", ".jpg")) as out:
            assert (out.size, out.mode, out.format) == (size, modes.get(mode, "RGB"), "JPEG")
            if out.mode == "RGB":
                assert JpegImagePlugin.get_sampling(out) == 2, key  # 4:2:0
    icc = Image.open(tmp_path / "in" / "icc.png").info["icc_profile"]
    assert Image.open(tmp_path / "out" / "icc.jpg").info.get("icc_profile") == icc
    exif = Image.open(tmp_path / "out" / "exif.jpg").getexif()
    assert exif.get(0x010F) == "camera maker" and exif.get(0x0112, 1) == 1


def test_jpeg_outputs_of_an_lr_net_are_as_good_as_through_rgb(t91):
    """The JPEG path (`upscale_for_jpeg`) against the RGB path it replaces for JPEG outputs,
    on held-out-style T91 images degraded by the protocol's bicubic x3: RGB PSNR of the
    decoded JPEGs against the originals at least as high (to 0.01 dB) and files within 1.5%."""
    from srcnn.batch.job import upscale_chosen
    from srcnn.data.degradation import mod_crop
    from srcnn.data.images import encode_image
    from srcnn.inference.tiling import upscale_rgb_tiled

    net = lr_net(3)
    psnr, size = {"rgb": [], "jpeg": []}, {"rgb": 0, "jpeg": 0}
    for path in sorted(t91.glob("*.png"))[::12]:
        hr = mod_crop(Image.open(path).convert("RGB"), 3)
        lr = hr.resize((hr.width // 3, hr.height // 3), Image.Resampling.BICUBIC)
        outs = {"rgb": upscale_rgb_tiled(net, lr, 3, 64),
                "jpeg": upscale_chosen(net, lr, 3, 64, jpeg=True)[0]}
        assert outs["jpeg"].mode == "YCbCr"
        for kind, out in outs.items():
            data = encode_image(out, "JPEG", quality=95)
            decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)
            mse = np.mean((decoded - np.asarray(hr, np.float64)) ** 2)
            psnr[kind].append(10 * np.log10(255**2 / mse))
            size[kind] += len(data)
    assert len(psnr["rgb"]) >= 7
    assert np.mean(psnr["jpeg"]) >= np.mean(psnr["rgb"]) - 0.01, psnr
    assert abs(size["jpeg"] / size["rgb"] - 1) < 0.015, size


def test_16_bit_grey_into_8_bit_formats_keeps_its_levels(tmp_path):
    """A 16-bit grey input written as an 8-bit format is its 16-bit output (PNG, TIFF) scaled
    by 1/257: exactly for BMP and GIF, within the codec's error for the lossy ones (Pillow's
    own conversion had clipped every level above 255 to white, and BMP had failed)."""
    (tmp_path / "in").mkdir()
    Image.fromarray(rand(12, 17, dtype=np.uint16, high=65535)).save(tmp_path / "in" / "deep.png")
    outputs = {}
    for fmt in ("PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP", "AVIF"):
        result = upscale_chunk(lr_net(), job(tmp_path, fmt, scale=2, output_format=fmt),
                               chunk("deep.png"))
        assert result.done == 1, result.lines
        (path,) = (p for p in (tmp_path / fmt).iterdir() if p.is_file())
        with Image.open(path) as img:
            outputs[fmt] = np.asarray(img.convert("L") if img.mode == "P" else img)
    deep = outputs["PNG"].astype(np.float64)
    assert outputs["PNG"].dtype == np.uint16 and np.array_equal(outputs["TIFF"], deep)
    want = np.rint(deep / 257)
    assert 60 < want.mean() < 200  # mid-grey noise: clipping would show
    for fmt in ("BMP", "GIF"):
        assert np.array_equal(outputs[fmt], want), fmt
    for fmt in ("JPEG", "WEBP", "AVIF"):
        got = outputs[fmt].astype(np.float64)
        got = got if got.ndim == 2 else got.mean(-1)
        assert np.abs(got - want).mean() < 12 and abs(got.mean() - want.mean()) < 3, fmt


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


def test_png_compress_level_changes_the_file_not_the_pixels(tmp_path):
    (tmp_path / "in").mkdir()
    smooth = np.linspace(0, 255, 40 * 60 * 3).reshape(40, 60, 3).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "in" / "a.png")
    fast, default = UpscaleOptions(scale=2, png_compress_level=1), UpscaleOptions(scale=2)
    assert fast.token("etag", "m") != default.token("etag", "m")  # another file: redone
    for name, level in (("one", 1), ("six", 6)):
        result = upscale_chunk(tiny_model(), job(tmp_path, name, scale=2,
                                                 png_compress_level=level), chunk("a.png"))
        assert result.done == 1
    one, six = (tmp_path / n / "a.png" for n in ("one", "six"))
    assert np.array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(six)))
    assert one.stat().st_size > six.stat().st_size  # zlib level 1 compresses less


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
    good = _kinds(inp)
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
    good = _kinds(inp)
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
