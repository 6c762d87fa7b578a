"""What a reviewer sees, in a real browser: a real `mlflow server` on loopback over a registry
built by the `srcnn` commands, each in its own process (the shipped weights seeded as champion,
then a quick model trained and registered against them), its pages opened in headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium; nothing is downloaded). Screenshots of each page are
written beside the test's logs (`tmp_path`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import urllib.request

import pytest
from mlflow import MlflowClient
from servers import BIN, free_port, run, service

from flows.upscale_bucket import REPORT_KEY
from srcnn.tracking.runs import TRAIN_EXPERIMENT, ui_links

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium; where none can be had the test fails and says what is missing
    (`make test` installs it with apt-get)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("no browser for the UI tests: install Debian's chromium and "
                    "chromium-driver (`make browser`, apt-get as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1500,1100", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield drv
    finally:
        drv.quit()


def page(drv, url: str, *needles: str, shot=None, timeout: float = 60) -> str:
    """Open `url` and wait until the rendered page's text holds every needle; returns the
    text. Fails with what the page showed instead."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    drv.get(url)
    text = ""

    def shows(d) -> bool:
        nonlocal text
        text = (d.execute_script("return document.body.innerText") or "").replace("\xa0", " ")
        return all(n in text for n in needles)

    try:
        WebDriverWait(drv, timeout, 0.5).until(shows)
    except TimeoutException:
        missing = [n for n in needles if n not in text]
        pytest.fail(f"{url}: {missing} not on the page after {timeout:.0f} s; it shows:\n"
                    f"{text[:6000]!r}")
    finally:
        if shot is not None:
            drv.save_screenshot(str(shot))
    return text


def descendants(pid: int) -> list[str]:
    """The command lines of every process started under `pid`."""
    import psutil

    commands = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            commands.append(" ".join(child.cmdline()))
        except psutil.NoSuchProcess:
            continue  # gone meanwhile
    return commands


