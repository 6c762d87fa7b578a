"""A task that waits for a later one: what shows whether a window of tasks is collected as
they end (the later task gets submitted) or in submission order (it never does)."""

from __future__ import annotations

import time
from pathlib import Path

GATE_WAIT_S = 60  # only a guard: the gate opens as soon as task `opener` has run


def gated(i: int, folder: str, opener: int, wait_s: float = GATE_WAIT_S) -> str:
    """Task 0 waits for the file that task `opener` writes; the others return at once."""
    gate = Path(folder) / "open"
    if i == opener:
        gate.write_text("open")
    if i == 0:
        deadline = time.monotonic() + wait_s
        while not gate.exists():
            if time.monotonic() > deadline:
                return "gate never opened"
            time.sleep(0.05)
        return "passed the gate"
    return f"task {i}"
