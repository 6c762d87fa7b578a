"""One training run, recorded in MLflow: the unit that the `train-model` task runs locally or
ships to a Dask GPU worker. It takes an MLflow client from the settings of the process it runs
in (never MLflow's hidden active run) and imports neither Prefect nor MLflow itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from srcnn import __version__
from srcnn.cluster import current_worker
from srcnn.config import ModelConfig, TrainConfig
from srcnn.data.loader import training_data
from srcnn.data.store.patch_store import PatchStore, input_name
from srcnn.evaluation.benchmark import HeldOutImages, TimeToQuality
from srcnn.evaluation.metrics import FSRCNN_PSNR, PAPER_PSNR
from srcnn.models.build import build_net
from srcnn.models.files import LoadedModel
from srcnn.registry.resolve import resolve_model
from srcnn.settings import get_settings, masked
from srcnn.tracking.buffer import TrackingBuffer
from srcnn.tracking.runs import (
    TRAIN_EXPERIMENT,
    curve,
    ensure_experiment,
    filters,
    last_step,
    log_metrics,
    log_model,
    log_params,
    make_client,
    source_tags,
)
from srcnn.training import plots
from srcnn.training.checkpoint import (
    RESUME_TAG,
    RunCheckpoints,
    latest_checkpoint,
    resume_key,
    unfinished_run,
)
from srcnn.training.loop import Checkpoints, EpochReport, train

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class MetricLogger:
    """The training loop's `on_epoch` callback, logging to one run by id through the tracking
    buffer (the loop never waits on the server). Epochs up to `skip_through` are not logged
    again: a resumed run re-trains the epochs after its checkpoint that the run already holds."""

    def __init__(self, client: MlflowClient, run_id: str, buffer: TrackingBuffer,
                 skip_through: int = 0):
        self.client, self.run_id, self.buffer, self.skip_through = (client, run_id, buffer,
                                                                    skip_through)

    def __call__(self, r: EpochReport, model=None, **extra: float) -> None:
        """One request per epoch: the epoch's figures and any `extra` ones."""
        self.buffer.check()  # a tracking outage past its limit stops the training here
        if r.epoch <= self.skip_through:
            return
        values = {key: float(getattr(r, key)) for key in
                  ("train_loss", "val_psnr", "lr", "elapsed_s", "patches_per_s")} | extra
        if r.held_out_psnr is not None:
            values["held_out_psnr"] = r.held_out_psnr
        if r.rolled_back:  # diverged this epoch: went back to the best one, lr halved
            values["rolled_back"] = 1.0
        self.buffer.submit(f"epoch {r.epoch}'s metrics", log_metrics, self.client, self.run_id,
                           {curve(k): v for k, v in values.items()}, step=r.epoch)


def _flat(prefix: str, cfg) -> dict[str, str]:
    return {f"{prefix}.{k}": str(v) for k, v in cfg.model_dump().items()}


def _resumable(client: MlflowClient, experiment: str, key: str) -> tuple[str | None, dict | None]:
    """(run id, checkpoint) of an unfinished run of the same training, if it has one."""
    old = unfinished_run(client, experiment, key)
    state = latest_checkpoint(client, old.info.run_id) if old is not None else None
    if state is None:
        return None, None
    run_id = old.info.run_id
    client.update_run(run_id, status="RUNNING")
    resumes = int(old.data.tags.get("resumed", "0")) + 1
    client.set_tag(run_id, "resumed", str(resumes))
    log.warning("run %s: resuming from its checkpoint of epoch %d (%.0f s of training done; "
                "resume %d)", run_id, state["epoch"], state["elapsed_s"], resumes)
    return run_id, state


def initial_net(model: ModelConfig, scale: int, seed: int) -> torch.nn.Module:
    """The net a run starts from, initialised by `seed` alone (TrainConfig.seed seeds the
    initialisation too), not by whatever drew from torch's generator before in this process."""
    torch.manual_seed(seed)
    return build_net(model, scale)


