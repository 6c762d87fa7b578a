"""Start-up as a person at a terminal meets it: a call with no Prefect server runs on a
temporary one it starts (and stops), and `srcnn serve` keeps Prefect, Dask and a warm process
that later calls run in (`flows/warm.py`, `flows/launch.py`, `flows/zygote.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_a_call_without_a_prefect_server_runs_on_a_temporary_one(tmp_path, small_collection):
    """`srcnn upscale` with no Prefect server to use starts a temporary one (as Prefect would,
    but while the command imports its modules): the flow run is recorded in PREFECT_HOME's
    database, and the server is gone when the command ends."""
    import sqlite3

    from flows.upscale_bucket import REPORT_KEY

    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",
                                                             "SRCNN_DASK_ADDRESS")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "SRCNN_HOME": str(tmp_path)}
    photos = tmp_path / "photos"
    photos.mkdir()
    first = sorted(small_collection.iterdir())[0]
    (photos / first.name).write_bytes(first.read_bytes())
    result = subprocess.run([sys.executable, "-m", "flows.launch", "upscale", str(photos),
                             str(tmp_path / "out"), "--model", "pretrained:fast"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "Error logging to API" not in result.stderr  # its last logs reached the server
    run_id = json.loads((tmp_path / "out" / REPORT_KEY).read_text())["flow_run_id"]
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        ((state,),) = db.execute("SELECT state_type FROM flow_run WHERE id = ?", (run_id,))
        (logs,) = db.execute("SELECT count(*) FROM log WHERE flow_run_id = ?", (run_id,))
    assert state == "COMPLETED" and logs[0] > 0
    servers = subprocess.run(["pgrep", "-f", f"uvicorn.*{tmp_path.name}|server.api.server"],
                             capture_output=True, text=True).stdout.split()
    assert not [pid for pid in servers if _started_under(int(pid), tmp_path)]


def _started_under(pid: int, home) -> bool:
    """Whether process `pid` runs with PREFECT_HOME under `home`."""
    try:
        return str(home) in open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    except OSError:
        return False


def test_a_temporary_prefect_server_too_slow_to_start_is_one_error(tmp_path, small_collection):
    """The start-up wait is a setting; when the ad hoc run's temporary Prefect server does not
    answer within it, the CLI says what failed and what to do, without a traceback. The server
    here never answers (`python -m uvicorn` run from a folder whose `uvicorn.py` only sleeps):
    a real one can start within the CLI's own imports plus the wait, whatever the wait."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "uvicorn.py").write_text("import time\ntime.sleep(120)\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}
    result = subprocess.run([sys.executable, "-m", "flows.cli", "upscale", str(small_collection),
                             str(tmp_path / "out"), "--model", "pretrained"],
                            capture_output=True, text=True, env=env, cwd=slow)
    assert result.returncode == 3, result.stdout + result.stderr[-3000:]
    assert result.stderr.startswith("error: the temporary Prefect API server this command "
                                    "starts did not answer within 1 s")
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    servers = subprocess.run(["pgrep", "-f", "uvicorn"], capture_output=True, text=True).stdout
    assert not [p for p in servers.split() if _started_under(int(p), tmp_path)]  # stopped


