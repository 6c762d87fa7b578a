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


class Databases:
    """Empty MLflow and Prefect SQLite databases at their schemas' heads, made once for the
    whole run (every xdist process) and copied for each test that needs a store of its own:
    a copy takes milliseconds, where a new file's migrations cost ~6 s of CPU for MLflow (and
    ~14 s for Prefect, whose schema is replayed instead), paid again by every test and server
    that started on a new file. The
    tests that are about a new home (`test_warm.py`) still start on none."""

    def __init__(self, root: Path):
        self.root = root

    def make(self) -> None:
        """Both templates: MLflow's migrated in a process of its own, Prefect's replayed from
        the stored schema beside it."""
        import subprocess
        import sys

        from flows.prefect_db import create_database

        uri = f"sqlite:///{self.root / 'mlflow.db'}"
        mlflow = (f"from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as T\n"
                  f"from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as R\n"
                  f"T({uri!r}, {str(self.root / 'mlruns')!r})\n"
                  f"R({uri!r})")
        env = {**os.environ, "PREFECT_HOME": str(self.root / "prefect-home"),
               "PREFECT_SERVER_DATABASE_CONNECTION_URL":
                   f"sqlite+aiosqlite:///{self.root / 'prefect.db'}"}
        bin_dir = Path(sys.executable).parent
        procs = [subprocess.Popen([sys.executable, "-c", mlflow], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)]
        # Prefect's from the stored schema, as the CLI makes one (tests/test_prefect_db.py
        # checks it against the migrations); migrated where this Prefect's is not stored
        if not create_database(self.root / "prefect.db"):
            procs.append(subprocess.Popen([str(bin_dir / "prefect"), "server", "database",
                                           "upgrade", "-y"], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            if proc.returncode:
                pytest.fail(f"making the database templates: {proc.args} exited with "
                            f"{proc.returncode}:\n{out[-3000:]}")

    def mlflow(self, db: Path, artifact_root: str | None = None) -> str:
        """An empty MLflow store at `db` (its Default experiment's artifacts under
        `artifact_root`, as MLflow makes it for a store opened with that root); its URI."""
        import sqlite3

        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / "mlflow.db", db)
        root = artifact_root or (db.parent / "mlruns").as_uri()
        with sqlite3.connect(db) as con:
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                        (f"{root.rstrip('/')}/0",))
        con.close()
        return f"sqlite:///{db}"

    def prefect(self, db: Path) -> str:
        """An empty Prefect server database at `db`; its connection URL."""
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / "prefect.db", db)
        return f"sqlite+aiosqlite:///{db}"


@pytest.fixture(scope="session")
def databases(tmp_path_factory, worker_id) -> Databases:
    """The database templates, made by whichever xdist process asks first (under a file lock,
    in the run's shared temporary folder), keyed by the MLflow and Prefect versions."""
    from importlib.metadata import version

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base  # xdist: the run's folder
    root = shared / f"db-templates-mlflow{version('mlflow')}-prefect{version('prefect')}"
    root.mkdir(exist_ok=True)
    dbs = Databases(root)
    with FileLock(str(root) + ".lock"):
        if not (root / "made").exists():
            dbs.make()
            (root / "made").touch()
    return dbs


@pytest.fixture(scope="session")
def prefect_server(databases, tmp_path_factory):
    """A real (temporary) Prefect API server for the whole session, on a copy of the template
    database (Prefect's harness puts its database in a new temporary folder: this one)."""
    from unittest import mock

    from prefect.testing.utilities import prefect_test_harness

    folder = tmp_path_factory.mktemp("prefect-harness")
    databases.prefect(folder / "prefect-test.db")  # the file name the harness opens there
    with (mock.patch("prefect.testing.utilities.mkdtemp", return_value=str(folder)),
          prefect_test_harness(server_startup_timeout=180)):
        yield


@pytest.fixture
def mlflow_home(tmp_path, monkeypatch, set5, databases) -> Path:
    """MLflow on its own SQLite file (a copy of the empty template) and artifact folder; Set5
    as the evaluation set."""
    home = tmp_path / "mlflow"
    home.mkdir()
    artifacts = (home / "artifacts").as_uri()
    uri = databases.mlflow(home / "mlflow.db", artifacts)
    monkeypatch.setenv("SRCNN_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SRCNN_MLFLOW_ARTIFACT_ROOT", artifacts)
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


# The longest files first, longest first (from `pytest --durations=0 -n 2 -v`, 2026-12-06, evening):
# `make test` runs two processes a file at a time (pytest-xdist's loadfile, with its own
# reordering off), so the long end-to-end runs start at once instead of ending the suite alone
# on one process (the last order left 90 s more on one process than on the other).
SLOW_FIRST = ("test_mlflow_server.py", "test_s3_outage.py", "test_deployment.py",
              "test_ui_browser.py", "test_resume.py", "test_flows.py", "test_warm.py",
              "test_pipeline.py", "test_incremental.py", "test_pretrained.py", "test_upscale.py",
              "test_recipe.py", "test_worker_kill.py", "test_training_dispatch.py",
              "test_cli.py", "test_gated.py", "test_secrets.py", "test_s3.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: in-file order kept
