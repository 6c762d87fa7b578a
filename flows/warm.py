"""Start-up for people at a terminal.

Warm: `srcnn serve` keeps a Prefect server and a Dask cluster running, and a process with the
CLI's imports done (`flows.zygote`); every later `srcnn` call in the same SRCNN_HOME runs in a
copy of that process (`flows.launch`), or, where it cannot, finds the services (the file
`.srcnn/services.json`) and uses them instead of starting a temporary Prefect server and a
cluster of its own. Every flow run still appears in that Prefect server (and its UI). An
address already given (PREFECT_API_URL, SRCNN_DASK_ADDRESS) wins; a file whose services no
longer answer is ignored, and the call starts its own as before.

Cold: a flow command with no Prefect server starts its temporary one first thing
(`temporary_api`), so that the server starts while the command imports its modules.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

STATE = Path(".srcnn") / "services.json"
SOCKET = Path(".srcnn") / "calls.sock"  # where serve's warm process takes calls
MAX_SOCKET_PATH = 107  # bytes: what a Unix socket's address holds


def state_file(home: Path) -> Path:
    return home / STATE


def socket_path(home: Path) -> Path:
    return home / SOCKET


def _answers(url: str, timeout: float = 0.5) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _listens(address: str, timeout: float = 0.5) -> bool:
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def wait_until(ready, proc: subprocess.Popen, seconds: float, step: float) -> bool:
    """Whether `ready()` came true within `seconds` while the process `proc` it waits on ran."""
    deadline = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def discover(home: Path, environ: dict = os.environ) -> dict[str, str]:
    """The environment a call gets from a running `srcnn serve` in `home` (set into
    `environ`): PREFECT_API_URL and SRCNN_DASK_ADDRESS, each only where not set already and
    only if it answers now."""
    try:
        state = json.loads(state_file(home).read_text())
    except (OSError, ValueError):
        return {}
    found = {}
    if "PREFECT_API_URL" not in environ and _answers(f"{state.get('prefect_api', '')}/health"):
        found["PREFECT_API_URL"] = state["prefect_api"]
    if "SRCNN_DASK_ADDRESS" not in environ and _listens(state.get("dask", "")):
        found["SRCNN_DASK_ADDRESS"] = state["dask"]
    environ.update(found)
    return found


def serve(home: Path, prefect_port: int, dask_port: int, workers: int, host: str,
          echo) -> bool:
    """Run a Prefect server (its UI too) and a Dask LocalCluster until Ctrl-C (True) or until
    the Prefect server stops (False); while they run, `.srcnn/services.json` names them."""
    from distributed import LocalCluster

    from flows.cli_output import prefect_server, stop_group, stop_on_signals

    api = f"http://{host}:{prefect_port}/api"
    if _listens(f"{host}:{prefect_port}"):
        echo(f"port {prefect_port} is in use (another Prefect server?): choose another with "
             "--prefect-port")
        return False
    stop_on_signals()  # the Prefect server, the workers and the file that names them go too
    prefect = prefect_server(host, prefect_port)
    calls = None
    path = state_file(home)
    try:
        # Worker processes, one thread each (the per-image work is GIL-bound), started now:
        # a call then finds them warm, their imports done and their models kept per run.
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          host=host, scheduler_port=dask_port, dashboard_address=":0") as cluster:
            if not wait_until(lambda: _answers(f"{api}/health", 2), prefect, 180, 0.5):
                echo(f"the Prefect server did not start (exit {prefect.poll()}): is port "
                     f"{prefect_port} in use? Choose another with --prefect-port.")
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"prefect_api": api, "dask": cluster.scheduler_address,
                                        "pid": os.getpid()}))
            calls = warm_process(home, api, cluster.scheduler_address)
            echo(f"Prefect : http://{host}:{prefect_port}  (API {api})\n"
                 f"Dask    : {cluster.scheduler_address}  ({workers} worker processes)\n"
                 f"srcnn commands run from {home} use both until Ctrl-C stops them"
                 + (", in a process with their imports done." if calls else "."))
            while prefect.poll() is None:
                time.sleep(0.5)
            echo(f"the Prefect server stopped (exit {prefect.returncode})")
            return False
    except KeyboardInterrupt:
        return True
    finally:
        path.unlink(missing_ok=True)
        if calls:
            stop_group(calls)
        stop_group(prefect)


def warm_process(home: Path, api: str, dask: str) -> subprocess.Popen | None:
    """Start `flows.zygote` (the process later calls run in, `flows.launch`) on the socket in
    `home`, in a session of its own; None where the socket's path is too long for one."""
    from flows.cli_output import stop_group

    path = socket_path(home)
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        return None
    path.unlink(missing_ok=True)  # left by a serve that was killed
    env = {**os.environ, "PREFECT_API_URL": api, "SRCNN_DASK_ADDRESS": dask}
    proc = subprocess.Popen([sys.executable, "-m", "flows.zygote", str(path)], env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    if not wait_until(path.exists, proc, 120, 0.2):  # ready when it listens (after its imports)
        stop_group(proc)
        return None
    return proc


# The commands that run flows, and the module each imports for them.
FLOW_MODULES = {"patches": "flows.build_patches", "train": "flows.train_srcnn",
                "register": "flows.register_best", "upscale": "flows.upscale_bucket",
                "pipeline": "flows.pipeline"}


@contextlib.contextmanager
def temporary_api(argv: list[str]) -> Iterator[None]:
    """A temporary Prefect API server for a flow command that has none (no PREFECT_API_URL,
    no `srcnn serve`): the one Prefect itself would start (the same server, settings and
    database), started here first thing, so that it starts while this process imports the
    command's modules, and stopped when the command ends. A command that runs no flow, or
    asks for help, starts none."""
    module = FLOW_MODULES.get(argv[0]) if argv else None
    if module is None or "--help" in argv or os.environ.get("PREFECT_API_URL"):
        yield
        return
    import importlib.util

    from flows.cli_output import stop_group
    from flows.prefect_db import create_database

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    create_database()  # a new database without Prefect's migrations (flows/prefect_db.py)
    prefect = Path(importlib.util.find_spec("prefect").origin).parent
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1"}  # as Prefect's own temporary server runs
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    # Stopped when this process ends, after Prefect has sent its last logs (exit handlers run
    # last registered first, and Prefect registers its own when imported, below).
    atexit.register(stop_group, server, 5)
    os.environ["PREFECT_API_URL"] = api
    importlib.import_module(module)  # meanwhile the server starts, on another core
    wait = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 20))
    if not wait_until(lambda: _answers(f"{api}/health", 1), server, wait, 0.1):
        raise RuntimeError(f"Timed out while attempting to connect to ephemeral Prefect API "
                           f"server (exit {server.poll()}).")
    yield
