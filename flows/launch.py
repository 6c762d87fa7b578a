"""The `srcnn` command's entry point: hand the call to a warm `srcnn serve`, or run it here.

While `srcnn serve` runs, it keeps a process with the CLI, Prefect, the flows and torch
already imported (`flows.zygote`). A call hands it its command line, environment, working
folder and terminal (stdin, stdout and stderr themselves, over a Unix socket in
`SRCNN_HOME/.srcnn/`); a copy of that process (a fork) runs the command as this process would
and reports its exit status. So a call costs what its work costs, not the imports and
start-up. Ctrl-C and SIGTERM are passed on to the copy. Where no `srcnn serve` answers, or it
cannot run this call as this process would (another Python, other Prefect or Dask settings:
the warm process read those when it started), the call runs here as before.

Nothing here imports more than the standard library: it is the cost of every call.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

from flows.warm import socket_path

HERE_ONLY = ("serve", "ui")  # long-running servers: in their own process, always


def python() -> list[str]:
    """This Python: its environment and its interpreter, however the command named it."""
    return [sys.prefix, os.path.realpath(sys.executable)]


def code_stamp() -> str:
    """The project's code as it is now: its .py files' paths and modification times, hashed.
    A warm process started before an edit or an upgrade would run the old code."""
    import hashlib
    import importlib.util

    digest = hashlib.sha256()
    for name in ("flows", "srcnn", "tasks"):
        for folder, _, files in sorted(os.walk(os.path.dirname(
                importlib.util.find_spec(name).origin))):
            for file in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, file)
                digest.update(f"{path}\0{os.stat(path).st_mtime_ns}\0".encode())
    return digest.hexdigest()


def request(argv: list[str]) -> bytes:
    """What a call hands the warm process: everything that makes it this call."""
    return json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                       "python": python(), "code": code_stamp()}).encode()


def warm_call(argv: list[str], home: Path) -> int | None:
    """Run `srcnn ARGV` in the warm process of a `srcnn serve` in `home`; its exit status,
    or None where none answers or it cannot run this call (run it here then)."""
    path = socket_path(home)
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        body = request(argv)
        socket.send_fds(sock, [len(body).to_bytes(8, "big")], [0, 1, 2])
        sock.sendall(body)
        replies = sock.makefile("rb")
        first = json.loads(replies.readline() or b"{}")
    except (OSError, ValueError):
        sock.close()
        return None
    if "pid" not in first:  # {"fallback": why}: this call needs a process of its own
        sock.close()
        print(f"note: srcnn serve's warm process cannot run this call ({first.get('fallback')}"
              "): it runs in this process", file=sys.stderr)
        return None

    def forward(signum, _frame):
        try:
            os.kill(first["pid"], signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    try:
        last = json.loads(replies.readline() or b"{}")
    except (OSError, ValueError):
        last = {}
    finally:
        sock.close()
    if "exit" not in last:
        print("error: the warm srcnn process (srcnn serve) ended this call without an exit "
              "status", file=sys.stderr)
        return 1
    return int(last["exit"])


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] not in HERE_ONLY:
        code = warm_call(argv, Path(os.environ.get("SRCNN_HOME") or os.getcwd()).resolve())
        if code is not None:
            sys.exit(code)
    from flows.cli import main as run_here

    run_here()


if __name__ == "__main__":
    main()
