"""The same flows over S3: a real endpoint on loopback (moto server) through s3fs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from flows.build_patches import build_patches
from flows.upscale_bucket import REPORT_KEY, upscale_bucket
from srcnn.batch.job import UpscaleOptions, report_lines
from srcnn.config import ModelConfig, PatchConfig
from srcnn.data.images import HEAD_BYTES
from srcnn.data.store.patch_store import PatchStore
from srcnn.models.files import save_model
from srcnn.models.srcnn import SRCNN

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_build_patches_s3_to_s3(s3_bucket, small_collection):
    fs, bucket = s3_bucket
    fs.put(str(small_collection) + "/", f"{bucket}/images/", recursive=True)
    local = build_patches(str(small_collection), str(small_collection.parent / "local.zarr"),
                          PatchConfig(scale=3))
    url = f"s3://{bucket}/stores/x3.zarr"
    report = build_patches(f"s3://{bucket}/images", url, PatchConfig(scale=3))
    assert report.built and report.n_patches == local.n_patches
    store, ref = PatchStore(url), PatchStore(str(small_collection.parent / "local.zarr"))
    np.testing.assert_array_equal(store.array("hr")[:], ref.array("hr")[:])
    np.testing.assert_array_equal(store.array("position")[:], ref.array("position")[:])
    # Sharded: a handful of objects, not one per chunk.
    objects = [p for p in fs.find(f"{bucket}/stores/x3.zarr")]
    assert len(objects) < 20, objects
    assert not build_patches(f"s3://{bucket}/images", url, PatchConfig(scale=3)).built

    # Bad objects: sizes come from ranged reads of the headers; an empty object and one whose
    # pixels are cut short (found when the write pass decodes it) are skipped with reasons.
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (300, 400, 3), dtype=np.uint8)
                    ).save(buf, "PNG")
    fs.pipe(f"{bucket}/images/cut.png", buf.getvalue()[: HEAD_BYTES + 4096])
    fs.pipe(f"{bucket}/images/empty.png", b"")
    bad_url = f"s3://{bucket}/stores/bad.zarr"
    report = build_patches(f"s3://{bucket}/images", bad_url, PatchConfig(scale=3))
    reasons = {s["key"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"cut.png", "empty.png"} and "0 bytes" in reasons["empty.png"]
    assert (report.n_images, report.n_patches) == (local.n_images, local.n_patches)
    for a, b in zip(PatchStore(bad_url).load("train"), ref.load("train")):
        np.testing.assert_array_equal(a, b)


def test_upscale_bucket_s3(s3_bucket, tmp_path, mlflow_home):
    fs, bucket = s3_bucket
    rng = np.random.default_rng(0)
    for i in range(3):
        img = Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8))
        with fs.open(f"{bucket}/in/dir/{i}.png", "wb") as f:
            img.save(f, format="PNG")
    model_dir = str(tmp_path / "model")
    save_model(SRCNN(ModelConfig.from_arch("9-1-5", n1=8, n2=4)), 2, model_dir)
    summary = upscale_bucket(f"s3://{bucket}/in", f"s3://{bucket}/out", model_dir,
                             UpscaleOptions(scale=2))
    assert summary["done"] == 3
    for i in range(3):
        with fs.open(f"{bucket}/out/dir/{i}.png", "rb") as f:
            assert Image.open(f).size == (60, 2 * (20 + i))
    report = json.loads(fs.cat(f"{bucket}/out/{REPORT_KEY}"))
    lines = list(report_lines(f"s3://{bucket}/out", report["flow_run_id"]))
    assert [item["status"] for item in lines] == ["done"] * 3
