"""MLflow at the edge: the client, experiments, runs' params and metrics, logged models.

Everything takes an explicit client and run id (never MLflow's hidden active run). Models are
logged as safetensors + config artifacts, so loading one executes no pickled code. The model
registry (champion policy, references) is `srcnn.registry`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.models import Model, ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

from srcnn import __version__
from srcnn.data.store.patch_store import PatchStore
from srcnn.models.files import PYFUNC_ARTIFACTS, LoadedModel, save_model
from srcnn.settings import Settings

log = logging.getLogger(__name__)

TRAIN_EXPERIMENT = "srcnn-train"
MODEL_ID_TAG = "model_id"  # on a run: its logged model (MLflow 3)
EVAL_DATASETS_TAG = "eval_datasets"  # on a run: the benchmark folders it was scored on (JSON)
EVAL_DEGRADATIONS_TAG = "eval_degradations"  # ... and the suite rows it was scored under (JSON)


def make_client(settings: Settings) -> MlflowClient:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri, credentials = settings.mlflow_credentials()
    if credentials:  # basic auth from MLflow's own variables, never from the URI it prints
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials
    # Set globally too: artifact helpers (download_artifacts) read the global URI.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# What the experiment holds, as MLflow classifies it (model training, not GenAI).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The MLflow UI's model-training view: its default view is GenAI's (a traces overview, and no
# model registry in the side bar) unless a link asks for this one.
TRAINING_VIEW = "workflowType=machine_learning"
# The per-epoch metrics: the run page's charts group metrics by the prefix before "/" and show
# these sections first, so the curves come before the single-value figures.
CURVES = "training"


def curve(key: str) -> str:
    """The name under which a per-epoch figure is logged (its chart sits with the curves)."""
    return f"{CURVES}/{key}"


def last_step(client: MlflowClient, run_id: str, key: str) -> int:
    """The last step (epoch) of a metric the run holds (0: none)."""
    return max((m.step for m in client.get_metric_history(run_id, key)), default=0)


def ui_links(base: str, experiment_id: str | None = None) -> dict[str, str]:
    """Links into the MLflow UI at `base` that open in its model-training view: the training
    runs (of the experiment, else the experiments list) and the model registry."""
    runs = f"/{experiment_id}/runs" if experiment_id is not None else ""
    return {"training runs": f"{base}/#/experiments{runs}?{TRAINING_VIEW}",
            "model registry": f"{base}/#/models?{TRAINING_VIEW}"}


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's source tags for a run made by this code: what ran it and, when the package is
    a git checkout, its commit, branch and remote (the UI links the run to them)."""
    from mlflow.utils import git_utils
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_BRANCH,
        MLFLOW_GIT_COMMIT,
        MLFLOW_GIT_REPO_URL,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
    )

    here = str(Path(__file__).resolve().parent)
    found = {MLFLOW_GIT_COMMIT: git_utils.get_git_commit(here),
             MLFLOW_GIT_BRANCH: git_utils.get_git_branch(here),
             MLFLOW_GIT_REPO_URL: git_utils.get_git_repo_url(here)}
    return {MLFLOW_SOURCE_NAME: entry_point, MLFLOW_SOURCE_TYPE: "LOCAL",
            **{k: v for k, v in found.items() if v}}


def ensure_experiment(client: MlflowClient, name: str, settings: Settings) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags=EXPERIMENT_KIND,
                                        artifact_location=f"{settings.artifact_root}/{name}")
    for key, value in EXPERIMENT_KIND.items():  # experiments made by older versions
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def log_metrics(client: MlflowClient, run_id: str, values: dict[str, float], step: int = 0,
                model_id: str | None = None, dataset: tuple[str, str] | None = None) -> None:
    """Metrics in one `log_batch` request; with `model_id` (and `dataset`, its name and
    digest) they are attached to that logged model too, where the registry UI shows them."""
    now = int(time.time() * 1000)
    name, digest = dataset or (None, None)
    client.log_batch(run_id, metrics=[
        Metric(key, float(value), now, step, model_id=model_id, dataset_name=name,
               dataset_digest=digest) for key, value in values.items()])


def log_eval_dataset(client: MlflowClient, run_id: str, folder: str, digest: str) -> None:
    """Record a benchmark folder as an evaluation input of the run (its name and digest)."""
    dataset = Dataset(Path(folder).name, digest, "local", json.dumps({"uri": str(folder)}))
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context",
                                                               "evaluation")])])


def log_params(client: MlflowClient, run_id: str, values: dict) -> None:
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in values.items()])


PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))  # MLflow "models from code"
PIP_REQUIREMENTS = ["torch", "numpy", "pillow", "safetensors", "pydantic",
                    f"srcnn-pipeline=={__version__}"]


def model_signature() -> ModelSignature:
    """One RGB image in (uint8, any height and width), the upscaled one out; the upscale
    options that cannot change a result's meaning as params, defaults from UpscaleOptions."""
    from srcnn.batch.job import UpscaleOptions

    image = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))])
    fields = UpscaleOptions.model_fields
    params = ParamSchema([ParamSpec("tile_size", "long", fields["tile_size"].default),
                          ParamSpec("precision", "string", fields["precision"].default)])
    return ModelSignature(inputs=image, outputs=image, params=params)


def _input_example() -> np.ndarray:
    ramp = np.arange(0, 240, 20, dtype=np.uint8)  # a 12 x 12 colour ramp
    grey = np.full((12, 12), 128, dtype=np.uint8)
    return np.stack([np.broadcast_to(ramp[:, None], grey.shape),
                     np.broadcast_to(ramp[None, :], grey.shape), grey], axis=-1)


