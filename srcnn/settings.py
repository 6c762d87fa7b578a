"""Environment settings (URIs, endpoints, credentials), read once at the edge.

Values come from environment variables prefixed `SRCNN_` (e.g. `SRCNN_MLFLOW_TRACKING_URI`)
or a `.env` file. S3 credentials follow the standard AWS variables (`AWS_ACCESS_KEY_ID`, ...),
which s3fs reads itself; only the endpoint is ours to pass on. Nothing here is ever logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SRCNN_", env_file=".env", extra="ignore")

    # Where the embedded defaults keep their state (SQLite file, artifacts, demo output).
    home: Path = Field(default_factory=lambda: Path.cwd())
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: str | None = None
    # S3-compatible endpoint (MinIO, moto, ...); falls back to AWS_ENDPOINT_URL.
    s3_endpoint_url: str | None = None
    # Attempts per S3 request (botocore's standard retry mode: jittered exponential backoff,
    # capped at 20 s): 10 ride out an endpoint that stops answering for about half a minute.
    s3_retry_attempts: int = Field(10, ge=1)
    # Prefect retries of a task that reads or writes storage or the tracking server, after its
    # first try, on transient errors (2, 4, 8 s apart, jittered; then 8 s): read again at each
    # failure, so it can only lower what the process started with.
    task_retries: int = Field(3, ge=0, le=10)
    dask_address: str | None = None
    # Workers of the LocalCluster started when no scheduler is given (None: one per core).
    dask_workers: int | None = Field(None, ge=1)
    # Patch stores larger than this are streamed into training instead of loaded whole.
    train_memory_budget_mb: int = Field(2048, ge=0)
    # How long training goes on while the tracking server does not answer (its records wait).
    tracking_outage_s: float = Field(600.0, gt=0)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    def mlflow_credentials(self) -> tuple[str, tuple[str, str] | None]:
        """(the tracking URI without credentials, (user, password) if an http(s) URI had
        them): MLflow takes them from MLFLOW_TRACKING_USERNAME/PASSWORD, so no URL it prints
        or records (run links, artifact URIs) carries the password."""
        uri = self.tracking_uri
        match = _USERINFO.match(uri)
        if not match or match["scheme"].lower() not in ("http://", "https://"):
            return uri, None  # a database URI keeps its credentials: SQLAlchemy reads them
        user, _, password = unquote(match["userinfo"]).partition(":")
        return match["scheme"] + uri[match.end():], (user, password)

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.home / "mlartifacts").resolve().as_uri()

    def storage_options(self, url: str) -> dict:
        """fsspec storage options for `url` (endpoint for s3://, nothing for local paths)."""
        if url.startswith(("s3://", "s3a://")):
            endpoint = self.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
            retries = {"config_kwargs": {"retries": {"max_attempts": self.s3_retry_attempts,
                                                     "mode": "standard"}}}
            return retries | ({"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {})
        return {}


def get_settings() -> Settings:
    """Read the environment now (not cached: tests and services may change it)."""
    return Settings()


_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:[^=&]*(?:password|passwd|pwd|secret|token|key|signature|credential))=)[^&#]*")
_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@]*)@", re.IGNORECASE)


def masked(url: str) -> str:
    """`url` fit to print or log: a password in it (`user:pw@host`) and secret-looking query
    values (`?password=`, `token=`, `X-Amz-Signature=` ...) become `***`."""
    match = _USERINFO.match(url)
    if match and ":" in match["userinfo"]:
        user = match["userinfo"].partition(":")[0]
        url = f"{match['scheme']}{user}:***@{url[match.end():]}"
    return _SECRET_QUERY.sub(r"\1***", url)
