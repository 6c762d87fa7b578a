"""Credentials stay off display: a training run and its registration, through a real `mlflow
server` reached with a password in its URI and with S3 credentials set, leave neither secret
in MLflow params, tags or descriptions, in Prefect's flow-run logs or parameters, in what the
CLI prints, or on any process command line while they run."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterStartTime,
    LogFilter,
    LogFilterFlowRunId,
)
from servers import BIN, free_port, service
from typer.testing import CliRunner

from flows.build_patches import build_patches
from flows.cli import app
from flows.cli_output import MLFLOW_SERVER_ENV
from flows.register_best import register_best
from flows.train_srcnn import train_srcnn
from srcnn.config import ModelConfig, PatchConfig, TrainConfig
from srcnn.settings import masked

pytestmark = pytest.mark.usefixtures("prefect_server")

PASSWORD = "Pw-4f1d9c2e-never-shown"
AWS_SECRET = "Aws-7e3b5a90-never-shown"


class CommandLineWatch:
    """Samples every process's command line while a block runs."""

    def __init__(self, secrets: tuple[str, ...]):
        self.secrets, self.seen, self.samples = secrets, [], 0
        self._stop = threading.Event()

    def _scan(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                try:
                    line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except (OSError, ValueError):
                    continue
                if any(s in line for s in self.secrets):
                    self.seen.append(line)
            self.samples += 1
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread = threading.Thread(target=self._scan, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_http_credentials_go_to_mlflows_variables_not_its_uri():
    from srcnn.settings import Settings

    settings = Settings(mlflow_tracking_uri=f"https://srcnn:{PASSWORD}%40x@mlflow:5000")
    assert settings.mlflow_credentials() == ("https://mlflow:5000", ("srcnn", f"{PASSWORD}@x"))
    db = f"postgresql://srcnn:{PASSWORD}@db/mlflow"  # SQLAlchemy needs them in the URI
    assert Settings(mlflow_tracking_uri=db).mlflow_credentials() == (db, None)


def test_masked_hides_passwords_and_secret_query_values():
    assert masked(f"http://srcnn:{PASSWORD}@mlflow:5000") == "http://srcnn:***@mlflow:5000"
    assert masked(f"postgresql+psycopg2://u:{PASSWORD}@db/x") == "postgresql+psycopg2://u:***@db/x"
    assert masked(f"https://h/o?X-Amz-Signature={PASSWORD}&a=1") == \
        "https://h/o?X-Amz-Signature=***&a=1"
    assert masked("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"  # nothing to hide
    assert masked("http://user@h:5000/x") == "http://user@h:5000/x"


def test_no_credentials_in_mlflow_prefect_logs_cli_or_command_lines(
        tmp_path, small_collection, set5, monkeypatch, capfd, caplog, databases):
    caplog.set_level(logging.INFO, logger="prefect")  # run logs at INFO, whatever `make` sets
    port = free_port()
    argv = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri",
            databases.mlflow(tmp_path / "mlflow.db", "mlflow-artifacts:/"),
            "--artifacts-destination", str(tmp_path / "artifacts")]
    with service("mlflow-server", argv, dict(os.environ) | MLFLOW_SERVER_ENV, tmp_path,
                 f"http://127.0.0.1:{port}/health", 120):
        uri = f"http://srcnn:{PASSWORD}@127.0.0.1:{port}"
        monkeypatch.setenv("SRCNN_MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("SRCNN_MLFLOW_ARTIFACT_ROOT", "mlflow-artifacts:/srcnn")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.setenv(name, "")  # make_client sets them; gone after the test
        secrets = (PASSWORD, AWS_SECRET)
        store = str(tmp_path / "p.zarr")
        started = datetime.now(UTC)
        with CommandLineWatch(secrets) as watch:
            build_patches(str(small_collection), store, PatchConfig(scale=3, val_fraction=0.34))
            trained = train_srcnn(store, ModelConfig.from_arch("9-1-5", n1=8, n2=4),
                                  TrainConfig(epochs=1, steps_per_epoch=2, batch_size=16),
                                  [str(set5)], run_name="with-secrets")
            register_best(3, trained["run_id"])
            cli = CliRunner().invoke(app, ["register", "--scale", "3",
                                           "--run-id", trained["run_id"]])
        assert cli.exit_code == 0, cli.output
        assert watch.samples > 3 and not watch.seen, watch.seen[:3]

        plain = f"http://127.0.0.1:{port}"  # the server itself needs no password
        ml = MlflowClient(tracking_uri=plain, registry_uri=plain)
        run = ml.get_run(trained["run_id"])
        version = ml.get_model_version_by_alias("srcnn-x3", "champion")
        logged = ml.get_logged_model(run.data.tags["model_id"])
        mlflow_text = json.dumps([run.data.params, run.data.tags, version.tags,
                                  version.description, version.source, logged.params,
                                  logged.tags], default=str)
        assert run.data.params and "model.n1" in run.data.params  # there is text to search

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(
            start_time=FlowRunFilterStartTime(after_=started)))  # this test's runs
        assert {"build-patches", "train-srcnn", "register-best"} <= {
            prefect.read_flow(r.flow_id).name for r in runs}
        logs, page = [], True
        while page:  # every log line of those runs, page by page
            page = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[r.id for r in runs])), offset=len(logs))
            logs += page
    prefect_text = json.dumps([r.parameters for r in runs], default=str) + "\n".join(
        log.message for log in logs)
    assert any("training run" in log.message for log in logs)
    captured = capfd.readouterr()
    for where, text in (("MLflow", mlflow_text), ("Prefect", prefect_text),
                        ("CLI", cli.output), ("stdout/stderr", captured.out + captured.err)):
        for secret in secrets:
            assert secret not in text, f"{where} shows a credential"
