"""Screenshots of what a reviewer sees after `make demo`, in headless Chromium: the MLflow
registry page, the champion's version page, its logged model, the demo's training run (its
charts) and the experiment's runs, and the Prefect page of the demo's `upscale-bucket` run (its artifacts).

    .venv/bin/srcnn ui &          # in the demo's folder: MLflow on :5000, Prefect on :4200
    python benchmarks/ui_screenshots.py --out docs/screenshots [--demo demo-output]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from mlflow import MlflowClient
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from flows.upscale_bucket import REPORT_KEY
from srcnn.tracking.runs import TRAINING_VIEW, ui_links


def browser() -> webdriver.Chrome:
    options = Options()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1500,1100"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def shoot(drv, url: str, path: Path, needle: str, timeout: float = 60,
          tab: str | None = None) -> None:
    drv.get(url)
    if tab:  # a tab of the page, by its label
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(drv, timeout).until(ec.element_to_be_clickable(
            ("xpath", f"//*[(self::button or @role='tab') and normalize-space(.)='{tab}']"))
        ).click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in (drv.execute_script("return document.body.innerText") or ""):
            break
        time.sleep(0.5)
    time.sleep(1)  # the last requests settle
    drv.save_screenshot(str(path))
    print(f"{path}: {url}")


def upscale_report_id(prefect: str, flow_run_id: str) -> str:
    """The id of the `upscale-report` artifact of one flow run (its own page shows the table)."""
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with SyncPrefectClient(f"{prefect}/api") as client:
        (found,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["upscale-report"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    return str(found.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mlflow", default="http://127.0.0.1:5000")
    parser.add_argument("--prefect", default="http://127.0.0.1:4200")
    parser.add_argument("--demo", default="demo-output")
    parser.add_argument("--out", default="docs/screenshots")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ml = MlflowClient(args.mlflow, args.mlflow)
    champion = ml.get_model_version_by_alias("srcnn-x3", "champion")
    versions = sorted(ml.search_model_versions("name = 'srcnn-x3'"), key=lambda v: int(v.version))
    trained = versions[-1]  # the demo's own model
    run = ml.get_run(trained.run_id)
    model_id = trained.source.removeprefix("models:/")
    report = json.loads((Path(args.demo) / "upscaled-x3" / REPORT_KEY).read_text())
    drv = browser()
    try:
        m = args.mlflow
        shoot(drv, f"{m}/#/models/srcnn-x3?{TRAINING_VIEW}", out / "1-registry.png",
              "champion")
        shoot(drv, f"{m}/#/models/srcnn-x3/versions/{trained.version}?{TRAINING_VIEW}",
              out / "2-version.png", "Champion decision")
        shoot(drv, f"{m}/#/experiments/{run.info.experiment_id}/models/{model_id}"
              f"?{TRAINING_VIEW}", out / "3-logged-model.png", "Model versions")
        shoot(drv, f"{m}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
              f"/model-metrics?{TRAINING_VIEW}", out / "4-run.png", "train_loss")
        shoot(drv, ui_links(m, run.info.experiment_id)["training runs"], out / "7-runs.png",
              run.info.run_name)
        shoot(drv, f"{args.prefect}/runs/flow-run/{report['flow_run_id']}?tab=Artifacts",
              out / "5-upscale-bucket-artifacts.png", "upscale-report")
        artifact = upscale_report_id(args.prefect, report["flow_run_id"])
        shoot(drv, f"{args.prefect}/artifacts/artifact/{artifact}", out / "6-upscale-report.png",
              "upscaled")
    finally:
        drv.quit()
    print(f"champion: v{champion.version}; the demo's model: v{trained.version}")


if __name__ == "__main__":
    main()
