"""Each flow runs for real: Prefect API server, Dask LocalCluster, MLflow on temporary SQLite."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
from gates import gated
from mlflow import MlflowClient
from PIL import Image
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.task_runners import ThreadPoolTaskRunner

from flows.build_patches import build_patches
from flows.register_best import register_best
from flows.train_srcnn import train_srcnn
from flows.upscale_bucket import (
    MAX_SHARDS_IN_FLIGHT,
    REPORT_KEY,
    UpscaleFailures,
    as_they_end,
    upscale_bucket,
)
from srcnn.batch.job import BucketOptions, report_lines
from srcnn.config import ModelConfig, PatchConfig, TrainConfig
from srcnn.data.store.patch_store import PatchStore
from srcnn.tracking.runs import curve

pytestmark = pytest.mark.usefixtures("prefect_server")

QUICK = TrainConfig(epochs=2, steps_per_epoch=40, batch_size=64)
TINY = ModelConfig.from_arch("9-1-5", n1=16, n2=8)


def model_scores(ml: MlflowClient, version) -> dict[str, float]:
    """A registered version's evaluation rows as its logged model carries them (the latest
    value of each metric), read straight from MLflow."""
    logged = ml.get_logged_model(version.source.removeprefix("models:/"))
    metrics = sorted(logged.metrics, key=lambda m: m.timestamp)
    return {m.key: m.value for m in metrics}


def client(home) -> MlflowClient:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def store(small_collection, tmp_path) -> str:
    url = str(tmp_path / "patches.zarr")
    report = build_patches(str(small_collection), url, PatchConfig(scale=3, val_fraction=0.34))
    assert report.built and report.n_patches == len(PatchStore(url))
    return url


def test_build_patches_flow(store):
    again = build_patches(PatchStore(store).attrs.source_url, store,
                          PatchConfig(scale=3, val_fraction=0.34))
    assert not again.built


def test_train_register_and_champion_moves_only_to_better(store, mlflow_home, set5):
    ml = client(mlflow_home)
    good = train_srcnn(store, ModelConfig(), QUICK, [str(set5)], run_name="good")
    run = ml.get_run(good["run_id"])
    assert run.info.status == "FINISHED"
    history = ml.get_metric_history(good["run_id"], curve("val_psnr"))
    assert [m.step for m in history] == [1, 2]
    assert run.data.metrics["set5_x3_psnr"] == pytest.approx(good["scores"][0]["psnr"], abs=1e-3)
    assert run.data.tags["patch_store_fingerprint"] == PatchStore(store).attrs.fingerprint
    assert run.data.params["model.f2"] == "5" and run.data.params["train.epochs"] == "2"
    # A reviewer sees where it came from, and the experiment opens on its training runs.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert run.data.tags["mlflow.source.git.commit"] == head
    experiment = ml.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    artifacts = {a.path for a in ml.list_artifacts(good["run_id"])}
    assert {"plots", "evaluation"} <= artifacts
    logged = ml.get_logged_model(run.data.tags["model_id"])  # the model: an MLflow 3 one
    assert logged.source_run_id == good["run_id"] and logged.tags["arch"] == "9-5-5"
    plots = {a.path for a in ml.list_artifacts(good["run_id"], "plots")}
    assert {"plots/learning_curves.png", "plots/filters.png", "plots/crops_Set5.png"} <= plots

    reg = register_best(3, good["run_id"])
    assert reg["promoted"] and reg["name"] == "srcnn-x3"
    assert reg["score"] == pytest.approx(good["worst_gain"], abs=1e-3)  # the first: its own
    champion = ml.get_model_version_by_alias("srcnn-x3", "champion")
    assert str(champion.version) == str(reg["version"])
    assert "set5_x3_psnr" not in champion.tags  # rows live on the logged model, not in tags
    assert float(champion.tags["worst_gain"]) == pytest.approx(good["worst_gain"], abs=1e-3)
    assert model_scores(ml, champion)["set5_x3_psnr"] == pytest.approx(
        good["scores"][0]["psnr"], abs=1e-3
    )
    assert champion.tags["patch_store_fingerprint"] and "| Set5 | x3 |" in champion.description

    # A far worse model (one step at a tiny learning rate, no residual over bicubic: its
    # output is noise) is registered but not promoted. (A residual net left at its
    # initialisation would be bicubic itself, and by the default ranking, the worst gain over
    # bicubic across the suite, rank above a net that loses on non-antialiased input.)
    bad = train_srcnn(store, TINY.model_copy(update={"residual": False}),
                      TrainConfig(epochs=1, steps_per_epoch=1, lr=1e-7), [str(set5)],
                      run_name="bad")
    assert bad["selection_psnr"] < good["selection_psnr"]
    reg2 = register_best(3, bad["run_id"])
    assert not reg2["promoted"] and reg2["previous_champion"] == str(champion.version)
    assert ml.get_model_version_by_alias("srcnn-x3", "champion").version == champion.version
    assert str(ml.get_model_version_by_alias("srcnn-x3", "challenger").version) == str(
        reg2["version"]
    )
    # Without a run id, register-best picks the best run: the champion again, no new version.
    reg3 = register_best(3)
    assert reg3["version"] == reg["version"] and not reg3["promoted"]
    assert len(ml.search_model_versions("name = 'srcnn-x3'")) == 2

    # The cost budget: versions carry family, arch and cost; register-best --max-macs takes
    # the best run within it, refuses a run over it, and still never moves champion down.
    assert (champion.tags["family"], champion.tags["arch"]) == ("srcnn", "9-5-5")
    assert int(champion.tags["macs_per_pixel"]) == ModelConfig().macs(3) == 57_184
    assert "| srcnn | 9-5-5 | 64/32 | 57184 |" in champion.description
    described = ml.get_registered_model("srcnn-x3").description
    assert "Versions hold: SRCNN" in described and "LR-space" not in described
    cheap = register_best(3, max_macs=10_000)  # only the tiny net (1,624) fits
    assert cheap["version"] == reg2["version"] and not cheap["promoted"]
    assert ml.get_model_version_by_alias("srcnn-x3", "champion").version == champion.version
    with pytest.raises(ValueError, match="57184.0 multiply-adds per output pixel, over the budget"):
        register_best(3, good["run_id"], max_macs=10_000)
    assert register_best(3, max_macs=100) == {}  # nothing fits; the registry is not empty
    assert len(ml.search_model_versions("name = 'srcnn-x3'")) == 2


def test_registry_ranks_like_for_like_on_the_suite(store, mlflow_home, set5):
    """The champion, scored on clean input only, is scored on the rows a challenger carries
    before the two are ranked (by the worst gain over bicubic, the default); the run's
    figures are what its rows say."""
    ml = client(mlflow_home)
    first = train_srcnn(store, TINY, QUICK, [str(set5)], run_name="clean-only",
                        degradations=["bicubic"])
    assert register_best(3, first["run_id"])["promoted"]
    champion = ml.get_model_version_by_alias("srcnn-x3", "champion")
    assert "set5_x3_cubic_psnr" not in model_scores(ml, champion)

    second = train_srcnn(store, TINY, QUICK.model_copy(update={"seed": 7, "steps_per_epoch": 60}),
                         [str(set5)], run_name="suite",
                         degradations=["bicubic", "cubic", "cubic+jpeg60"])
    rows = {r["degradation"]: r for r in second["scores"]}
    assert set(rows) == {"bicubic", "cubic", "cubic+jpeg60"}
    gains = {name: r["psnr"] - r["bicubic_psnr"] for name, r in rows.items()}
    run = ml.get_run(second["run_id"]).data
    assert run.metrics["worst_gain"] == pytest.approx(min(gains.values()), abs=2e-3)
    assert run.metrics["set5_x3_cubic_jpeg60_psnr"] == pytest.approx(rows["cubic+jpeg60"]["psnr"],
                                                                      abs=1e-3)
    assert json.loads(run.tags["eval_degradations"]) == ["bicubic", "cubic", "cubic+jpeg60"]

    reg = register_best(3, second["run_id"])
    scored = model_scores(ml, ml.get_model_version("srcnn-x3", champion.version))
    old = [float(scored[f"set5_x3_{k}psnr"]) - float(scored[f"set5_x3_{k}bicubic_psnr"])
           for k in ("", "cubic_", "cubic_jpeg60_")]
    assert reg["ranked_by"] == "worst" and reg["previous_champion"] == str(champion.version)
    assert reg["previous_score"] == pytest.approx(min(old), abs=2e-3)
    assert reg["score"] == pytest.approx(min(gains.values()), abs=2e-3)
    assert reg["promoted"] == (reg["score"] > reg["previous_score"])
    # The decision, where reviewers look: both versions' tags and the new one's description.
    assert "on the same 3 rows: set5 x bicubic, cubic, cubic+jpeg60" in reg["decision"]
    assert f"{reg['score']:+.3f} dB" in reg["decision"]
    for version in (champion.version, reg["version"]):
        assert ml.get_model_version("srcnn-x3", version).tags["champion_decision"] == reg["decision"]
    assert reg["decision"] in ml.get_model_version("srcnn-x3", reg["version"]).description
    # The logged model knows its version, as MLflow's own registration path records it.
    logged = ml.get_logged_model(run.tags["model_id"])
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "srcnn-x3", "version": str(reg["version"])}]
    # Both LR images are the same for both versions: the bicubic baselines agree.
    assert float(scored["set5_x3_cubic_bicubic_psnr"]) == pytest.approx(
        rows["cubic"]["bicubic_psnr"], abs=1e-3)
    # A named row ranks on that row only; the champion still moves only to a better model.
    named = register_best(3, second["run_id"], rank_by="cubic")
    assert named["ranked_by"] == "cubic" and named["version"] == reg["version"]
    if reg["promoted"]:  # already champion: nothing to compare
        assert not named["promoted"] and named["previous_champion"] == reg["version"]
    else:
        assert named["score"] == pytest.approx(rows["cubic"]["psnr"], abs=1e-3)
        assert named["previous_score"] == pytest.approx(float(scored["set5_x3_cubic_psnr"]),
                                                        abs=1e-3)
        assert named["promoted"] == (named["score"] > named["previous_score"])
    with pytest.raises(Exception, match="rank_by: Input should be 'worst', 'mean'"):
        register_best(3, second["run_id"], rank_by="best")


def test_upscale_bucket_writes_every_image(store, mlflow_home, tmp_path, set5):
    trained = train_srcnn(store, TINY, QUICK, [str(set5)])
    register_best(3, trained["run_id"])
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (31, 47, 3), dtype=np.uint8)).save(inp / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 16), dtype=np.uint8)).save(inp / "nested/grey.png")
    Image.fromarray(rng.integers(0, 255, (25, 19, 4), dtype=np.uint8)).save(inp / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(inp / "photo.jpg")
    summary = upscale_bucket(str(inp), str(out), "champion", bucket=BucketOptions(chunk_size=2))
    assert summary["done"] == 4 and summary["failed"] == 0
    assert summary["model"].startswith("models:/srcnn-x3/")
    expect = {
        "a.png": ((141, 93), "RGB"),
        "nested/grey.png": ((48, 60), "L"),
        "alpha.png": ((57, 75), "RGBA"),
        "photo.jpg": ((90, 90), "RGB"),
    }
    for key, (size, mode) in expect.items():
        with Image.open(out / key) as img:
            assert (img.size, img.mode) == (size, mode), key
    assert Image.open(out / "photo.jpg").format == "JPEG"
    report = json.loads((out / REPORT_KEY).read_text())
    lines = list(report_lines(str(out), report["flow_run_id"]))
    assert sorted(i["key"] for i in lines) == sorted(expect)
    assert {i["status"] for i in lines} == {"done"} and report["done"] == 4
    # What a reviewer sees in Prefect: the report table, the progress, before/after crops.
    with get_client(sync_client=True) as prefect:
        artifacts = {
            a.key: a
            for a in prefect.read_artifacts(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[UUID(report["flow_run_id"])])
                )
            )
        }
    assert {"upscale-report", "upscale-progress", "upscale-preview"} <= set(artifacts)
    table = {row["item"]: row["value"] for row in json.loads(artifacts["upscale-report"].data)}
    assert (table["upscaled"], table["failed"], table["output"]) == ("4", "0", str(out))
    assert artifacts["upscale-progress"].type == "progress"
    assert artifacts["upscale-progress"].data == 100.0
    preview = artifacts["upscale-preview"].data
    assert "**4** upscaled" in preview and preview.count("data:image/png;base64,") == 6

    # A bad file fails only itself; the flow ends failed after finishing the rest.
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UpscaleFailures, match="broken.png"):
        upscale_bucket(str(inp), str(tmp_path / "out2"), "champion")
    assert (tmp_path / "out2" / "a.png").exists() and not (
        tmp_path / "out2" / "broken.png"
    ).exists()
    with pytest.raises(ValueError, match="may not be, lie inside"):
        upscale_bucket(str(inp), str(inp / "sub"), "champion")


def test_training_streams_a_store_over_the_memory_budget(store, mlflow_home, set5, monkeypatch):
    monkeypatch.setenv("SRCNN_TRAIN_MEMORY_BUDGET_MB", "0")  # every store is "too large"
    result = train_srcnn(store, TINY, QUICK, [str(set5)], run_name="streamed")
    run = client(mlflow_home).get_run(result["run_id"])
    assert run.data.tags["training_input"] == "StreamedPatches"
    assert run.info.status == "FINISHED" and run.data.metrics["best_held_out_psnr"] > 20


# upscale-bucket's shards, as Prefect task runs
gated_shard = task(gated, name="gated-shard")


@flow(task_runner=ThreadPoolTaskRunner(max_workers=MAX_SHARDS_IN_FLIGHT))
def windowed_shards(folder: str, n: int, opener: int) -> tuple[list[str], int]:
    drawn, most = [0], 0

    def submissions():
        for i in range(n):
            drawn[0] += 1
            yield gated_shard.submit(i, folder, opener, 30)

    results = []
    for future in as_they_end(submissions(), MAX_SHARDS_IN_FLIGHT):
        most = max(most, drawn[0] - len(results))
        results.append(future.result())
    return results, most


def test_shards_are_collected_as_they_end(tmp_path):
    """upscale-bucket's window of shards (`as_they_end`, real Prefect task runs):
    a shard that waits for a later one does not hold up the submissions (collected in order,
    the later shard is never submitted and the gate never opens), and no more than
    MAX_SHARDS_IN_FLIGHT are out."""
    opener = MAX_SHARDS_IN_FLIGHT + 1  # submitted only after some shard behind 0 is collected
    results, most = windowed_shards(str(tmp_path), opener + 2, opener)
    assert sorted(results) == sorted(
        ["passed the gate"] + [f"task {i}" for i in range(1, opener + 2)]
    )
    # Shard 0 ended only after a later shard had been collected (shard 4 is drawn after one);
    # in what order shard 0 and shard 5 then end is up to the threads.
    assert results[0] != "passed the gate" and most <= MAX_SHARDS_IN_FLIGHT
