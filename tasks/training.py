"""Tasks: train a model from a patch store and evaluate it, logging both to MLflow."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from prefect import get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact

from srcnn.cluster import run_on_gpu_worker
from srcnn.config import ModelConfig, TrainConfig
from srcnn.data.color import luma
from srcnn.data.degradation import SUITE, bicubic_upscale, lr_pair
from srcnn.evaluation.benchmark import evaluate_model, format_table, metric_key
from srcnn.evaluation.metrics import dataset_digest, list_dataset, psnr_y
from srcnn.evaluation.ranking import Row, ranking_figures
from srcnn.inference.tiling import prepare, upscale_rgb
from srcnn.registry.resolve import resolve_model
from srcnn.settings import get_settings
from srcnn.tracking.runs import (
    EVAL_DATASETS_TAG,
    EVAL_DEGRADATIONS_TAG,
    MODEL_ID_TAG,
    log_eval_dataset,
    log_metrics,
    make_client,
)
from srcnn.training import plots
from srcnn.training.run import train_run
from tasks import NETWORK_RETRIES, is_transient


# A crash (killed worker, lost connection, tracking outage) is retried and resumes from the
# last checkpoint; bad configuration or input fails at once.
@task(name="train-model", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient)
def train_model(store: str, model: ModelConfig, training: TrainConfig,
                run_name: str | None = None, probe_dataset: str | None = None,
                init_model: str | None = None, tags: dict[str, str] | None = None) -> str:
    """One training run (see `srcnn.training.run.train_run`); on a Dask cluster with GPU
    workers (`SRCNN_DASK_ADDRESS`) it runs on one of them, else here, on CUDA if present.
    A crash is retried twice, each retry resuming the run from its last checkpoint (a dead
    Dask worker's task is also rescheduled by Dask itself, and resumes the same way)."""
    tags = {**(tags or {}), "prefect_flow_run_id": str(runtime.flow_run.id or "")}
    run_id = run_on_gpu_worker(get_settings().dask_address, train_run, store, model, training,
                               run_name, probe_dataset, init_model, tags)
    get_run_logger().info("training run %s finished", run_id)
    return run_id


@task(name="evaluate", **NETWORK_RETRIES)
def evaluate(run_id: str, scale: int, datasets: list[str],
             degradations: list[str] | None = None) -> dict:
    """Score the run's model on benchmark folders, their LR images made by each of
    `degradations` (default: the whole suite); log metrics per row, the ranking figures
    (`srcnn.evaluation.ranking`), the table and sample crops."""
    logger = get_run_logger()
    client = make_client(get_settings())
    model_id = client.get_run(run_id).data.tags.get(MODEL_ID_TAG)
    ref = f"models:/{model_id}" if model_id else f"runs:/{run_id}/model"
    loaded = resolve_model(ref, scale, client)
    degradations = list(degradations or SUITE)
    scores = evaluate_model(loaded.model, datasets, scale, degradations=degradations)
    table = format_table(scores)
    digests = {Path(folder).name: dataset_digest(folder) for folder in datasets}
    for folder in datasets:
        log_eval_dataset(client, run_id, folder, digests[Path(folder).name])
    for s in scores:  # per set and degradation, on the run and on its logged model
        log_metrics(client, run_id, {
            metric_key(s.dataset, scale, what, s.degradation): value
            for what, value in (("psnr", s.psnr), ("ssim", s.ssim),
                                ("bicubic_psnr", s.bicubic_psnr))
        }, model_id=model_id, dataset=(s.dataset, digests[s.dataset]))
    figures = ranking_figures({(s.dataset, s.degradation): Row(s.psnr, s.bicubic_psnr)
                               for s in scores})
    log_metrics(client, run_id, figures, model_id=model_id)
    client.set_tag(run_id, EVAL_DATASETS_TAG, json.dumps([str(d) for d in datasets]))
    client.set_tag(run_id, EVAL_DEGRADATIONS_TAG, json.dumps(degradations))
    client.log_text(run_id, table, "evaluation/table.md")
    _log_crops(client, run_id, loaded.model, datasets, scale)
    create_markdown_artifact(table, key=f"evaluation-x{scale}", description=f"run {run_id}")
    logger.info("evaluation of run %s:\n%s", run_id, table)
    return {"run_id": run_id, "table": table, "scores": [s.summary() for s in scores],
            **figures}


def _log_crops(client, run_id: str, model, datasets: list[str], scale: int) -> None:
    """HR / bicubic / SR centre crops for the first image of each set, each labelled with its
    whole image's Y-PSNR by the protocol."""
    net = prepare(model, "cpu")
    for directory in datasets:
        path = list_dataset(directory)[0]
        with Image.open(path) as img:
            hr, lr = lr_pair(img, scale)
        outputs = {"bicubic": bicubic_upscale(lr, scale),
                   f"SR ({model.config.name})": upscale_rgb(net, lr, scale)}
        panels = {"HR": hr} | {f"{k}: {psnr_y(luma(hr), luma(v), scale):.2f} dB": v
                               for k, v in outputs.items()}
        panels = {k: plots.centre_crop(v, 128) for k, v in panels.items()}
        figure = plots.comparison(panels, f"{Path(directory).name}/{path.name} x{scale}, "
                                          "centre crops")
        client.log_image(run_id, figure, f"plots/crops_{Path(directory).name}.png")