def artifact_id(api: str, key: str) -> str:
    """The id of the newest Prefect artifact under `key` (its page shows it whole)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with SyncPrefectClient(api) as client:
        (found,) = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return str(found.latest_id)


def test_reviewer_sees_champion_challenger_and_why(tmp_path, browser, small_collection, set5,
                                                   databases):
    """`srcnn ui` over what the flows recorded (SRCNN_HOME's SQLite store and PREFECT_HOME's
    Prefect server, as after `make demo`), seen in the browser: the registry, the challenger's
    version, its logged model, the runs, and the Prefect artifacts of register-best and
    upscale-bucket. Both stores exist before `srcnn ui` starts, as after a first run (copies
    of the empty templates)."""
    mlflow_port, prefect_port = free_port(), free_port()
    url, prefect = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}"
    env = {k: v for k, v in os.environ.items() if k not in (
        "SRCNN_MLFLOW_TRACKING_URI", "SRCNN_MLFLOW_ARTIFACT_ROOT", "PREFECT_API_URL")}
    env |= {"SRCNN_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_API_DATABASE_CONNECTION_URL": databases.prefect(tmp_path / "p.db")}
    databases.mlflow(tmp_path / "mlflow.db", (tmp_path / "mlartifacts").as_uri())
    argv = [str(BIN / "srcnn"), "ui", "--mlflow-port", str(mlflow_port), "--prefect-port",
            str(prefect_port)]
    with service("srcnn-ui", argv, env, tmp_path, f"{url}/health", 180) as ui:
        ui.wait_http(f"{prefect}/api/health", 180)
        # Its MLflow server runs no job runner (huey consumers for MLflow's GenAI jobs).
        started = [cmd for cmd in descendants(ui.proc.pid) if "mlflow" in cmd]
        assert any("mlflow server" in cmd for cmd in started), started
        assert not [cmd for cmd in started if "huey" in cmd or "_job_runner" in cmd], started
        with urllib.request.urlopen(f"{prefect}/ui-settings") as r:  # the UI finds its API
            assert json.load(r)["api_url"] == f"{prefect}/api"
        # The commands a user runs, each in its own process, their flow runs in that server.
        calls = {**env, "PREFECT_API_URL": f"{prefect}/api"}

        def srcnn(*args: str) -> str:
            return run([sys.executable, "-m", "flows.cli", *args], calls, 600, (ui,)).stdout

        seeded = json.loads(srcnn("register", "--scale", "3"))  # shipped weights: champion v1
        assert seeded["version"] == "1" and seeded["promoted"]
        store = str(tmp_path / "patches.zarr")
        srcnn("patches", str(small_collection), store, "--scale", "3", "--val-fraction", "0.34")
        out = srcnn("train", store, "--arch", "9-1-5", "--n1", "16", "--n2", "8", "--epochs",
                    "1", "--steps-per-epoch", "20", "--batch-size", "32", "--run-name", "quick",
                    "--eval-dataset", str(set5), "--degradation", "bicubic", "--degradation",
                    "cubic")
        trained = {"run_id": re.search(r"MLflow run: (\w+)", out)[1]}
        reg = json.loads(srcnn("register", "--scale", "3", "--run-id", trained["run_id"]))
        assert not reg["promoted"] and reg["version"] == "2"  # the shipped net stays
        photos = tmp_path / "bucket"
        photos.mkdir()
        for image in sorted(small_collection.iterdir())[:2]:
            shutil.copy(image, photos / image.name)
        assert srcnn("upscale", str(photos), str(tmp_path / "upscaled")).startswith("2 upscaled")
        upscaled = json.loads((tmp_path / "upscaled" / REPORT_KEY).read_text())

        ml = MlflowClient(url, url)
        home = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the store the commands wrote: the same
        assert len(MlflowClient(home, home).search_model_versions("name = 'srcnn-x3'")) == 2
        v1, v2 = (ml.get_model_version("srcnn-x3", v) for v in ("1", "2"))
        model_id = v2.source.removeprefix("models:/")
        experiment = ml.get_experiment_by_name(TRAIN_EXPERIMENT).experiment_id
        decision = reg["decision"]  # "v1 stays champion: v2 scores ... (...); v2 is challenger."
        assert decision.startswith("v1 stays champion: v2 scores")

        # The registered model: both versions, their aliases, the champion's headline score
        # (its worst gain over bicubic across the suite) and the decision.
        text = page(browser, f"{url}/#/models/srcnn-x3", "Version 1", "Version 2", "@ champion",
                    "@ challenger", "worst_gain", v1.tags["worst_gain"], decision,
                    shot=tmp_path / "registry.png")
        # v1 is the shipped default (`pretrained`: the gated pair), v2 the SRCNN trained here.
        assert "Versions hold: gated pairs of LR-space nets" in text and "SRCNN" in text
        assert "set5_x3_cubic_psnr" not in text  # rows live on the logged models
        # The challenger's version page: its score on the same rows, the decision sentence in
        # its description, its evaluation table rendered as a table.
        text = page(browser, f"{url}/#/models/srcnn-x3/versions/2", "Champion decision",
                    decision, "@ challenger", "gain over bicubic",
                    shot=tmp_path / "version.png")
        assert f"{reg['score']:+.3f} dB" in text and f"{reg['previous_score']:+.3f} dB" in text
        # The logged model the challenger was made from links to its version.
        page(browser, f"{url}/#/experiments/{experiment}/models/{model_id}", "Model versions",
             "srcnn-x3", "v2", shot=tmp_path / "logged-model.png")
        # The seeded champion's run carries its scores (its config.json's rows) as metrics.
        page(browser, f"{url}/#/experiments/{experiment}/runs/{v1.run_id}", "set5_x3_psnr",
             "worst_gain", shot=tmp_path / "champion-run.png")
        # The links `srcnn ui` prints (it started before any run: the experiments list) and
        # the experiment's runs open in the model-training view (not the GenAI overview).
        listed = ui_links(url)
        for what, link in listed.items():
            ui.wait_log(f"{what:<15}: {link}", 10)
        page(browser, listed["model registry"], "srcnn-x3", shot=tmp_path / "models.png")
        page(browser, listed["training runs"], TRAIN_EXPERIMENT)
        page(browser, ui_links(url, experiment)["training runs"], "quick", "Run Name",
             shot=tmp_path / "runs.png")
        assert "/overview" not in browser.current_url and "/runs" in browser.current_url
        # The run's charts: the training curves are the first section, the single values after.
        text = page(browser, f"{url}/#/experiments/{experiment}/runs/{trained['run_id']}"
                    "/model-metrics?workflowType=machine_learning", "\ntraining\n(6)",
                    "\nModel metrics\n(", shot=tmp_path / "run-charts.png")
        curves, singles = text.index("\ntraining\n(6)"), text.index("\nModel metrics\n(")
        assert curves < text.index("\ntrain_loss\n") < text.index("\nval_psnr\n") < singles

        # Prefect: the register-best run's decision artifact and the bucket run's report,
        # its counts as a table, and the run's summary in its logs.
        page(browser, f"{prefect}/artifacts/artifact/"
             f"{artifact_id(f'{prefect}/api', 'champion-decision-x3')}", decision,
             shot=tmp_path / "prefect-decision.png")
        text = page(browser, f"{prefect}/artifacts/artifact/"
                    f"{artifact_id(f'{prefect}/api', 'upscale-report')}", "upscaled",
                    "already current (skipped)", shot=tmp_path / "prefect-report.png")
        assert "{" not in text  # a table of counts, no dict repr
        page(browser, f"{prefect}/runs/flow-run/{upscaled['flow_run_id']}",
             "upscaled 2, skipped 0, failed 0 images", shot=tmp_path / "prefect-run.png")
        os.killpg(ui.proc.pid, signal.SIGINT)  # Ctrl-C stops both
        assert ui.proc.wait(60) == 0
