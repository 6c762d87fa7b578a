#!/usr/bin/env bash
# The CUDA training path, measured, and the shipped weights trained, in one GPU session:
#   1. the CUDA test (bf16 autocast, channels_last);
#   2. training throughput, fp32 (TF32) and bf16, batch 64 and 256;
#   3. time to the paper's Set5 x3 PSNR for `--preset x3`, alone on the GPU;
#   4. `--preset x2`, `x3` and `x4` side by side on the GPU, best models saved under OUT/xS.
#
#   bash benchmarks/gpu_recipe.sh DATASETS OUT    (DATASETS holds T91, Set5 and Set14)
# Then, here: srcnn export --model OUT/x3 --to srcnn/pretrained/x3 --scale 3 --dataset ... .
set -u
DATA=${1:?folder holding T91, Set5 and Set14}
OUT=${2:?output folder}
TTP_MIN=${TTP_MIN:-1}      # the time-to-paper run's schedule, minutes
SHIP_MIN=${SHIP_MIN:-5.5}  # each shipped model's schedule, minutes
STEPS=${STEPS:-3000}       # optimiser steps between evaluations in the shipped runs
STRIDE=${STRIDE:-8}        # patch stride: 4x the preset's patches, for the GPU's many more steps
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
PHASES=${PHASES:-1234}      # which of the steps above to run
SCALES=${SCALES:-2 3 4}
PRECISION=${PRECISION:-}   # --fp32: float32 training on CUDA (bf16 autocast otherwise)
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
bench() { timeout "$1" "$PY" benchmarks/train_speed.py --images "$DATA/T91" --device "$DEVICE" \
  --stride "$STRIDE" "${@:2}"; }
SHIP_S=$(awk "BEGIN {print int($SHIP_MIN * 60 + 120)}")

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv || true
[[ $PHASES == *1* ]] && echo "== 1. CUDA test" && timeout 120 "$PY" -m pytest -q --noconftest -p no:cacheprovider tests/test_gpu.py
[[ $PHASES == *2* ]] && echo "== 2. throughput" && bench 120 --preset x3 --throughput --steps ${TP_STEPS:-200}
[[ $PHASES == *3* ]] && echo "== 3. time to paper, x3, ${TTP_MIN} min schedule" &&
  bench 200 $PRECISION --preset x3 --minutes "$TTP_MIN" --set5 "$DATA/Set5" --steps-per-epoch 1000
[[ $PHASES == *4* ]] || exit 0
echo "== 4. shipped weights, x${SCALES// /, x} side by side, ${SHIP_MIN} min each"
mkdir -p "$OUT"
for s in $SCALES; do
  bench "$SHIP_S" $PRECISION --preset "x$s" --minutes "$SHIP_MIN" --set5 "$DATA/Set5" --steps-per-epoch "$STEPS" \
    --save "$OUT/x$s" 2>&1 | sed -u "s/^/x$s /" >> "$OUT/train.log" &
done
wait
grep -h "time to\|trained" "$OUT/train.log"
