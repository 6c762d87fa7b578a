"""Flow `train-srcnn`: train on a patch store, evaluate on benchmark sets, log to MLflow."""

from __future__ import annotations

from prefect import flow

from flows.datasets import default_eval_datasets
from srcnn.config import ModelConfig, TrainConfig
from srcnn.store import PatchStore
from tasks.training import evaluate, train_model


@flow(name="train-srcnn", log_prints=True)
def train_srcnn(store: str, model: ModelConfig = ModelConfig(),
                training: TrainConfig = TrainConfig(), eval_datasets: list[str] | None = None,
                run_name: str | None = None, probe_dataset: str | None = None,
                init_model: str | None = None) -> dict:
    """Returns the MLflow run id and its evaluation (mean PSNR/SSIM per benchmark set)."""
    scale = int(PatchStore(store).attrs["scale"])
    run_id = train_model(store, model, training, run_name, probe_dataset, init_model)
    datasets = eval_datasets if eval_datasets is not None else default_eval_datasets()
    if not datasets:
        raise ValueError("no evaluation datasets: pass eval_datasets or set SRCNN_EVAL_DATASETS")
    return evaluate(run_id, scale, datasets) | {"scale": scale}


if __name__ == "__main__":
    import sys

    print(train_srcnn(sys.argv[1]))
