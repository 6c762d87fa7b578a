"""The paper-grade training recipe (presets), run for a few steps through the real flow."""

import pytest
from mlflow import MlflowClient

from flows.build_patches import build_patches
from flows.train_srcnn import train_srcnn
from srcnn.data.store.patch_store import MissingArrayError, PatchStore
from srcnn.models.files import load_model
from srcnn.models.reference import pretrained_dir
from srcnn.presets import PRESETS, get_preset
from srcnn.tracking.runs import curve

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_presets_cover_scales_and_cost():
    assert set(PRESETS) == {"x2", "x3", "x4", "fast-x2", "fast-x3", "fast-x4", "real-x2",
                            "real-x3", "real-x4"}
    for name, recipe in PRESETS.items():
        scale = recipe.patches.scale
        assert name.endswith(f"x{scale}")
        if name.startswith("real"):  # the shipped fast nets' shapes, on stores made under
            # the mixture: `--init-model pretrained:fast` starts from those weights
            shipped = load_model(pretrained_dir(scale, "fast")).model.config
            assert recipe.model == shipped
            assert recipe.patches.degradation.kind == "real"
        if name.startswith(("fast", "real")):  # FSRCNN's cost, the in-net bicubic counted
            assert recipe.model.family == "espcn" and recipe.model.macs(scale) <= 6_500
            assert recipe.patches.lr_native  # its store holds the LR patches it trains on
        else:
            assert recipe.model.macs_per_pixel <= 57_184  # no more expensive than 9-5-5
            assert recipe.patches.degradation.kind == "bicubic"
    with pytest.raises(ValueError, match="choose one of"):
        get_preset("x5")


def test_recipe_runs_through_flow_and_records_settings(small_collection, tmp_path, mlflow_home,
                                                       set5):
    recipe = get_preset("x3")
    store = str(tmp_path / "recipe.zarr")
    build_patches(str(small_collection), store, recipe.patches)
    attrs = PatchStore(store).attrs
    assert attrs.augmentation.downscaled_copies == [1.0, 0.9, 0.8, 0.7, 0.6]
    assert {s.factor for s in PatchStore(store).sources if s.split == "train"} == {
        1.0, 0.9, 0.8, 0.7, 0.6}
    training = recipe.training.model_copy(update={"epochs": 2, "steps_per_epoch": 5})
    result = train_srcnn(store, recipe.model, training, [str(set5)], "recipe-test", str(set5))
    uri = f"sqlite:///{mlflow_home / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(result["run_id"])
    params = run.data.params
    assert params["train.seed"] == "3" and params["train.augment"] == "True"
    assert params["train.lr_schedule"] == "cosine" and params["model.residual"] == "True"
    assert params["patch_size"] == "48"
    probe = MlflowClient(uri).get_metric_history(result["run_id"], curve("probe_psnr"))
    assert [m.step for m in probe] == [1, 2] and all(m.value > 20 for m in probe)
    # Ten steps cannot reach the paper's 32.75 dB: no time-to-paper is recorded.
    assert "time_to_paper_s" not in run.data.metrics
    assert run.data.metrics["set5_x3_psnr"] == pytest.approx(result["scores"][0]["psnr"], abs=1e-3)


def test_fast_recipe_trains_through_flow_and_ships_the_collapsed_net(small_collection, tmp_path,
                                                                      mlflow_home, set5):
    """The LR-space preset end to end: its store holds the LR patches, it trains (re-
    parameterised) through the real flow, and the model logged is the collapsed plain net,
    with its family and cost recorded; a store without LR patches fails with the command that
    rebuilds it."""
    from srcnn.registry.resolve import resolve_model

    recipe = get_preset("fast-x3")
    store = str(tmp_path / "fast.zarr")
    build_patches(str(small_collection), store, recipe.patches.model_copy(
        update={"augment_scales": (1.0,)}))  # the preset's grid; fewer patches, a quicker test
    patches = PatchStore(store)
    assert patches.attrs.has_lr and patches.array("lr").shape[1:] == (32, 32)
    training = recipe.training.model_copy(update={"epochs": 2, "steps_per_epoch": 3})
    wide = recipe.model.model_copy(update={"expand": 2})  # trains re-parameterised
    result = train_srcnn(store, wide, training, [str(set5)], "fast-test", str(set5))
    client = MlflowClient(f"sqlite:///{mlflow_home / 'mlflow.db'}")
    run = client.get_run(result["run_id"])
    assert run.data.tags["family"] == "espcn" and run.data.params["model.expand"] == "2"
    assert run.data.metrics["macs_per_pixel"] == wide.macs(3) == recipe.model.macs(3) <= 6_500
    assert run.data.params["train.loss"] == "l1"
    assert "time_to_fsrcnn_s" not in run.data.metrics  # six steps cannot reach 33.16 dB
    logged = resolve_model(f"models:/{run.data.tags['model_id']}", 3, client)
    assert logged.model.config.expand == 0  # what ships is the plain net
    assert logged.model.config == recipe.model  # the plain net of the preset
    assert result["scores"][0]["psnr"] > 20
    # `srcnn export` ships it as the shipped weights are made: the run's own facts recorded
    # beside the weights, the same bytes as the logged model.
    from typer.testing import CliRunner

    from flows.cli import app
    from srcnn.models.files import read_spec
    from srcnn.registry.resolve import resolve

    folder = str(tmp_path / "shipped")
    out = CliRunner().invoke(app, ["export", "--model", f"runs:/{result['run_id']}/model",
                                   "--to", folder, "--dataset", str(set5),
                                   "--recipe", "srcnn train S --preset fast-x3"])
    assert out.exit_code == 0, out.output
    shipped = read_spec(folder)
    facts = shipped.metadata
    assert facts["recipe"] == "srcnn train S --preset fast-x3" and facts["preset"] == "none"
    assert facts["macs_per_pixel"] == recipe.model.macs(3) and facts["epochs"] == 2
    assert facts["trained_for_s"] == round(run.data.metrics["train_seconds"], 1) > 0
    assert facts["held_out_psnr"] == round(run.data.metrics["best_held_out_psnr"], 3)
    assert run.data.tags["selected_by"] == "held_out_images" and "whole-image" in facts["selection"]
    assert facts["training_data"].startswith(f"{small_collection}: ")
    assert facts["evaluation"][0]["dataset"] == "Set5"
    assert shipped.digest == resolve(f"runs:/{result['run_id']}/model", 3, client).digest
    old = str(tmp_path / "srcnn.zarr")  # the SRCNN preset's grid is not whole LR pixels
    build_patches(str(small_collection), old, get_preset("x3").patches.model_copy(
        update={"augment_scales": (1.0,)}))
    with pytest.raises(MissingArrayError, match=f"srcnn patches SOURCE {old} --preset fast-x3"):
        train_srcnn(old, recipe.model, training, [str(set5)], "fast-on-old-store")
