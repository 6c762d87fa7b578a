"""upscale-bucket at bucket scale: the streaming plan, and correctness under every spelling and
change (prefixes, colliding outputs, formats, bomb limits, weights, a promotion mid-run)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flows.upscale_bucket import UpscaleFailures, check_prefixes, partitions, upscale_bucket
from srcnn.batch.formats import output_key
from srcnn.batch.job import MANIFESTS, BucketOptions, UpscaleOptions
from srcnn.batch.planning import MAX_CHUNK_FACTOR, is_boundary, plan, shard_count
from srcnn.config import ModelConfig
from srcnn.data.images import BadImageError, decode_image
from srcnn.models.files import save_model
from srcnn.models.srcnn import SRCNN
from srcnn.storage import PAGE, Listed, iter_pages, top_prefixes

RNG = np.random.default_rng(0)


def tiny_model(seed: int = 0) -> SRCNN:
    torch.manual_seed(seed)
    return SRCNN(ModelConfig.from_arch("9-1-5", n1=8, n2=4)).eval()


def png(path: Path, h: int = 10, w: int = 13) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def standin(keys: list[str]):
    """A page source over these keys (sorted, as a listing returns them)."""
    keys = sorted(keys)
    return lambda: (
        [Listed(k, "e") for k in keys[i : i + PAGE]] for i in range(0, len(keys), PAGE))


def chunks_of(keys: list[str], chunk_size: int = 16, output_format: str | None = None) -> list:
    rename = (lambda k: output_key(k, output_format)) if output_format else None
    shards = plan([("", standin(keys))], chunk_size, keep=lambda k: True, output_key=rename)
    return [c for s in shards for c in s.chunks]


# -- the plan ---------------------------------------------------------------------------------

def test_every_key_once_in_bounded_chunks_and_shards():
    keys = [f"d{i % 7}/{i:06d}.png" for i in range(5000)]
    chunks = chunks_of(keys)
    flat = [item.key for c in chunks for item in c.items]
    assert flat == sorted(keys)  # all, once, in key order
    assert max(len(c.items) for c in chunks) <= MAX_CHUNK_FACTOR * 16
    assert 5000 / 16 / 2 < len(chunks) < 5000 / 16 * 2  # about chunk_size on average
    assert len({c.id for c in chunks}) == len(chunks)
    # Prefect task runs per flow run stay bounded whatever the size; shards grow instead.
    assert shard_count(10_000_000) <= 1000 and shard_count(1_000_000) < shard_count(10_000_000)
    assert shard_count(100_000_000) <= 1000


def test_added_and_removed_keys_change_only_their_own_chunks():
    """A re-run finds a key's record when its chunk kept its name: appends and changes inside
    a chunk keep every name; a boundary key added or removed costs at most two chunks."""
    keys = [f"img/{i:05d}.jpg" for i in range(3000)]
    recorded = {c.id: {i.key for i in c.items} for c in chunks_of(keys)}

    def lost(new_keys: list[str]) -> set[str]:
        found = {i.key for c in chunks_of(new_keys) for i in c.items
                 if i.key in recorded.get(c.id, ())}
        return (set(new_keys) & set(keys)) - found

    inner = next(k for k in keys[1000:] if not is_boundary(k, 16))
    boundary = next(k for k in keys[1000:] if is_boundary(k, 16))
    assert lost(keys + [f"img/{i:05d}.jpg" for i in range(3000, 3100)]) == set()  # appended
    assert lost([k for k in keys if k != inner]) == set()  # removed inside a chunk
    assert lost(keys + [inner + "x"] if not is_boundary(inner + "x", 16) else keys) == set()
    merged = lost([k for k in keys if k != boundary])  # two chunks merge under one name
    assert 0 < len(merged) <= MAX_CHUNK_FACTOR * 16


def test_two_inputs_for_one_output_fail_by_name_never_collapse():
    keys = ["a.jpg", "a.jpg.jpg", "a.jpg.png", "a.png", "a.x/b.png", "b.jpeg", "b.jpg", "c.png"]

    def errors(fmt):
        return {i.key: i.error for c in chunks_of(keys, 2, fmt) for i in c.items if i.error}

    png_errors = errors("PNG")
    assert set(png_errors) == {"a.jpg.png", "a.png", "b.jpg"}
    assert "'a.png'" in png_errors["a.png"] and "'a.jpg'" in png_errors["a.png"]
    assert "'a.jpg.jpg'" in png_errors["a.jpg.png"] and "'b.jpeg'" in png_errors["b.jpg"]
    jpeg_errors = errors("JPEG")
    assert set(jpeg_errors) == {"a.jpg.png", "a.png", "b.jpg"}
    assert "'a.jpg'" in jpeg_errors["a.png"]
    assert errors(None) == {}  # each input keeps its key: nothing can collide


def test_listing_is_in_key_order_on_disk_and_on_s3(tmp_path, s3_bucket):
    keys = ["a.png", "a/b.png", "a-b.png", "a0.png", "B.png", "z/y/x.png", "é.png"]
    for key in keys:
        png(tmp_path / "in" / key)
    local = [x.key for page in iter_pages(str(tmp_path / "in")) for x in page]
    assert local == sorted(keys, key=lambda k: k.encode())  # S3's byte order
    fs, bucket = s3_bucket
    fs.put(str(tmp_path / "in") + "/", f"{bucket}/in/", recursive=True)
    remote = [x.key for page in iter_pages(f"s3://{bucket}/in") for x in page]
    assert remote == local
    top = [x.key for page in iter_pages(f"s3://{bucket}/in", "", False) for x in page]
    assert top == [k for k in local if "/" not in k]
    assert top_prefixes(f"s3://{bucket}/in") == top_prefixes(str(tmp_path / "in")) == ["a/", "z/"]
    for prefix in ("a", "a/", "a-", "z/y", "é"):  # a prefix is a key prefix, folder or not
        on_disk = [x.key for page in iter_pages(str(tmp_path / "in"), prefix) for x in page]
        on_s3 = [x.key for page in iter_pages(f"s3://{bucket}/in", prefix) for x in page]
        assert on_disk == on_s3 == [k for k in local if k.startswith(prefix)], prefix
    assert [k for _, source in partitions(str(tmp_path / "in"), ["a", "a/", "z"])
            for page in source() for k in (x.key for x in page)] == [
        k for k in local if k.startswith(("a", "z"))]  # overlapping prefixes: each key once


# -- spellings --------------------------------------------------------------------------------

def test_output_inside_input_is_refused_however_spelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "in" / "sub", tmp_path / "link")
    absolute = str(tmp_path / "in")
    nested = [("in", "in/out"), ("in/", "./in/out/"), (absolute, "in/x/../out"),
              (f"file://{absolute}", f"{absolute}/out"), ("in/out", "in"), ("./in", absolute),
              ("in", "link/out"), ("elsewhere/../in", "in//out"),
              ("s3://b/in", "s3://b/in/out"), ("s3://b/in/", "s3://b/in"),
              ("s3://b/in", "s3a://b/in/x"), ("s3://b/in/out/", "s3://b/in")]
    for inp, out in nested:
        with pytest.raises(ValueError, match="may not be, lie inside or contain"):
            check_prefixes(inp, out)
    apart = [("in", "input"), ("in/sub2", "in/sub"), ("s3://b/in", "s3://b/input"),
             ("s3://b/in", "s3://c/in"), ("in", "s3://b/in"), ("in", "elsewhere")]
    for inp, out in apart:
        check_prefixes(inp, out)  # siblings and other stores are fine


def test_decompression_bomb_limit_is_the_callers():
    big = Image.new("L", (10_000, 9_500))  # 95 Mpx: over Pillow's own limit (89.5 Mpx)
    buf = __import__("io").BytesIO()
    big.save(buf, format="PNG", compress_level=1)
    data = buf.getvalue()
    del big
    with pytest.raises(BadImageError, match="too large: 10000x9500"):
        decode_image(data, "bomb.png")  # the default still refuses it
    with pytest.raises(BadImageError, match="too large"):
        decode_image(data, "bomb.png", max_pixels=90_000_000)
    img = decode_image(data, "bomb.png", max_pixels=200_000_000)
    assert img.size == (10_000, 9_500) and img.getextrema() == (0, 0)


@pytest.mark.usefixtures("prefect_server")
def test_unknown_output_format_is_one_error_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    png(tmp_path / "in" / "a.png")
    with pytest.raises(Exception, match="output_format"):
        upscale_bucket(str(tmp_path / "in"), str(tmp_path / "out"), "pretrained",
                       {"scale": 2, "output_format": "JPG"})
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "in"), str(tmp_path / "out"),
                                      "--scale", "2", "--output-format", "JPG"])
    assert result.exit_code == 2 and "'--output-format'" in result.output, result.output
    assert "'JPG' is not one of" in result.output
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.usefixtures("prefect_server")
def test_colliding_outputs_fail_by_name_in_a_run(tmp_path):
    model = str(tmp_path / "model")
    save_model(tiny_model(), 2, model)
    png(tmp_path / "in" / "a.jpg")
    png(tmp_path / "in" / "a.png")
    png(tmp_path / "in" / "b.png")
    with pytest.raises(UpscaleFailures, match=r"a\.png.*'a\.jpg'"):
        upscale_bucket(str(tmp_path / "in"), str(tmp_path / "out"), model,
                       UpscaleOptions(scale=2, output_format="PNG"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "b.png"]
    with Image.open(tmp_path / "out" / "a.png") as out:  # a.jpg's result, not overwritten
        assert out.size == (26, 20)


@pytest.mark.usefixtures("prefect_server")
def test_outputs_are_current_only_for_the_exact_weights(tmp_path):
    first, copy = str(tmp_path / "m1"), str(tmp_path / "m2")
    save_model(tiny_model(), 2, first)
    for i in range(4):
        png(tmp_path / "in" / f"d{i % 2}" / f"{i}.png")
    inp, out = str(tmp_path / "in"), str(tmp_path / "out")
    done = upscale_bucket(inp, out, first, UpscaleOptions(scale=2), BucketOptions(chunk_size=2))
    assert done["done"] == 4
    shutil.copytree(first, copy)  # the same weights under another name: still current
    assert upscale_bucket(inp, out, copy, UpscaleOptions(scale=2),
                          BucketOptions(chunk_size=2))["skipped"] == 4
    save_model(tiny_model(seed=7), 2, copy)  # new weights under the same name: stale
    redone = upscale_bucket(inp, out, copy, UpscaleOptions(scale=2), BucketOptions(chunk_size=2))
    assert redone["done"] == 4 and redone["weights"] != done["weights"]
    weights = {json.loads(p.read_text())["weights"]
               for p in (tmp_path / "out" / MANIFESTS).rglob("*.json")}
    assert weights == {redone["weights"]}


def test_champion_is_resolved_once_and_that_version_is_loaded(mlflow_home, monkeypatch):
    """A promotion between resolving `champion` and downloading it cannot mix versions."""
    import mlflow

    from srcnn.models.files import LoadedModel, spec_of
    from srcnn.registry.champion import resolve_spec
    from srcnn.registry.resolve import CHAMPION
    from srcnn.settings import get_settings
    from srcnn.tracking.runs import TRAIN_EXPERIMENT, ensure_experiment, log_model, make_client

    settings = get_settings()
    client = make_client(settings)
    exp = ensure_experiment(client, TRAIN_EXPERIMENT, settings)
    versions = {}
    client.create_registered_model("srcnn-x2")
    for seed in (1, 2):
        run = client.create_run(exp)
        loaded = LoadedModel(tiny_model(seed), 2, f"seed{seed}")
        model_id = log_model(client, run.info.run_id, loaded)
        mv = client.create_model_version("srcnn-x2", f"models:/{model_id}", run.info.run_id,
                                         model_id=model_id)
        versions[mv.version] = spec_of(loaded).digest
    v1, v2 = sorted(versions, key=int)
    client.set_registered_model_alias("srcnn-x2", CHAMPION, v1)
    real = mlflow.artifacts.download_artifacts
    calls = []

    def promote_then_download(*args, **kwargs):  # a promotion lands mid-resolution
        client.set_registered_model_alias("srcnn-x2", CHAMPION, v2)
        calls.append(kwargs.get("artifact_uri"))
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", promote_then_download)
    spec = resolve_spec("champion", 2)
    assert calls == [f"models:/srcnn-x2/{v1}"]
    assert spec.source == f"models:/srcnn-x2/{v1}" and spec.digest == versions[v1]
    assert client.get_model_version_by_alias("srcnn-x2", CHAMPION).version == v2
