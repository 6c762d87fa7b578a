"""Shared fixtures: the real benchmark sets, a Prefect test server, MLflow on temporary SQLite."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flows import prefect_defaults

prefect_defaults()  # as the CLI does, before any test module imports prefect

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "srcnn")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

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


@pytest.fixture(scope="module")
def dask_cluster():
    """A real Dask LocalCluster of two worker processes, shared by a module's tests."""
    from srcnn.cluster import dask_client

    with dask_client(n_workers=2) as client:
        yield client


@pytest.fixture
def small_collection(tmp_path, t91) -> Path:
    """Six real T91 photographs in a folder of their own."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("t1.png", "t2.png", "t3.png", "t10.png", "t20.png", "t30.png"):
        shutil.copy(t91 / name, folder / name)
    return folder


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint on loopback: moto in server mode, as s3fs's own test suite runs it.

    The environment points s3fs (and Dask workers started later) at it with dummy credentials.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("moto server did not start")
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "SRCNN_S3_ENDPOINT_URL": endpoint}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh bucket; returns (s3fs filesystem, bucket name)."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return fs, name


# The longest files first, longest first (from `pytest --durations=0 -n 2 -v`, 2026-12-06):
# `make test` runs two processes a file at a time (pytest-xdist's loadfile, with its own
# reordering off), so the long end-to-end runs start at once instead of ending the suite alone
# on one process (the last order left 90 s more on one process than on the other).
SLOW_FIRST = ("test_mlflow_server.py", "test_s3_outage.py", "test_ui_browser.py",
              "test_warm.py", "test_flows.py", "test_deployment.py", "test_resume.py",
              "test_upscale.py", "test_cli.py", "test_pipeline.py", "test_secrets.py",
              "test_incremental.py", "test_pretrained.py", "test_recipe.py",
              "test_worker_kill.py", "test_training_dispatch.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: in-file order kept
