"""MLflow at the edge: runs, metrics, artifacts, the model registry and model references.

Everything takes an explicit client and run id (never MLflow's hidden active run). Models are
logged as safetensors + config artifacts, so loading one executes no pickled code. Registered
models are per scale (`srcnn-x3`); the `champion` alias moves only to a better version.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from srcnn.settings import Settings, get_settings
from srcnn.spec import ModelSpec, check_scale, is_local_ref
from srcnn.train import EpochReport
from srcnn.weights import (
    LoadedModel,
    load_local,
    load_model,
    model_spec,
    save_model,
)

log = logging.getLogger(__name__)

TRAIN_EXPERIMENT = "srcnn-train"
CHAMPION, CHALLENGER = "champion", "challenger"
SELECTION_TAG = "selection_psnr"


def registered_name(scale: int) -> str:
    return f"srcnn-x{scale}"


def make_client(settings: Settings) -> MlflowClient:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Set globally too: artifact helpers (download_artifacts) read the global URI.
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def ensure_experiment(client: MlflowClient, name: str, settings: Settings) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=f"{settings.artifact_root}/{name}")


class MetricLogger:
    """The training loop's `on_epoch` callback, logging to one run by id."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def __call__(self, r: EpochReport, model=None) -> None:
        for key in ("train_loss", "val_psnr", "lr", "elapsed_s", "patches_per_s"):
            self.client.log_metric(self.run_id, key, float(getattr(r, key)), step=r.epoch)
        if r.rolled_back:  # diverged this epoch: went back to the best one, lr halved
            self.client.log_metric(self.run_id, "rolled_back", 1.0, step=r.epoch)


def log_model(client: MlflowClient, run_id: str, loaded: LoadedModel) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        save_model(loaded.model, loaded.scale, tmp, loaded.metadata)
        client.log_artifacts(run_id, tmp, "model")


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    promoted: bool
    selection_psnr: float
    previous_champion: str | None
    previous_psnr: float | None


def champion_version(client: MlflowClient, name: str, alias: str = CHAMPION) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def comparable_scores(new: dict[str, str], old: dict[str, str], scale: int,
                      selection: float) -> tuple[float, float]:
    """(new, old) mean PSNR over the benchmark sets both versions carry (`set5_x3_psnr`, ...);
    the stored selection PSNR when they share none."""
    suffix = f"_x{scale}_psnr"
    shared = sorted(k for k in new if k.endswith(suffix) and k in old
                    and not k.endswith("bicubic_psnr") and k != "val_psnr")
    if shared:
        return (sum(float(new[k]) for k in shared) / len(shared),
                sum(float(old[k]) for k in shared) / len(shared))
    return selection, float(old.get(SELECTION_TAG, "-inf"))


def register(client: MlflowClient, run_id: str, scale: int, selection: float,
             tags: dict[str, str], description: str) -> Registration:
    """Register the run's model; move `champion` to it only if it beats the current one."""
    name = registered_name(scale)
    try:
        client.create_registered_model(name, description=f"SRCNN x{scale} (Y channel)")
    except MlflowException:
        pass  # already exists
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:  # registering the same run twice reuses its version
        mv = existing[0]
        log.info("run %s is already %s v%s", run_id, name, mv.version)
    else:
        mv = client.create_model_version(
            name, source=f"{client.get_run(run_id).info.artifact_uri}/model", run_id=run_id,
            tags={**tags, SELECTION_TAG: f"{selection:.4f}"}, description=description,
        )
    current = champion_version(client, name)
    previous = None
    if current is not None:  # compare on the benchmark sets both were scored on
        selection, previous = comparable_scores(tags, current.tags, scale, selection)
    if current is not None and str(current.version) == str(mv.version):
        return Registration(name, mv.version, False, selection, current.version, previous)
    promoted = current is None or (current.version != mv.version and selection > previous)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
        log.info("%s v%s is the new champion (%.3f dB)", name, mv.version, selection)
    else:
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
        log.info("%s v%s (%.3f dB) does not beat champion v%s (%.3f dB)", name, mv.version,
                 selection, current.version, previous)
    return Registration(name, mv.version, promoted, selection,
                        current.version if current else None, previous)


def download_model(client: MlflowClient, uri: str) -> LoadedModel:
    """Load a `models:/name@alias`, `models:/name/version` or `runs:/id/model` model.

    An alias is resolved to its version first, and that version is what is downloaded and
    recorded: a promotion in between cannot mix two versions.
    """
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if uri.startswith("models:/") and alias:
        uri = f"models:/{name}/{client.get_model_version_by_alias(name, alias).version}"
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        return load_model(local, source=uri)


def resolve_model(ref: str, scale: int, client: MlflowClient | None) -> LoadedModel:
    """A model reference: `champion`/`challenger` (registry alias), `pretrained`
    (shipped weights), a `models:/` URI, or a model folder (path or URL)."""
    if is_local_ref(ref):
        return load_local(ref, scale)
    if ref in (CHAMPION, CHALLENGER):
        ref = f"models:/{registered_name(scale)}@{ref}"
    if client is None:
        raise ValueError(f"model {ref}: needs an MLflow client")
    try:
        loaded = download_model(client, ref)
    except MlflowException as exc:
        raise LookupError(f"model {ref}: not found in the registry ({exc.message})") from exc
    check_scale(ref, loaded.scale, scale)
    return loaded


def resolve_spec(ref: str, scale: int) -> ModelSpec:
    """A reference as one concrete model in bytes (`champion` -> `models:/srcnn-x3/4`, resolved
    once); seeds an empty registry with the shipped weights first."""
    settings = get_settings()
    client = None if is_local_ref(ref) else make_client(settings)
    if ref == CHAMPION:
        seed_registry(client, settings, scale)
    return model_spec(resolve_model(ref, scale, client))


def seed_registry(client: MlflowClient, settings: Settings, scale: int) -> Registration | None:
    """Register the shipped weights as the first champion when the registry is empty."""
    name = registered_name(scale)
    if champion_version(client, name) is not None:
        return None
    try:
        loaded = load_local("pretrained", scale)
    except FileNotFoundError:
        log.warning("no shipped weights for x%d: registry %s stays empty", scale, name)
        return None
    exp_id = ensure_experiment(client, TRAIN_EXPERIMENT, settings)
    run = client.create_run(exp_id, run_name=f"pretrained-x{scale}", tags={"source": "pretrained"})
    log_model(client, run.info.run_id, loaded)
    client.set_terminated(run.info.run_id)
    selection = float(loaded.metadata.get(SELECTION_TAG, float("-inf")))
    tags = {"source": "pretrained"}
    for row in loaded.metadata.get("evaluation", []):
        tags[f"{row['dataset'].lower()}_x{scale}_psnr"] = f"{row['psnr']:.4f}"
        tags[f"{row['dataset'].lower()}_x{scale}_ssim"] = f"{row['ssim']:.4f}"
    return register(client, run.info.run_id, scale, selection, tags,
                    "Weights shipped with the package (seeded into an empty registry).")