def test_serve_keeps_prefect_and_dask_warm_for_later_calls(tmp_path, small_collection, databases):
    """`srcnn serve` runs a Prefect server and a Dask cluster; a later `srcnn upscale` from the
    same SRCNN_HOME finds both (no temporary server, no cluster of its own): its flow run is in
    that Prefect server and its chunks ran on that cluster. The call itself runs in serve's
    warm process (the caller imports no Prefect) and gets its exit status back; a call with
    other Prefect settings runs in its own process. Ctrl-C stops all and the files that named
    them go."""
    import signal

    from distributed import Client
    from servers import BIN, free_port, service

    from flows.warm import state_file

    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "SRCNN_DASK_ADDRESS")}
    env |= {"SRCNN_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_API_DATABASE_CONNECTION_URL": databases.prefect(tmp_path / "p.db")}
    prefect_port, dask_port = free_port(), free_port()
    argv = [str(BIN / "srcnn"), "serve", "--prefect-port", str(prefect_port), "--dask-port",
            str(dask_port), "--workers", "1"]
    with service("srcnn-serve", argv, env, tmp_path,
                 f"http://127.0.0.1:{prefect_port}/api/health", 180) as served:
        served.wait_log("srcnn commands run from", 60)
        state = json.loads(state_file(tmp_path).read_text())
        assert state["dask"] == f"tcp://127.0.0.1:{dask_port}"
        photos = tmp_path / "photos"
        photos.mkdir()
        for image in sorted(small_collection.iterdir())[:2]:
            (photos / image.name).write_bytes(image.read_bytes())
        # `srcnn` as its console script runs it, telling at its end whether it imported Prefect
        probe = [sys.executable, "-c", "import atexit, sys; atexit.register(lambda: print("
                 "'prefect imported here:', 'prefect' in sys.modules, file=sys.stderr)); "
                 "from flows.launch import main; main()"]
        result = subprocess.run([*probe, "upscale", str(photos), str(tmp_path / "out"),
                                 "--model", "pretrained:fast"],
                                capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert result.stdout.startswith("2 upscaled, 0 already current, 0 failed")
        # ... in serve's warm process: this one imported nothing of the CLI's
        assert "prefect imported here: False" in result.stderr, result.stderr[-3000:]
        assert "Beginning flow run" not in result.stderr  # as quiet as a call run here
        bad = subprocess.run([*probe, "upscale", str(tmp_path / "nowhere"), "out"],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
        assert bad.returncode == 2 and "nowhere" in bad.stderr  # its exit status comes back
        assert "prefect imported here: False" in bad.stderr
        # Another Prefect setting than the warm process read: the call runs here, still warm
        other = subprocess.run([*probe, "upscale", str(photos), str(tmp_path / "out2"), "--model",
                                "pretrained:fast"], capture_output=True, text=True,
                               env={**env, "PREFECT_LOGGING_LEVEL": "WARNING"}, cwd=tmp_path)
        assert other.returncode == 0, other.stderr[-3000:]
        assert "prefect imported here: True" in other.stderr
        assert other.stdout.startswith("2 upscaled, 0 already current, 0 failed")
        assert "temporary server" not in other.stderr.lower()
        from flows.upscale_bucket import REPORT_KEY

        summary = json.loads((tmp_path / "out" / REPORT_KEY).read_text())
        assert "temporary server" not in result.stderr.lower()
        from prefect.client.orchestration import SyncPrefectClient

        with SyncPrefectClient(state["prefect_api"]) as client:
            run = client.read_flow_run(summary["flow_run_id"])  # in the warm server's history
            assert run.state.is_completed()
        with Client(state["dask"]) as client:  # the chunks ran on the warm cluster
            prefixes = client.run_on_scheduler(lambda dask_scheduler:
                                               list(dask_scheduler.task_prefixes))
        assert "upscale_chunk_task" in prefixes
        # The code changed since serve started (an edit, an upgrade): the call runs here
        import flows.launch

        source = flows.launch.__file__
        was = os.stat(source)
        os.utime(source, ns=(was.st_atime_ns, was.st_mtime_ns + 10**9))
        try:
            edited = subprocess.run([*probe, "upscale", str(photos), str(tmp_path / "out3"),
                                     "--model", "pretrained:fast"], capture_output=True,
                                    text=True, env=env, cwd=tmp_path)
        finally:
            os.utime(source, ns=(was.st_atime_ns, was.st_mtime_ns))
        assert edited.returncode == 0, edited.stderr[-3000:]
        assert "its code changed since srcnn serve started" in edited.stderr
        assert "prefect imported here: True" in edited.stderr
        os.killpg(served.proc.pid, signal.SIGINT)
        assert served.proc.wait(60) == 0
    assert not state_file(tmp_path).exists()
    assert not (tmp_path / ".srcnn" / "calls.sock").exists()


def test_registering_twice_in_a_fresh_home_is_quiet(tmp_path):
    """`srcnn register` twice with no training runs, each call on its own temporary Prefect
    server over the same database: the first seeds the registry with the shipped weights, the
    second finds no training run (the seeding run is not one) and leaves the champion; neither
    prints a traceback (a second create of the champion lock made the server log one), nor
    MLflow's INFO lines (creating its tables, validating the seeded model's input example)."""
    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",
                                                             "SRCNN_DASK_ADDRESS")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "SRCNN_HOME": str(tmp_path)}
    outputs = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "flows.launch", "register", "--scale",
                                 "3"], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "INFO mlflow" not in result.stderr, result.stderr[-3000:]  # MLflow's own lines
        outputs.append(json.loads(result.stdout))
    assert outputs[0]["version"] == "1" and outputs[0]["promoted"]
    assert outputs[1] == {}  # nothing to register, nothing seeded again
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    versions = MlflowClient(uri, uri).search_model_versions("name = 'srcnn-x3'")
    assert [str(v.version) for v in versions] == ["1"]