def train_run(store: str, model: ModelConfig, training: TrainConfig, run_name: str | None = None,
              probe_dataset: str | None = None, init_model: str | None = None,
              tags: dict[str, str] | None = None) -> str:
    """Train on the store's train split, select on its val split; returns the MLflow run id.

    With `probe_dataset` (e.g. Set5), its PSNR is logged every epoch (`probe_psnr`) with the
    wall time at which it first reaches the paper's number (`time_to_paper_s`; for the espcn
    family FSRCNN's, `time_to_fsrcnn_s`). A re-parameterised net (`expand`) is collapsed before
    it is evaluated, logged and shipped: its model is the plain net it computes.
    With `init_model` (any model reference), training starts from those weights (fine-tuning).
    Checkpoints go to the run's artifacts every `training.checkpoint_minutes`; with
    `training.resume`, an unfinished run of the same training (`srcnn.training.checkpoint`)
    is continued from its last checkpoint instead of starting a new one. Per-epoch figures go
    through a `TrackingBuffer`: a tracking server that is away delays them, not the training.
    """
    settings = get_settings()
    client = make_client(settings)
    patches = PatchStore(store)
    scale = patches.attrs.scale
    tags = {
        "scale": str(scale),
        "arch": model.arch,
        "filters": filters(model),
        "family": model.family,
        "macs_per_pixel": str(model.macs(scale)),
        "code_version": __version__,
        "patch_store": store,
        "patch_store_fingerprint": patches.attrs.fingerprint,
        "dask_worker": current_worker() or "none",
        **source_tags("srcnn train-srcnn"),
        **(tags or {}),
        RESUME_TAG: resume_key(patches.attrs.fingerprint, model, training, run_name, init_model),
    }
    experiment = ensure_experiment(client, TRAIN_EXPERIMENT, settings)
    run_id, state = _resumable(client, experiment, tags[RESUME_TAG]) if training.resume else (
        None, None)
    if run_id is None:
        run_id = client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
        log_params(client, run_id, {**_flat("model", model), **_flat("train", training),
                                    "patch_size": patches.attrs.patch_size,
                                    "stride": patches.attrs.stride, "scale": scale,
                                    "n_patches": len(patches)})
    buffer = TrackingBuffer(masked(settings.mlflow_credentials()[0]), settings.tracking_outage_s)
    saver = RunCheckpoints(client, run_id, buffer)
    try:
        # Whole in memory when the store fits the budget, else streamed with prefetch.
        budget = settings.train_memory_budget_mb * 2**20
        inputs = input_name(model.family)
        train_set = training_data(patches, "train", training.batch_size, seed=training.seed,
                                  memory_budget=budget, inputs=inputs)
        val_set = training_data(patches, "val", 512, seed=training.seed, memory_budget=budget,
                                inputs=inputs)
        if len(val_set) == 0:  # a one-image collection: select on the training patches
            val_set = train_set
        log.info("training %s x%d on %d patches (%d val, %s), torch threads %d", model.name,
                    scale, len(train_set), len(val_set), type(train_set).__name__,
                    torch.get_num_threads())
        client.set_tag(run_id, "training_input", type(train_set).__name__)
        metrics = MetricLogger(client, run_id, buffer,
                               last_step(client, run_id, curve("train_loss")) if state else 0)
        bar, reference = (("fsrcnn", FSRCNN_PSNR) if model.family == "espcn"
                          else ("paper", PAPER_PSNR))
        probe = TimeToQuality(probe_dataset, scale, reference.get(Path(probe_dataset).name, {})
                              .get(scale)) if probe_dataset else None

        def on_epoch(report, net):
            metrics(report, **({"probe_psnr": probe(net, report.elapsed_s)} if probe else {}))

        net = initial_net(model, scale, training.seed)
        if init_model and state is None:  # a resumed run starts from its checkpoint
            if model.expand:
                raise ValueError(f"init model {init_model}: shipped and logged nets are collapsed;"
                                 f" fine-tune them with --expand 0 (this run asks expand "
                                 f"{model.expand})")
            start = resolve_model(init_model, scale, client)
            if start.model.config != model:
                raise ValueError(f"init model {init_model}: its config {start.model.config} "
                                 f"differs from {model}")
            net.load_state_dict(start.model.state_dict())
            client.set_tag(run_id, "init_model", start.source)
        try:
            held_out = (HeldOutImages.of_store(patches)
                        if training.selection == "held_out_images" else None)
            selected_by = "held_out_images" if held_out else "val_patches"
            if selected_by != training.selection:
                log.warning("run %s: no readable held-out images: the validation patches "
                            "select the best epoch", run_id)
            client.set_tag(run_id, "selected_by", selected_by)
            result = train(net, train_set, val_set, training, on_epoch, held_out,
                           Checkpoints(saver, training.checkpoint_minutes * 60, state))
        finally:
            for data in (train_set, val_set):
                data.close()
        buffer.close(timeout_s=60)  # every epoch's figures recorded, in order
        if probe and probe.reached_at_s is not None:
            client.log_metric(run_id, f"time_to_{bar}_s", probe.reached_at_s)
        result.model = result.model.collapse() if model.expand else result.model
        best = "best_held_out_psnr" if selected_by == "held_out_images" else "best_val_psnr"
        log_metrics(client, run_id, {best: result.best_score, "best_epoch": result.best_epoch,
                                     "train_seconds": result.elapsed_s,
                                     "macs_per_pixel": model.macs(scale)})
        client.set_tag(run_id, "device", result.device)
        client.set_tag(run_id, "precision", result.precision)
        log_model(client, run_id, LoadedModel(result.model, scale, run_id,
                                              {"arch": model.arch, "run_id": run_id}))
        client.log_image(run_id, plots.learning_curves(result.history, training.loss), "plots/learning_curves.png")
        client.log_image(run_id, plots.filter_grid(result.model), "plots/filters.png")
        saver.prune(0)  # the model is logged: the checkpoints have served
    except BaseException as exc:
        try:  # left to resume from: its checkpoints stay
            client.set_terminated(run_id, "FAILED")
        except Exception as also:
            log.warning("run %s: not marked failed (%s) after %r", run_id, also, exc)
        raise
    finally:
        saver.close()
    client.set_terminated(run_id, "FINISHED")
    log.info("run %s: best %s %.3f dB at epoch %d", run_id, selected_by, result.best_score,
                result.best_epoch)
    return run_id
