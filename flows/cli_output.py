"""What the `srcnn` commands show besides JSON: the pipeline's closing report, and the two
UIs `srcnn ui` serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import typer

# Worker processes of the MLflow server `srcnn ui` starts for one reviewer: MLflow's default
# of 4 starts four copies of its app (~4 s of CPU and ~250 MB each) for pages that two serve.
UI_WORKERS = 2
# MLflow 3's server also starts a job runner of eight processes (huey consumers, for GenAI
# jobs: judges, trace roll-ups) that this pipeline never submits to: ~11 s of CPU at every
# start, twice the server's own. Off unless the environment asks for it.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def pipeline_report(s: dict, scale: int, tracking: str) -> str:
    """The demo's closing report from the pipeline flow's summary (`tracking`: the tracking
    URI fit to print)."""
    lines = [
        "",
        "== SRCNN pipeline finished ==",
        f"patch store   : {s['patch_store']} ({s['n_patches']} patches)",
        f"MLflow run    : {s['run_id']}",
        f"registered    : {s['registration'].get('name')} v{s['registration'].get('version')}",
        f"champion      : {s['champion']}",
        f"upscaled      : {s['upscaled']} images with {s['model']} -> {s['output']}",
    ]
    sets = list(dict.fromkeys(e["dataset"] for e in s["evaluation"]))
    rows = {(e["degradation"], e["dataset"]): e for e in s["evaluation"]}
    lines += ["", f"This run's model, x{scale}: PSNR and gain over bicubic (dB) on "
              + ", ".join(sets), f"{'LR made by':<16}" + "".join(f"{d:>22}" for d in sets)]
    for name in dict.fromkeys(e["degradation"] for e in s["evaluation"]):
        cells = [rows.get((name, d)) for d in sets]
        lines.append(f"{name:<16}" + "".join(
            f"{e['psnr']:>14.2f} ({e['psnr'] - e['bicubic_psnr']:+.2f})" if e else f"{'-':>22}"
            for e in cells))
    if "holdout_psnr" in s:
        h = s["holdout_psnr"]
        lines.append(
            f"PSNR held-out photos x{scale}, as upscaled by the champion: "
            f"{h['srcnn']:.2f} dB vs bicubic {h['bicubic']:.2f} dB "
            f"({h['srcnn'] - h['bicubic']:+.2f} dB)"
        )
    if users := s.get("users_images"):
        kinds = [k for k in next(iter(users.values())) if k != "bicubic"]
        lines += ["", f"Held-out photos as users' buckets hold them, x{scale}: gain over a plain "
                  "bicubic upscale of the same LR image (Y-PSNR, dB)",
                  f"{'LR made by':<16}{'bicubic':>9}" + "".join(
                      f"{'pretrained:' + k:>18}" for k in kinds)]
        for name, row in users.items():
            lines.append(f"{name:<16}{row['bicubic']:>9.2f}" + "".join(
                f"{row[k] - row['bicubic']:>+18.2f}" for k in kinds))
    # the flow runs are in this PREFECT_HOME's history: `srcnn ui` must be given the same one
    home = os.environ.get("PREFECT_HOME")
    command = f"PREFECT_HOME={home} .venv/bin/srcnn ui" if home else ".venv/bin/srcnn ui"
    lines += ["", f"Browse it     : {command}   (MLflow on http://127.0.0.1:5000 over "
              f"{tracking}, Prefect on http://127.0.0.1:4200; after `make demo`: make ui)"]
    return "\n".join(lines)


def serve_uis(tracking_uri: str, artifact_root: str, shown_uri: str, mlflow_port: int,
              prefect_port: int, host: str, experiment_id: str | None = None,
              prefect_api: str | None = None) -> bool:
    """The MLflow UI over the tracking store and the Prefect UI told where its API is, until
    Ctrl-C (True) or until one of them stops (False). Prints where to look: the training
    runs (`experiment_id`) and the registry, in the MLflow UI's model-training view. With
    `prefect_api` (a Prefect server already running: `srcnn serve`'s, or PREFECT_API_URL) no
    second one is started: its own UI shows the runs."""
    from srcnn.tracking.runs import ui_links

    stop_on_signals()
    procs = {"MLflow": subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
         "--default-artifact-root", artifact_root, "--host", host, "--port", str(mlflow_port),
         "--workers", str(UI_WORKERS)],
        env=MLFLOW_SERVER_ENV | dict(os.environ), start_new_session=True)}
    if not prefect_api:
        procs["Prefect"] = prefect_server(host, prefect_port, "--no-services")
    links = ui_links(f"http://{host}:{mlflow_port}", experiment_id)
    typer.echo(f"MLflow  : http://{host}:{mlflow_port}  (tracking store {shown_uri})\n"
               + "".join(f"  {what:<15}: {url}\n" for what, url in links.items())
               + (f"Prefect : {prefect_api.removesuffix('/api')}  (already running)\n"
                  if prefect_api else
                  f"Prefect : http://{host}:{prefect_port}  (PREFECT_HOME "
                  f"{os.environ.get('PREFECT_HOME', '~/.prefect')})\n"
                  f"  {'flow runs':<15}: http://{host}:{prefect_port}/runs\n")
               + "Ctrl-C stops " + ("both." if len(procs) > 1 else "it."))
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        failed = [name for name, p in procs.items() if p.poll() is not None]
        typer.echo(f"{', '.join(failed)} stopped (exit {procs[failed[0]].returncode}): is "
                   f"the port in use? Choose another with --mlflow-port / --prefect-port.",
                   err=True)
        return False
    except KeyboardInterrupt:
        return True
    finally:
        for p in procs.values():
            stop_group(p)


def stop_on_signals() -> None:
    """Ctrl-C stops a serving command even where it was started with SIGINT ignored (a
    background job), and SIGTERM (a service manager) the same way: KeyboardInterrupt, whose
    handlers stop the servers it started."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)


def prefect_server(host: str, port: int, *options: str) -> subprocess.Popen:
    """`prefect server start` with its UI told where its API is (without it the UI calls the
    default port), in a session of its own: a Ctrl-C reaches the command that started it,
    which stops it in order (`stop_group`)."""
    from flows.prefect_db import create_database

    create_database()  # a new database without Prefect's migrations (flows/prefect_db.py)
    api = f"http://{host}:{port}/api"
    env = {**os.environ, "PREFECT_SERVER_UI_API_URL": api, "PREFECT_API_URL": api}
    return subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host,
                             "--port", str(port), "--analytics-off", *options], env=env,
                            start_new_session=True)


def stop_group(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """Stop a child started in a session of its own, and what it started: SIGTERM, then
    SIGKILL after `grace_s` (a server waits on its open connections, a browser's included)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
