#!/usr/bin/env bash
# The CUDA upscaling path, verified and measured in one GPU session (issue 11):
#   1. tests/test_gpu.py: PIL-exact bicubic on the GPU, tiled == whole, GPU == CPU path;
#   2. benchmarks/upscale_gpu.py: bare forward rate vs the upscale-bucket worker path.
# On a machine with torch, Pillow and numpy; wheels in .whl/ (dask, distributed, pydantic,
# pydantic-settings, fsspec, ...) are installed to /tmp/site first when present.
#   bash benchmarks/gpu_upscale.sh [OUT]
set -u
OUT=${1:-${OUT:-/tmp/gpu-out}}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
echo "== 1. GPU tests"
timeout 240 python3 -m pytest -q -s --noconftest -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-test.log"
echo "== 2. upscale throughput"
timeout ${BENCH_S:-300} python3 benchmarks/upscale_gpu.py --images ${IMAGES:-256} 2>&1 | tee "$OUT/gpu-bench.log"
