"""The object store blinks: the loopback S3 endpoint (moto, behind a TCP relay that can be
cut) stops answering in the middle of an `upscale-bucket` run. A short outage is ridden out by
the S3 client's retries; a long one fails the run with a clear message; a re-run finishes the
rest, and every output is then whole and current."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from servers import TcpProxy

from flows.upscale_bucket import UpscaleFailures, upscale_bucket
from srcnn.batch.job import BucketOptions, UpscaleOptions

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

N = 40


@pytest.fixture
def bucket(s3_bucket, s3_endpoint, monkeypatch):
    """N photos-like images under s3://<bucket>/in; the pipeline reaches S3 through a relay."""
    fs, name = s3_bucket
    rng = np.random.default_rng(0)
    for i in range(N):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(buf, "PNG")
        fs.pipe(f"{name}/in/{i:03d}.png", buf.getvalue())
    proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    monkeypatch.setenv("SRCNN_S3_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    try:
        yield fs, name, proxy
    finally:
        proxy.stop()


def outputs(fs, name: str) -> list[str]:
    fs.invalidate_cache()
    return [p for p in fs.find(f"{name}/out") if p.endswith(".png")]


def cut_mid_run(fs, name: str, proxy: TcpProxy, run, outage_s: float | None):
    """Run `run()` in a thread; once some outputs exist, cut the relay for `outage_s` seconds
    (None: until the run ends). Returns (outputs at the cut, the run's result or error)."""
    at_cut: list[str] = []

    def started() -> bool:
        at_cut[:] = outputs(fs, name)
        return len(at_cut) >= 2

    return at_cut, cut_when(started, proxy, run, outage_s)


def cut_when(started, proxy: TcpProxy, run, outage_s: float | None):
    """Run `run()` in a thread; once `started()`, cut the relay for `outage_s` seconds (None:
    until the run ends). Returns the run's result or error."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run)
        while not started():
            assert not future.done(), future.result()
            time.sleep(0.05)
        proxy.stop()
        if outage_s is not None:
            time.sleep(outage_s)
            proxy.start()
        try:
            return future.result(timeout=600)
        except Exception as exc:
            return exc
        finally:
            if outage_s is None:
                proxy.start()


def assert_whole(fs, name: str) -> None:
    keys = outputs(fs, name)
    assert len(keys) == N
    for key in keys:
        with Image.open(io.BytesIO(fs.cat_file(key))) as img:
            img.load()  # decodes whole: nothing half-written
            assert img.size == (360, 270)


def test_a_short_outage_is_ridden_out(bucket):
    fs, name, proxy = bucket
    run = lambda: upscale_bucket(f"s3://{name}/in", f"s3://{name}/out", "pretrained:fast",  # noqa: E731
                                 UpscaleOptions(scale=3), BucketOptions(chunk_size=2))
    at_cut, result = cut_mid_run(fs, name, proxy, run, outage_s=4)
    assert len(at_cut) < N  # the endpoint went away mid-run
    assert not isinstance(result, Exception), result
    assert (result["done"], result["failed"]) == (N, 0)
    assert_whole(fs, name)


def test_a_long_outage_fails_clearly_and_a_rerun_finishes(bucket, monkeypatch):
    fs, name, proxy = bucket
    # A short patience: the outage outlasts it (one try per request, one retry of a task).
    monkeypatch.setenv("SRCNN_S3_RETRY_ATTEMPTS", "1")
    monkeypatch.setenv("SRCNN_TASK_RETRIES", "1")
    # Large chunks: few shards spend their retries against the endpoint that is away.
    run = lambda: upscale_bucket(f"s3://{name}/in", f"s3://{name}/out", "pretrained:fast",  # noqa: E731
                                 UpscaleOptions(scale=3), BucketOptions(chunk_size=10))
    at_cut, result = cut_mid_run(fs, name, proxy, run, outage_s=None)
    assert len(at_cut) < N
    assert isinstance(result, UpscaleFailures), result  # the run failed, saying why and where
    assert "images failed" in str(result)
    assert f"Could not connect to the endpoint URL: \"http://127.0.0.1:{proxy.port}/{name}/" \
        in str(result)
    monkeypatch.delenv("SRCNN_S3_RETRY_ATTEMPTS")
    monkeypatch.delenv("SRCNN_TASK_RETRIES")
    rerun = upscale_bucket(f"s3://{name}/in", f"s3://{name}/out", "pretrained:fast",
                           UpscaleOptions(scale=3), BucketOptions(chunk_size=2))
    assert rerun["failed"] == 0 and rerun["done"] + rerun["skipped"] == N
    assert rerun["done"] > 0  # what the outage left undone, done now
    assert_whole(fs, name)


def test_build_patches_rides_out_a_short_outage_and_a_rerun_finishes_a_long_one(
        s3_bucket, s3_endpoint, small_collection, tmp_path, monkeypatch):
    """The same for `build-patches` from S3 to S3: cut for 4 s once its first shard is marked,
    the build finishes; cut for the rest of a build (one try per request, one retry of its
    task), it fails and leaves the store unpublished; the re-run writes what was left, and both
    stores equal a build from the local folder."""
    from flows.build_patches import build_patches
    from srcnn.config import PatchConfig
    from srcnn.data.store.patch_store import IncompleteStoreError, PatchStore

    fs, name = s3_bucket
    fs.put(str(small_collection) + "/", f"{name}/images/", recursive=True)
    config = PatchConfig(scale=3, shard_chunks=1, chunk_patches=64)  # many shards
    local = str(tmp_path / "local.zarr")
    build_patches(str(small_collection), local, config)
    proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    monkeypatch.setenv("SRCNN_S3_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")

    def marked(store: str) -> int:
        fs.invalidate_cache()
        return len(fs.find(f"{name}/{store}/_build")) if fs.exists(f"{name}/{store}") else 0

    def cut(store: str, outage_s: float | None):
        return cut_when(lambda: marked(store) >= 1, proxy, lambda: build_patches(
            f"s3://{name}/images", f"s3://{name}/{store}", config), outage_s)

    try:
        short = cut("short.zarr", 4)
        assert not isinstance(short, Exception), short
        monkeypatch.setenv("SRCNN_S3_RETRY_ATTEMPTS", "1")
        monkeypatch.setenv("SRCNN_TASK_RETRIES", "1")
        long = cut("long.zarr", None)
        assert isinstance(long, Exception) and "Could not connect to the endpoint" in str(long)
        with pytest.raises(IncompleteStoreError):
            PatchStore(f"s3://{name}/long.zarr")
        monkeypatch.delenv("SRCNN_S3_RETRY_ATTEMPTS")
        monkeypatch.delenv("SRCNN_TASK_RETRIES")
        rerun = build_patches(f"s3://{name}/images", f"s3://{name}/long.zarr", config)
        assert rerun.built and rerun.resumed
        for store in ("short.zarr", "long.zarr"):
            got, ref = PatchStore(f"s3://{name}/{store}"), PatchStore(local)
            assert len(got) == len(ref)
            np.testing.assert_array_equal(got.array("hr")[:], ref.array("hr")[:])
    finally:
        proxy.stop()
