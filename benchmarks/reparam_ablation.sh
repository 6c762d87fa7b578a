#!/usr/bin/env bash
# Issue 13's ablation at fixed inference cost: the fast-x3 net (CHANNELS filters, default 28,
# 8 layers: 5,009 multiply-adds per output pixel; 32 filters: 6,489) trained with and without
# SESR re-parameterisation (expand 2 vs plain 3x3 convolutions) for the same wall time, side by
# side (one CPU thread each, so both see the same machine), T91 only, selected on held-out T91
# images, Set5/Set14 x3 at the end.
#
#   [CHANNELS=28] bash benchmarks/reparam_ablation.sh [MINUTES] [DATASETS]
set -euo pipefail
minutes=${1:-12}
data=${2:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
py=${PYTHON:-.venv/bin/python}
channels=${CHANNELS:-28}
out=$(mktemp -d)
for expand in 2 0; do
  "$py" benchmarks/lr_recipe.py --t91 "$data/T91" --scale 3 --channels "$channels" --layers 7 \
    --expand "$expand" --patch 32 --stride 8 --batch 32 --minutes "$minutes" --threads 1 \
    --report "$data/Set5" "$data/Set14" > "$out/expand$expand.log" 2>&1 &
done
wait
echo "| training ($channels filters) | steps in ${minutes} min | held-out T91 PSNR | Set5 x3 | Set14 x3 |"
echo "|---|---|---|---|---|"
for expand in 2 0; do
  tail -n 1 "$out/expand$expand.log" | "$py" -c "
import json, sys
r = json.loads(sys.stdin.read())
name = 'expand $expand (re-parameterised)' if $expand else 'plain 3x3 convolutions'
print(f\"| {name} | {r['steps']} | {r['best_val_psnr']:.3f} | {r['Set5']:.3f} | {r['Set14']:.3f} |\")"
done