@contextlib.contextmanager
def _pyfunc_args(loaded: LoadedModel):
    """The arguments of an MLflow pyfunc save for `loaded` (its weights and config written to
    a temporary folder as the model's artifacts)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_model(loaded.model, loaded.scale, tmp, loaded.metadata)
        yield {"python_model": PYFUNC_CODE, "signature": model_signature(),
               "input_example": _input_example(), "pip_requirements": PIP_REQUIREMENTS,
               "artifacts": {k: str(Path(tmp) / f) for k, f in PYFUNC_ARTIFACTS.items()}}


def save_pyfunc(loaded: LoadedModel, path: str) -> None:
    """Write `loaded` as an MLflow model folder (local `path`): what `srcnn export` ships."""
    with _pyfunc_args(loaded) as args:
        mlflow.pyfunc.save_model(path, **args)


def export_model(loaded: LoadedModel, url: str) -> None:
    """`save_pyfunc` to any fsspec URL (written locally, then copied; an existing folder is
    refused, as MLflow refuses it)."""
    from srcnn.storage import filesystem

    fs, path = filesystem(url)
    if fs.exists(path) and fs.ls(path):
        raise FileExistsError(f"export {url}: the folder exists and is not empty")
    if isinstance(fs, LocalFileSystem):
        save_pyfunc(loaded, path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_pyfunc(loaded, f"{tmp}/model")
        fs.put(f"{tmp}/model", path, recursive=True)


def model_tags(loaded: LoadedModel) -> dict[str, str]:
    """What the registry UI and `register-best` compare versions by."""
    config = loaded.model.config
    return {"scale": str(loaded.scale), "arch": config.arch, "filters": filters(config),
            "family": config.family, "macs_per_pixel": str(config.macs(loaded.scale))}


def filters(config) -> str:
    """The widths beside the kernels of `arch`: `28` (every layer), `64/32` (first/others);
    a gated pair's, each net's."""
    if config.family == "gated":
        return f"{filters(config.clean)} | {filters(config.robust)}"
    return f"{config.n1}" if config.n1 == config.n2 else f"{config.n1}/{config.n2}"


def cost_table(tags: dict[str, str]) -> str:
    """The version's net and its cost, as the Markdown table its description leads with."""
    return ("| family | arch | filters | multiply-adds per output pixel |\n|---|---|---|---|\n"
            f"| {tags.get('family', 'srcnn')} | {tags.get('arch', '?')} | "
            f"{tags.get('filters', '?')} | {tags.get('macs_per_pixel', '?')} |")


def log_model(client: MlflowClient, run_id: str, loaded: LoadedModel) -> str:
    """Log `loaded` as the run's MLflow model (an MLflow 3 logged model: a pyfunc from code,
    safetensors weights and config as artifacts, a signature and an input example); returns
    its model id. The run's metrics logged so far are attached to it too."""
    mlflow.set_tracking_uri(client.tracking_uri)  # Model.log reads the global tracking URI
    params = {f"model.{k}": str(v) for k, v in loaded.model.config.model_dump().items()}
    # Created here, in the run's experiment (Model.log alone would put it in the default one).
    logged = client.create_logged_model(client.get_run(run_id).info.experiment_id, "model",
                                        run_id, model_tags(loaded), params, "srcnn")
    with _pyfunc_args(loaded) as args:
        info = Model.log(None, mlflow.pyfunc, name="model", run_id=run_id,
                         model_id=logged.model_id, **args)
    client.set_tag(run_id, MODEL_ID_TAG, info.model_id)
    return info.model_id


def run_facts(client: MlflowClient, run_id: str) -> dict:
    """What a training run records about the model it made, for the model's own config (what
    `srcnn export` writes beside the weights): cost, training time and steps, the held-out
    selection figure, device and precision, and the training data (its patch store's source,
    images and degradation, when the store is still readable)."""
    run = client.get_run(run_id)
    metrics, tags = run.data.metrics, run.data.tags
    facts = {
        "run_id": run_id,
        "macs_per_pixel": int(metrics["macs_per_pixel"]) if "macs_per_pixel" in metrics else None,
        "trained_for_s": round(metrics["train_seconds"], 1) if "train_seconds" in metrics else None,
        "epochs": last_step(client, run_id, curve("train_loss")),
        "best_epoch": int(metrics["best_epoch"]) if "best_epoch" in metrics else None,
        "held_out_psnr": next((round(metrics[k], 3) for k in ("best_held_out_psnr",
                                                              "best_val_psnr") if k in metrics),
                              None),
        "selection": {"held_out_images": "whole-image Y PSNR of the patch store's held-out "
                                         "images by the protocol; the best epoch's weights",
                      "val_patches": "PSNR of the patch store's validation patches; the best "
                                     "epoch's weights"}.get(tags.get("selected_by", "")),
        "device": tags.get("device"), "precision": tags.get("precision"),
        "preset": tags.get("preset"), "patch_store": tags.get("patch_store"),
    }
    if store := tags.get("patch_store"):
        try:
            attrs, sources = (patches := PatchStore(store)).attrs, patches.sources
        except (OSError, ValueError, KeyError) as exc:
            log.warning("run %s: patch store %s not readable (%s)", run_id, store, exc)
        else:
            held_out = len({s.key for s in sources if s.split == "val"})
            facts["training_data"] = (f"{attrs.source_url}: {attrs.n_images} images "
                                      f"({held_out} held out), {attrs.n_patches} patches")
            facts["degradation"] = attrs.degradation.model_dump(mode="json")  # its LR images
    return {k: v for k, v in facts.items() if v is not None}
