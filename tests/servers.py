"""Real services as subprocesses for the end-to-end tests (Prefect server and worker, MLflow).

Each runs in a process group of its own with its output in a log file, so a test can wait on a
health URL, quote the log tail when something fails, and stop the service and everything it
spawned (uvicorn workers, flow-run subprocesses): SIGTERM to the group, then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's console scripts: prefect, mlflow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A subprocess with its output in `log_dir/<name>.log`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path,
                 cwd: Path = ROOT):
        self.name, self.log, self.argv, self.env = name, log_dir / f"{name}.log", argv, env
        self._file = self.log.open("wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, chars: int = 6000) -> str:
        text = self.log.read_text(errors="replace")
        return f"--- {self.name} log ({self.log}), last {chars} chars ---\n{text[-chars:]}"

    def wait_http(self, url: str, timeout: float) -> None:
        """Until `url` answers 200; fails with the log if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"{self.name}: {url} not healthy after {timeout:.0f} s\n{self.tail()}")

    def wait_log(self, text: str, timeout: float) -> None:
        """Until `text` appears in the log; fails with the log if the process exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {text!r} in its log (exit code "
                            f"{self.proc.returncode})\n{self.tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to the process group; SIGKILL what is left after 15 s."""
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._file.close()


@contextmanager
def service(name: str, argv: list[str], env: dict[str, str], log_dir: Path,
            health: str | None = None, timeout: float = 120, cwd: Path = ROOT):
    """Start a Service, wait for its health URL, stop it on the way out whatever happened."""
    svc = Service(name, argv, env, log_dir, cwd)
    try:
        if health:
            svc.wait_http(health, timeout)
        yield svc
    finally:
        svc.stop()


def harness_env(**extra: str) -> dict[str, str]:
    """This process's environment with the session's Prefect server (the `prefect_server`
    fixture's) as PREFECT_API_URL, and `extra`: a command in its own process then uses that
    server instead of starting a temporary one (`test_warm.py` tests that path)."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), **extra}


def run(argv: list[str], env: dict[str, str], timeout: float,
        also: tuple[Service, ...] = ()) -> subprocess.CompletedProcess:
    """Run a command from the repository root; if it fails, fail with its output and the log
    tails of the services in `also`."""
    try:
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        done = subprocess.CompletedProcess(argv, f"timed out after {timeout} s", exc.stdout,
                                           exc.stderr)
    if done.returncode != 0:
        logs = "\n".join(s.tail() for s in also)
        pytest.fail(f"{' '.join(argv)} exited with {done.returncode}\n--- stdout ---\n"
                    f"{done.stdout}\n--- stderr ---\n{done.stderr}\n{logs}")
    return done


class TcpProxy:
    """A loopback TCP relay to `target_port` that can be cut (its connections reset, new ones
    refused: an endpoint that stops answering) and restored on the same port, so the service
    behind it keeps its state."""

    def __init__(self, target_port: int):
        import threading

        self.port, self.target = free_port(), target_port
        self._lock, self._conns = threading.Lock(), set()
        self._server: socket.socket | None = None
        self.start()

    def start(self) -> None:
        import threading

        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
