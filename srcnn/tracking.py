"""MLflow at the edge: runs, metrics, artifacts, the model registry and model references.

Everything takes an explicit client and run id (never MLflow's hidden active run). Models are
logged as safetensors + config artifacts, so loading one executes no pickled code. Registered
models are per scale (`srcnn-x3`); the `champion` alias moves only to a better version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

from srcnn import __version__
from srcnn.evaluation import evaluate_model, metric_key
from srcnn.settings import Settings, get_settings
from srcnn.spec import PYFUNC_ARTIFACTS, ModelSpec, check_scale, is_local_ref
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
MODEL_ID_TAG = "model_id"  # on a run: its logged model (MLflow 3)
EVAL_DATASETS_TAG = "eval_datasets"  # on a run: the benchmark folders it was scored on (JSON)


def registered_name(scale: int) -> str:
    return f"srcnn-x{scale}"


def make_client(settings: Settings) -> MlflowClient:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri, credentials = settings.mlflow_credentials()
    if credentials:  # basic auth from MLflow's own variables, never from the URI it prints
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials
    # Set globally too: artifact helpers (download_artifacts) read the global URI.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, settings: Settings) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=f"{settings.artifact_root}/{name}")


class MetricLogger:
    """The training loop's `on_epoch` callback, logging to one run by id."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def __call__(self, r: EpochReport, model=None, **extra: float) -> None:
        """One request per epoch: the epoch's figures and any `extra` ones."""
        values = {key: float(getattr(r, key)) for key in
                  ("train_loss", "val_psnr", "lr", "elapsed_s", "patches_per_s")} | extra
        if r.rolled_back:  # diverged this epoch: went back to the best one, lr halved
            values["rolled_back"] = 1.0
        log_metrics(self.client, self.run_id, values, step=r.epoch)


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
    from srcnn.upscale import UpscaleOptions

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


# MLflow asks for type hints on `predict`; with them it would infer its own signature in place
# of the tensor signature above.
_NO_HINTS = "Add type hints to the `predict` method"


@contextlib.contextmanager
def _pyfunc_args(loaded: LoadedModel):
    """The arguments of an MLflow pyfunc save for `loaded` (its weights and config written to
    a temporary folder as the model's artifacts), with MLflow's type-hint warning silenced."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", _NO_HINTS)
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
    return {"scale": str(loaded.scale), "arch": config.arch, "family": config.family,
            "macs_per_pixel": str(config.macs(loaded.scale))}


def cost_table(tags: dict[str, str]) -> str:
    """The version's net and its cost, as the Markdown table its description leads with."""
    return ("| family | arch | multiply-adds per output pixel |\n|---|---|---|\n"
            f"| {tags.get('family', 'srcnn')} | {tags.get('arch', '?')} | "
            f"{tags.get('macs_per_pixel', '?')} |")


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
        run = client.get_run(run_id)
        model_id = run.data.tags.get(MODEL_ID_TAG)  # runs from before MLflow models: a folder
        source = f"models:/{model_id}" if model_id else f"{run.info.artifact_uri}/model"
        mv = client.create_model_version(
            name, source=source, run_id=run_id, model_id=model_id,
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


def score_on(client: MlflowClient, version: ModelVersion, datasets: list[str],
             scale: int) -> list[str]:
    """Score a registered version on the benchmark folders it has no tags for yet and record
    them as its tags (`holdout_x3_psnr`, ...), so that a challenger scored there is compared
    with it on the same images, never on different sets. Returns the sets it was scored on."""
    missing = [d for d in datasets if metric_key(Path(d).name, scale) not in version.tags]
    if not missing:
        return []
    loaded = download_model(client, f"models:/{version.name}/{version.version}")
    for s in evaluate_model(loaded.model, missing, scale):
        for what, value in (("psnr", s.psnr), ("ssim", s.ssim)):
            client.set_model_version_tag(version.name, version.version,
                                         metric_key(s.dataset, scale, what), f"{value:.4f}")
    log.info("%s v%s scored on %s for a like-for-like comparison", version.name,
             version.version, ", ".join(Path(d).name for d in missing))
    return missing


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
    tags = {"source": "pretrained", **model_tags(loaded)}
    for row in loaded.metadata.get("evaluation", []):
        for what in ("psnr", "ssim"):
            tags[metric_key(row["dataset"], scale, what)] = f"{row[what]:.4f}"
    return register(client, run.info.run_id, scale, selection, tags,
                    "Weights shipped with the package (seeded into an empty registry).\n\n"
                    + cost_table(tags))


def shipped_version(client: MlflowClient, scale: int) -> str | None:
    """The registered version that holds the shipped weights, if any."""
    found = client.search_model_versions(
        f"name = '{registered_name(scale)}' and tags.source = 'pretrained'")
    return str(found[0].version) if found else None
