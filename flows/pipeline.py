"""Flow `srcnn-pipeline`: patches -> train -> register -> upscale, chained (what `make demo` runs).

With no `source`, it uses real photographs bundled with scikit-image (see `srcnn.demo`):
it trains on most of them and upscales LR versions of the held-out ones.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.build_patches import build_patches
from flows.datasets import default_eval_datasets, resolve_datasets
from flows.register_best import register_best
from flows.train_srcnn import train_srcnn
from flows.upscale_bucket import upscale_bucket
from srcnn.batch.job import UpscaleOptions
from srcnn.config import ModelOverrides, PatchOverrides, TrainOverrides
from srcnn.demo import (
    HOLDOUT_IMAGES,
    TRAIN_IMAGES,
    USERS_MODELS,
    export_degraded,
    export_low_res,
    export_photos,
    holdout_psnr,
)
from srcnn.evaluation.ranking import describe
from srcnn.presets import DEMO_TRAINING, PresetName
from tasks.registry import seed_first


def champion_reason(reg: dict, shipped: str | None) -> str:
    """Which version is champion after this run, and why, in one sentence."""
    def who(version) -> str:
        return f"v{version}" + (" (the shipped weights)" if str(version) == shipped else "")

    if reg["previous_champion"] is None:
        return f"{who(reg['version'])}: the first model in the registry"
    on = describe(reg["ranked_by"])
    if reg["promoted"]:
        return (f"{who(reg['version'])}, this run's model: {reg['score']:+.2f} dB beats "
                f"{who(reg['previous_champion'])} at {reg['previous_score']:+.2f} dB ({on}, "
                "on the same images)")
    if str(reg["previous_champion"]) == str(reg["version"]):
        return f"{who(reg['version'])}, this run's model (already champion)"
    return (f"{who(reg['previous_champion'])} stays: {reg['previous_score']:+.2f} dB against "
            f"{reg['score']:+.2f} dB for this run's model ({on}), registered as "
            f"{reg['name']} {who(reg['version'])} (alias challenger)")


def users_images(work: Path, holdout: list[Path], scale: int) -> dict:
    """The held-out photos degraded the way users' images are (`USERS_DEGRADATIONS`), each
    upscaled by each of `USERS_MODELS` (the gated pair, the robust and the clean-input nets):
    {degradation: {kind or bicubic: mean Y-PSNR}}."""
    folders = export_degraded(holdout, work / f"lr-x{scale}-users", scale)
    table: dict[str, dict[str, float]] = {name: {} for name in folders}
    for kind in USERS_MODELS:
        out = work / f"upscaled-x{scale}-users-{kind}"
        upscale_bucket(str(work / f"lr-x{scale}-users"), str(out), f"pretrained:{kind}",
                       UpscaleOptions(scale=scale))
        for name, lr_dir in folders.items():
            sr, bic = holdout_psnr(work / "holdout", lr_dir, out / lr_dir.name, scale)
            table[name] |= {kind: round(sr, 3), "bicubic": round(bic, 3)}
    return table


@flow(name="srcnn-pipeline", log_prints=True)
def srcnn_pipeline(workdir: str = "demo-output", source: str | None = None, scale: int = 3,
                   model: ModelOverrides = ModelOverrides(),
                   training: TrainOverrides = DEMO_TRAINING,
                   upscale_input: str | None = None, eval_datasets: list[str] | None = None,
                   preset: PresetName | None = None) -> dict:
    """Build patches from `source`, train, register, and upscale `upscale_input` with the
    champion. `preset` (default: `fast-x<scale>`, the LR-space net) gives the patch, model and
    training settings that `model` and `training` override."""
    logger = get_run_logger()
    work = Path(workdir).resolve()
    demo = source is None
    if demo:
        source = str(work / "photos")
        export_photos(source, TRAIN_IMAGES)
        holdout = export_photos(work / "holdout", HOLDOUT_IMAGES)
        upscale_input = str(work / f"lr-x{scale}")
        export_low_res(holdout, upscale_input, scale)
    if upscale_input is None:
        raise ValueError("upscale_input: required when source is given")
    store = str(work / f"patches-x{scale}.zarr")
    output = str(work / f"upscaled-x{scale}")
    datasets = (resolve_datasets(eval_datasets) if eval_datasets is not None
                else default_eval_datasets())
    if not datasets:  # a fresh machine without the benchmark sets: judge on the held-out photos
        datasets = [str(work / "holdout")] if demo else []
    preset = preset or f"fast-x{scale}"
    patches = build_patches(source, store, PatchOverrides(scale=scale), preset=preset)
    trained = train_srcnn(store, model, training, datasets, run_name=f"pipeline-x{scale}",
                          preset=preset)
    # The gate: the shipped weights are in the registry first, so a quick model becomes
    # champion only if it beats them on the same images.
    shipped = seed_first(scale)
    registration = register_best(scale, trained["run_id"])
    upscaled = upscale_bucket(upscale_input, output, "champion", UpscaleOptions(scale=scale))
    summary = {
        "patch_store": store, "n_patches": patches.n_patches, "run_id": trained["run_id"],
        "evaluation": trained["scores"], "registration": registration,
        "upscale_input": upscale_input, "output": output, "upscaled": upscaled["done"],
        "model": upscaled["model"], "champion": champion_reason(registration, shipped),
    }
    if demo:
        sr, bic = holdout_psnr(work / "holdout", Path(upscale_input), Path(output), scale)
        summary["holdout_psnr"] = {"srcnn": round(sr, 3), "bicubic": round(bic, 3)}
        summary["users_images"] = users_images(work, holdout, scale)
    logger.info("pipeline summary: %s", summary)
    return summary


if __name__ == "__main__":
    print(srcnn_pipeline())
