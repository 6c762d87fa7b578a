"""Where the benchmark sets are: SRCNN_EVAL_DATASETS (comma-separated folders) or, by default,
Set5 and Set14 under the first `shared/datasets` folder found above the working directory. A
bare name given for a benchmark folder (`--dataset Set5`) means that folder there too."""

from __future__ import annotations

import os
from pathlib import Path


def datasets_root() -> Path | None:
    for base in [Path.cwd(), *Path.cwd().parents]:
        candidate = base / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


def resolve_dataset(name: str) -> str:
    """A benchmark folder: `name` as a path when it is a folder, else a bare name (Set5) under
    the datasets root. Otherwise a clear error naming it and where it was looked for, raised
    before any training or scoring starts."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    root = datasets_root() if len(path.parts) == 1 else None  # a path is never looked up there
    if root is not None and (root / path).is_dir():
        return str(root / path)
    looked = f"{Path.cwd()}" + (f" and {root}" if root is not None else "")
    raise FileNotFoundError(f"benchmark dataset {name!r}: no such folder (looked in {looked})")


def resolve_datasets(names: list[str] | None) -> list[str] | None:
    return None if names is None else [resolve_dataset(n) for n in names]


def default_eval_datasets() -> list[str]:
    if env := os.environ.get("SRCNN_EVAL_DATASETS"):
        return [p for p in env.split(",") if p]
    root = datasets_root()
    return [str(root / name) for name in ("Set5", "Set14") if root and (root / name).is_dir()]
