"""The weights shipped inside the package: they load, they are good, they seed the registry."""

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from srcnn.data.degradation import SUITE
from srcnn.evaluation.benchmark import evaluate_model
from srcnn.evaluation.metrics import FSRCNN_PSNR, PAPER_PSNR
from srcnn.models.files import load_model
from srcnn.models.reference import PRETRAINED_KINDS, local_source, pretrained_dir
from srcnn.registry.champion import seed_registry
from srcnn.registry.resolve import resolve_model
from srcnn.settings import get_settings
from srcnn.tracking.runs import make_client

PRETRAINED = Path(pretrained_dir(3)).parent
# The fast (LR-space) weights shipped, by scale: each one must meet issue 13's bar.
FAST_SCALES = sorted(int(p.name.removeprefix("fast-x")) for p in PRETRAINED.glob("fast-x*"))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_weights_load_and_are_small(scale):
    loaded = load_model(pretrained_dir(scale))
    assert loaded.scale == scale
    assert loaded.model.config.macs_per_pixel <= 57_184  # no more expensive than 9-5-5
    assert loaded.metadata["selection_psnr"] > 0 and loaded.metadata["evaluation"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_weights_reach_the_papers_psnr(set5, set14, scale):
    """Issue 3's bar: at or above the paper's 9-5-5 (ImageNet) in every cell, by the standard
    protocol, and the table recorded beside the weights is what they score."""
    loaded = load_model(pretrained_dir(scale))
    recorded = {e["dataset"]: e["psnr"] for e in loaded.metadata["evaluation"]}
    for score in evaluate_model(loaded.model, [set5, set14], scale):
        assert score.psnr >= PAPER_PSNR[score.dataset][scale], score.summary()
        assert score.psnr == pytest.approx(recorded[score.dataset], abs=0.002)


def test_shipped_x3_beats_bicubic_on_set5_by_2db(set5):
    model = resolve_model("pretrained", 3, None).model
    (score,) = evaluate_model(model, [set5], 3)
    assert score.bicubic_psnr == pytest.approx(30.40, abs=0.02)
    assert score.psnr >= score.bicubic_psnr + 2.0, score.summary()


@pytest.mark.parametrize("kind,scale", [("srcnn", s) for s in (2, 3, 4)]
                         + [("fast", s) for s in FAST_SCALES])
def test_bf16_inference_keeps_set5_psnr_of_shipped_weights(set5, kind, scale):
    from srcnn.evaluation.metrics import score_dataset
    from srcnn.inference.tiling import luma_upscaler, prepare

    model = prepare(load_model(pretrained_dir(scale, kind)).model, "cpu")
    fp32 = score_dataset(set5, scale, luma_upscaler(model)).psnr
    bf16 = score_dataset(set5, scale, luma_upscaler(model, bf16=True)).psnr
    assert abs(bf16 - fp32) < 0.05 and fp32 > 29  # measured: -0.004 to -0.001 dB (srcnn)


def test_fast_weights_are_shipped_for_x3():
    assert 3 in FAST_SCALES


@pytest.mark.parametrize("scale", FAST_SCALES)
def test_shipped_fast_weights_beat_fsrcnn_at_its_cost(set5, set14, scale):
    """Issue 13's bar: every Set5/Set14 cell at or above FSRCNN's published PSNR (T91 +
    General-100), trained on T91 only, at no more than 6,500 multiply-adds per output pixel;
    the table recorded beside the weights is what they score."""
    loaded = load_model(pretrained_dir(scale, "fast"))
    config = loaded.model.config
    assert config.family == "espcn" and config.expand == 0  # the collapsed net ships
    assert config.macs(scale) <= 6_500 and loaded.metadata["macs_per_pixel"] == config.macs(scale)
    assert "T91" in loaded.metadata["training_data"] and loaded.metadata["recipe"]
    assert loaded.metadata["trained_for_s"] > 0
    recorded = {e["dataset"]: e["psnr"] for e in loaded.metadata["evaluation"]}
    for score in evaluate_model(loaded.model, [set5, set14], scale):
        assert score.psnr >= FSRCNN_PSNR[score.dataset][scale], score.summary()
        assert score.psnr == pytest.approx(recorded[score.dataset], abs=0.002)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pretrained_references_pick_shipped_kinds(scale):
    """`pretrained` is the best shipped model for the scale by the registry's default ranking,
    the worst gain over bicubic across the rows every kind records (then the mean gain among
    kinds level on it); `pretrained:real`, `pretrained:robust`, `pretrained:fast` and
    `pretrained:srcnn` choose; recorded sources resolve back."""
    gains = {}
    for kind in PRETRAINED_KINDS:
        folder = PRETRAINED / (f"x{scale}" if kind == "srcnn" else f"{kind}-x{scale}")
        if folder.is_dir():
            meta = load_model(str(folder)).metadata
            gains[kind] = {(r["dataset"], r.get("degradation", "bicubic")):
                           r["psnr"] - r["bicubic_psnr"]
                           for r in meta.get("evaluation_suite") or meta["evaluation"]}
    shared = set.intersection(*(set(g) for g in gains.values()))
    worst = {kind: min(g[row] for row in shared) for kind, g in gains.items()}
    mean = {kind: np.mean([g[row] for row in shared]) for kind, g in gains.items()}
    # Worst gains within 0.05 dB of the best are level; the best mean among them wins.
    level = [kind for kind in worst if worst[kind] >= max(worst.values()) - 0.05]
    best = max(level, key=mean.get)
    assert local_source("pretrained", scale)[0] == f"pretrained:{best}-x{scale}"
    assert resolve_model("pretrained:srcnn", scale, None).model.config.family == "srcnn"
    assert local_source("pretrained:x3", 3)[0] == "pretrained:srcnn-x3"  # older records
    for kind in gains:
        source, folder = local_source(f"pretrained:{kind}", scale)
        assert local_source(source, scale) == (source, folder)
    with pytest.raises(ValueError, match="pretrained:fast, pretrained:srcnn"):
        local_source("pretrained:tiny", scale)


def test_empty_registry_is_seeded_with_shipped_weights(mlflow_home):
    client = make_client(get_settings())
    reg = seed_registry(client, get_settings(), 3)
    assert reg is not None and reg.promoted
    assert seed_registry(client, get_settings(), 3) is None  # only when empty
    uri = f"sqlite:///{mlflow_home / 'mlflow.db'}"
    version = MlflowClient(uri, uri).get_model_version_by_alias("srcnn-x3", "champion")
    assert version.tags["source"] == "pretrained"
    loaded = resolve_model("champion", 3, client)
    assert loaded.source == f"models:/srcnn-x3/{version.version}"


def test_champion_comparison_uses_shared_benchmark_sets():
    from srcnn.registry.champion import comparable_scores

    champion = {"set5_x3_psnr": "32.39", "set14_x3_psnr": "29.05", "selection_psnr": "30.72"}
    # Scored on Set5 only: compared on Set5, not against the Set5+Set14 mean.
    new = {"set5_x3_psnr": "32.10", "set5_x3_bicubic_psnr": "30.40", "val_psnr": "26.6"}
    assert comparable_scores(new, champion, 3, 32.10, "mean") == (32.10, 32.39)
    both = {"set5_x3_psnr": "32.50", "set14_x3_psnr": "29.00"}
    assert comparable_scores(both, champion, 3, 30.75, "mean") == (30.75, 30.72)
    assert comparable_scores({}, champion, 3, 31.0, "mean") == (31.0, 30.72)  # nothing shared
    # Ranked by the worst gain, the champion carries no bicubic baselines: nothing shared.
    assert comparable_scores(new, champion, 3, 32.10) == (32.10, 30.72)


# What the shipped kinds for users' images hold to, in dB. Issue 26's goals for
# `pretrained:real` are 0.5 over bicubic on every realistic row of the suite and within 0.5 of
# `pretrained:fast` on clean input. The robust nets alone are 0.6 to 1.4 dB under fast on
# clean input (docs/robust-family.md): `pretrained:real` pairs each with the fast net.
REAL_GAIN = 0.5  # over bicubic on every realistic row of the suite, Set5 and Set14
REAL_CLEAN_GAP = 0.5  # `pretrained:real` at most this far under `pretrained:fast` on clean input
# The robust net alone on clean input, under fast: guards what was reached, not a goal (the
# x4 net gave clean input up for its worst rows: the pair runs the fast net there).
ROBUST_CLEAN_GAP = 2.0
# The pair under its robust net on a realistic row: its threshold keeps each within 0.1 on the
# held-out T91 images; on Set5 at x4 (five small images) bicubic+jpeg75 is 0.13 under (the
# evaluation reads pixels only; a JPEG file of that quality runs the robust net).
PAIR_ROW_TOLERANCE = 0.15
MAX_MACS = 6_500  # per output pixel: FSRCNN's cost


def _suite_rows(meta: dict) -> dict[tuple[str, str], dict]:
    rows = {(r["dataset"], r["degradation"]): r for r in meta["evaluation_suite"]}
    assert {d for _, d in rows} == set(SUITE) and {s for s, _ in rows} == {"Set5", "Set14"}
    return rows


def _fast_psnr(scale: int) -> dict[str, float]:
    return {r["dataset"]: r["psnr"]
            for r in load_model(pretrained_dir(scale, "fast")).metadata["evaluation"]}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_robust_nets_gain_on_every_kind_of_input(set5, scale):
    """`pretrained:robust` at FSRCNN's cost, trained on T91 only by `--preset real-xS`: it
    gains over bicubic on Set5 and Set14 under every realistic degradation of the suite (by
    REAL_GAIN at least), never falls below bicubic, and on clean input stays within
    ROBUST_CLEAN_GAP of `pretrained:fast`. The rows recorded beside it are what it scores (two
    rows re-scored here, by the code that scores every evaluation)."""
    robust = load_model(pretrained_dir(scale, "robust"))
    config = robust.model.config
    assert config.family == "espcn" and config.macs(scale) <= MAX_MACS
    assert "T91" in robust.metadata["training_data"]
    assert "--preset real-x" in robust.metadata["recipe"]
    rows = _suite_rows(robust.metadata)
    for (dataset, degradation), r in rows.items():
        gain = r["psnr"] - r["bicubic_psnr"]
        assert gain >= (REAL_GAIN if degradation != "bicubic" else 0), (dataset, degradation, r)
    fast = _fast_psnr(scale)
    for dataset in ("Set5", "Set14"):
        assert rows[(dataset, "bicubic")]["psnr"] >= fast[dataset] - ROBUST_CLEAN_GAP
    for score in evaluate_model(robust.model, [set5], scale,
                                degradations=["bicubic", "cubic+jpeg60"]):
        assert score.psnr == pytest.approx(rows[("Set5", score.degradation)]["psnr"], abs=0.002)
        assert score.bicubic_psnr == pytest.approx(rows[("Set5", score.degradation)]["bicubic_psnr"],
                                                   abs=0.002)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shipped_real_pairs_meet_the_goals(set5, scale):
    """`pretrained:real`, the gated pair of the shipped fast and robust nets: it gains
    REAL_GAIN over bicubic on every realistic row of the suite (Set5 and Set14), is at most
    PAIR_ROW_TOLERANCE under its robust net on each (its threshold was set so on held-out T91
    images), on clean input within REAL_CLEAN_GAP of `pretrained:fast`, and runs at most
    MAX_MACS per output pixel, gate included; the rows recorded are what it scores (two
    re-scored here)."""
    real = load_model(pretrained_dir(scale, "real"))
    assert real.model.config.family == "gated" and real.model.config.macs(scale) <= MAX_MACS
    assert real.metadata["macs_per_pixel"] == real.model.config.macs(scale)
    rows = _suite_rows(real.metadata)
    robust = {key: r["psnr"]
              for key, r in _suite_rows(load_model(pretrained_dir(scale, "robust")).metadata)
              .items()}
    fast = _fast_psnr(scale)
    for (dataset, degradation), r in rows.items():
        if degradation == "bicubic":
            assert r["psnr"] >= fast[dataset] - REAL_CLEAN_GAP, (dataset, r)
        else:
            assert r["psnr"] - r["bicubic_psnr"] >= REAL_GAIN, (dataset, degradation, r)
            assert r["psnr"] >= robust[(dataset, degradation)] - PAIR_ROW_TOLERANCE, (
                dataset, degradation, r)
    assert real.model.config.clean == load_model(pretrained_dir(scale, "fast")).model.config
    assert real.model.config.robust == load_model(pretrained_dir(scale, "robust")).model.config
    for score in evaluate_model(real.model, [set5], scale, degradations=["bicubic", "cubic"]):
        assert score.psnr == pytest.approx(rows[("Set5", score.degradation)]["psnr"], abs=0.002)
