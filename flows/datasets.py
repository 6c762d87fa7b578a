"""Where the benchmark sets are: SRCNN_EVAL_DATASETS (comma-separated folders) or, by default,
Set5 and Set14 under the first `shared/datasets` folder found above the working directory."""

from __future__ import annotations

import os
from pathlib import Path


def datasets_root() -> Path | None:
    for base in [Path.cwd(), *Path.cwd().parents]:
        candidate = base / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


def default_eval_datasets() -> list[str]:
    if env := os.environ.get("SRCNN_EVAL_DATASETS"):
        return [p for p in env.split(",") if p]
    root = datasets_root()
    return [str(root / name) for name in ("Set5", "Set14") if root and (root / name).is_dir()]
