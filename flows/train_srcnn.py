"""Flow `train-srcnn`: train on a patch store, evaluate on benchmark sets, log to MLflow."""

from __future__ import annotations

from prefect import flow

from flows.datasets import default_eval_datasets, resolve_dataset, resolve_datasets
from srcnn.config import ModelOverrides, TrainOverrides
from srcnn.data.degradation import SuiteName
from srcnn.data.store.patch_store import PatchStore
from srcnn.presets import PresetName, training_settings
from tasks.training import evaluate, train_model


@flow(name="train-srcnn", log_prints=True)
def train_srcnn(store: str, model: ModelOverrides = ModelOverrides(),
                training: TrainOverrides = TrainOverrides(), eval_datasets: list[str] | None = None,
                run_name: str | None = None, probe_dataset: str | None = None,
                init_model: str | None = None, preset: PresetName | None = None,
                degradations: list[SuiteName] | None = None) -> dict:
    """Returns the MLflow run id and its evaluation (mean PSNR/SSIM per benchmark set and
    degradation of the suite: `degradations`, default all of them).

    The net and training settings are `preset`'s (or the configs' defaults, the paper's 9-5-5)
    with the fields given in `model` and `training` replaced (a whole config replaces all).
    """
    net, settings = training_settings(preset, model, training)
    scale = PatchStore(store).attrs.scale
    datasets = (resolve_datasets(eval_datasets) if eval_datasets is not None  # before training
                else default_eval_datasets())
    if not datasets:
        raise ValueError("no evaluation datasets: pass eval_datasets or set SRCNN_EVAL_DATASETS")
    probe = resolve_dataset(probe_dataset) if probe_dataset else None
    run_id = train_model(store, net, settings, run_name, probe, init_model,
                         {"preset": preset or "none"})
    return evaluate(run_id, scale, datasets, degradations) | {"scale": scale}


if __name__ == "__main__":
    import sys

    print(train_srcnn(sys.argv[1]))
