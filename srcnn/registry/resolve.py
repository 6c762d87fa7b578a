"""Registry references resolved to one pinned version: `champion` -> `models:/srcnn-x3/7`,
read once from that version's files into a ModelSpec (the same bytes and digest as the folder
it was logged from). Local references (shipped weights, folders) are `srcnn.models.reference`'s.
"""

from __future__ import annotations

import tempfile

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from srcnn.models.files import LoadedModel, ModelSpec, read_spec
from srcnn.models.reference import ALIASES, ModelRef, check_scale, read_local

CHAMPION, CHALLENGER = ALIASES


def registered_name(scale: int) -> str:
    return f"srcnn-x{scale}"


def pin(client: MlflowClient, uri: str) -> str:
    """`models:/name@alias` as the version the alias points to now (`models:/name/7`); any
    other URI as it is. What is downloaded and recorded is that version: a promotion in
    between cannot mix two versions."""
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if uri.startswith("models:/") and alias:
        return f"models:/{name}/{client.get_model_version_by_alias(name, alias).version}"
    return uri


def download_spec(client: MlflowClient, uri: str) -> ModelSpec:
    """A `models:/name@alias`, `models:/name/version`, `models:/ID` or `runs:/id/model` model,
    pinned (`pin`) and read from its files."""
    uri = pin(client, uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        return read_spec(local, source=uri)


def download_model(client: MlflowClient, uri: str) -> LoadedModel:
    return download_spec(client, uri).load()


def resolve(ref: ModelRef | str, scale: int, client: MlflowClient | None) -> ModelSpec:
    """Any model reference as one concrete model in bytes, checked against `scale`."""
    ref = ModelRef.parse(ref)
    if ref.local:
        return read_local(ref, scale)
    if client is None:
        raise ValueError(f"model {ref}: needs an MLflow client")
    uri = ref.registry_uri(scale)
    try:
        spec = download_spec(client, uri)
    except MlflowException as exc:
        raise LookupError(f"model {uri}: not found in the registry ({exc.message})") from exc
    check_scale(uri, spec.scale, scale)
    return spec


def resolve_model(ref: ModelRef | str, scale: int, client: MlflowClient | None) -> LoadedModel:
    """`resolve`, built."""
    return resolve(ref, scale, client).load()
