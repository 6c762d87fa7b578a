#!/usr/bin/env bash
# Ablation at fixed inference cost: the fast-x3 net (CHANNELS filters, default 28, 8 layers:
# 5,009 multiply-adds per output pixel; 32 filters: 6,489) trained with and without SESR
# re-parameterisation (expand 2 vs plain 3x3 convolutions) for the same wall time, side by side
# (one CPU thread each, so both see the same machine), T91 only, each selected on the store's
# held-out T91 images, Set5/Set14 x3 scored at the end. Both runs are `srcnn train`: the
# product's one training loop, logged to MLflow under SRCNN_HOME (default: a temporary folder).
#
#   [CHANNELS=28] bash benchmarks/reparam_ablation.sh [MINUTES] [DATASETS]
set -euo pipefail
minutes=${1:-12}
data=${2:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
srcnn=${SRCNN:-.venv/bin/srcnn}
channels=${CHANNELS:-28}
export SRCNN_HOME=${SRCNN_HOME:-$(mktemp -d)}
"$srcnn" patches "$data/T91" "$SRCNN_HOME/store" --preset fast-x3 > "$SRCNN_HOME/patches.log"
for expand in 2 0; do
  OMP_NUM_THREADS=1 "$srcnn" train "$SRCNN_HOME/store" --preset fast-x3 --n1 "$channels" \
    --n2 "$channels" --expand "$expand" --max-minutes "$minutes" --epochs 1000 \
    --eval-dataset "$data/Set5" --eval-dataset "$data/Set14" --run-name "expand$expand" \
    > "$SRCNN_HOME/expand$expand.log" 2>&1 &
done
wait
for expand in 2 0; do
  echo "## expand $expand ($channels filters, $minutes min; MLflow under $SRCNN_HOME)"
  grep -E "^\| (set|Set5|Set14) " "$SRCNN_HOME/expand$expand.log"
done
