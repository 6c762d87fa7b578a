#!/usr/bin/env bash
# The CUDA upscaling path, verified and measured in one GPU session (issues 11 and 29):
#   1. tests/test_gpu.py: PIL-exact bicubic on the GPU, tiled == whole, GPU == CPU path;
#   2. benchmarks/upscale_gpu.py: bare forward rate vs the upscale-bucket worker path (and on
#      1 and 2 worker processes; the profile of the GPU pipeline goes to OUT);
#   3. benchmarks/gpu_jpeg.py: nvJPEG (torchvision, where it loads) vs the CPU JPEG encoders;
#   4. benchmarks/device_resample.py: the bicubic's taps one by one against all gathered.
# On a machine with torch, Pillow and numpy; `bash benchmarks/gpu_wheels.sh` gathers the rest
# here into .whl/ (carried: run(..., carry=[".whl"])), installed to /tmp/site first.
#   bash benchmarks/gpu_upscale.sh [OUT]
# Its steps stop at 150 + 310 + 100 + 20 s (TEST_S, BENCH_S, JPEG_S, RESAMPLE_S): within one
# device call's 600.
set -u
export OUT=${1:-${OUT:-/tmp/gpu-out}}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
PHOTOS=() && [ -d .whl/photos ] && PHOTOS=(--photos .whl/photos)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
echo "== 1. GPU tests"
timeout ${TEST_S:-150} python3 -m pytest -q -s --noconftest -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-test.log"
echo "== 2. upscale throughput"
timeout ${BENCH_S:-310} python3 benchmarks/upscale_gpu.py --images ${IMAGES:-256} \
  --processes ${PROCESSES:-1,2} "${PHOTOS[@]}" 2>&1 | tee "$OUT/gpu-bench.log"
echo "== 3. JPEG on the GPU"
TV=
if ! python3 -c "import torchvision" 2>/dev/null && ls .whl/torchvision/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/tv \
    .whl/torchvision/*.whl && TV=/tmp/tv:
fi
PYTHONPATH=$TV$PYTHONPATH timeout ${JPEG_S:-100} python3 benchmarks/gpu_jpeg.py "${PHOTOS[@]}" 2>&1 | tee "$OUT/gpu-jpeg.log"
echo "== 4. the device path's bicubic"
timeout ${RESAMPLE_S:-20} python3 benchmarks/device_resample.py --size 2000x1500 2>&1 | tee "$OUT/gpu-resample.log"
