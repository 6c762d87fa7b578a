#!/usr/bin/env bash
# What a lent GPU machine lacks for `benchmarks/gpu_upscale.sh`, gathered here into .whl/ (git
# ignores it; the device tool carries it, 64 MiB with the tree): the worker path's wheels at
# the versions of this venv, for the machine's Python 3.12 (PYVER), less what its image already holds
# (the device library's KINDS.md: torch 2.11 with torchvision 0.26, numpy, scikit-image,
# pytest, safetensors 0.8). What it holds at unknown versions that our pins need (fsspec,
# Pillow: AVIF needs 11.3, distributed's own needs) is carried too, a few MB.
#   bash benchmarks/gpu_wheels.sh            then, with the device tool:
#   run(command="bash benchmarks/gpu_upscale.sh $OUT", carry=[".whl"])
set -eu
PY=${PYTHON:-.venv/bin/python}
PRESENT=${PRESENT:-"torch numpy scipy scikit-image pytest pluggy iniconfig pygments colorama \
exceptiongroup importlib-metadata zipp safetensors"}
rm -rf .whl && mkdir -p .whl
WANTED=$(PRESENT="$PRESENT" "$PY" - <<'PY'
import os
from importlib.metadata import requires, version

# the worker path's imports, and theirs (found in the project's venv, at its versions)
roots = ["dask", "distributed", "pydantic", "pydantic-settings", "pillow", "pillow-heif",
         "imagecodecs", "zarr"]
skip = set(os.environ["PRESENT"].split())
seen, todo = set(), list(roots)
while todo:
    name = todo.pop().lower().replace("_", "-")
    if name in seen or name in skip:
        continue
    try:
        version(name)
    except Exception:
        continue  # for another Python, or an extra this venv does not have
    seen.add(name)
    for req in requires(name) or []:
        if "extra ==" not in req:
            todo.append(req.split(";")[0].split("[")[0].split()[0].split("<")[0]
                        .split(">")[0].split("=")[0].split("!")[0].split("~")[0])
print(" ".join(f"{n}=={version(n)}" for n in sorted(seen)))
PY
)
"$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
  --python-version "${PYVER:-3.12}" --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl $WANTED
ls .whl | sed 's/-[0-9].*//' | tr '\n' ' ' && echo && du -sh .whl
