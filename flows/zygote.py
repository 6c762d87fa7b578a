"""The warm process of `srcnn serve`: the CLI, Prefect, the flows and torch imported once;
each call that `flows.launch` hands over runs in a fork of it, with the caller's command line,
environment, working folder and terminal, as if in the caller's own process.

    python -m flows.zygote SOCKET    (started and stopped by `srcnn serve`)

This process stays single-threaded and never runs a command itself (a fork copies only the
calling thread; torch's thread pools start in the fork). What was read when the imports ran
(Prefect's and Dask's settings, fsspec's and torch's) must match the caller's environment:
a call whose values differ, or that runs another Python, or whose code changed since (an edit,
an upgrade), is answered "fallback" and runs in its own process.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sys
import traceback
from pathlib import Path

# Environment variables read when the modules below are imported: a call must agree on them.
READ_AT_IMPORT = ("PREFECT_", "DASK_", "FSSPEC_", "TORCH_", "PYTORCH_", "PYTHONPATH")


def _read_at_import(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(READ_AT_IMPORT)}


def _reply(conn: socket.socket, body: dict) -> None:
    conn.sendall(json.dumps(body).encode() + b"\n")


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, 8, 3)
    size = int.from_bytes(head, "big")
    body = bytearray()
    while len(body) < size:
        part = conn.recv(min(1 << 16, size - len(body)))
        if not part:
            raise ConnectionError("the call hung up")
        body += part
    return json.loads(body), fds


def mismatch(call: dict, own: dict[str, str], stamp: str) -> str | None:
    """Why this process cannot run `call` as the caller's own process would, or None."""
    from flows.launch import python

    if call.get("python") != python():
        return "another Python"
    if call.get("code") != stamp:
        return "its code changed since srcnn serve started: restart srcnn serve"
    env = dict(call["env"])
    for key in ("PREFECT_API_URL", "SRCNN_DASK_ADDRESS"):  # what `discover` would set
        env.setdefault(key, os.environ[key])
    from flows import PREFECT_DEFAULTS

    for key, value in PREFECT_DEFAULTS.items():  # what `prefect_defaults` would set
        env.setdefault(key, value)
    theirs = _read_at_import(env)
    if differ := sorted(k for k in theirs.keys() | own.keys() if theirs.get(k) != own.get(k)):
        return f"settings read at start-up differ: {', '.join(differ)}"
    call["env"] = env
    return None


def run_call(conn: socket.socket, own: dict[str, str], stamp: str) -> int:
    """In the fork: take the call's terminal, folder and environment, run the CLI, report."""
    call, fds = _receive(conn)
    if why := mismatch(call, own, stamp):
        for fd in fds:
            os.close(fd)
        _reply(conn, {"fallback": why})
        return 0
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(call["cwd"])
    os.environ.clear()
    os.environ.update(call["env"])
    sys.argv = ["srcnn", *call["argv"]]
    _reply(conn, {"pid": os.getpid()})
    from flows.cli import main

    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (exc.code is not None)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001  as an uncaught error ends a process: shown, status 1
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # as a process's end would: Prefect sends its last run logs
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    _reply(conn, {"exit": int(code)})
    return int(code)


def serve_calls(path: Path) -> None:
    from flows import prefect_defaults

    prefect_defaults()
    import torch  # noqa: F401  what the commands import: once, here

    import flows.build_patches  # noqa: F401
    import flows.cli  # noqa: F401
    import flows.pipeline  # noqa: F401
    import flows.register_best  # noqa: F401
    import flows.train_srcnn  # noqa: F401
    import flows.upscale_bucket  # noqa: F401
    import srcnn.inference.tiling  # noqa: F401
    from flows.launch import code_stamp

    own = _read_at_import(dict(os.environ))
    stamp = code_stamp()
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)  # only this user may hand calls over
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            conn, _ = listener.accept()
            if os.fork() == 0:  # the call's process from here on: it never returns
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                code = 1
                try:
                    code = run_call(conn, own, stamp)
                except BaseException:  # noqa: BLE001  the call's side says it ended unreported
                    traceback.print_exc()
                finally:
                    os._exit(code)
            conn.close()
    finally:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    serve_calls(Path(sys.argv[1]))
