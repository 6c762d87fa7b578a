"""Model references resolved to one concrete model: registry aliases (`champion` ->
`models:/srcnn-x3/7`), `models:/` and `runs:/` URIs, shipped weights, model folders."""

from __future__ import annotations

import tempfile

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from srcnn.models.spec import check_scale, is_local_ref
from srcnn.models.weights import LoadedModel, load_local, load_model

CHAMPION, CHALLENGER = "champion", "challenger"


def registered_name(scale: int) -> str:
    return f"srcnn-x{scale}"


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
