"""Shared fixtures: the real benchmark sets, a Prefect test server, MLflow on temporary SQLite."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "srcnn")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        pytest.fail(f"benchmark set {path} is missing: tests read ../shared/datasets")
    return path


@pytest.fixture(scope="session")
def set5() -> Path:
    return dataset("Set5")


@pytest.fixture(scope="session")
def set14() -> Path:
    return dataset("Set14")


@pytest.fixture(scope="session")
def t91() -> Path:
    return dataset("T91")


@pytest.fixture(scope="session")
def prefect_server():
    """A real (temporary) Prefect API server for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def mlflow_home(tmp_path, monkeypatch, set5) -> Path:
    """MLflow on a fresh SQLite file and artifact folder; Set5 as the evaluation set."""
    home = tmp_path / "mlflow"
    home.mkdir()
    monkeypatch.setenv("SRCNN_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("SRCNN_MLFLOW_ARTIFACT_ROOT", (home / "artifacts").as_uri())
    monkeypatch.setenv("SRCNN_EVAL_DATASETS", str(set5))
    return home


@pytest.fixture
def small_collection(tmp_path, t91) -> Path:
    """Six real T91 photographs in a folder of their own."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("t1.png", "t2.png", "t3.png", "t10.png", "t20.png", "t30.png"):
        shutil.copy(t91 / name, folder / name)
    return folder
