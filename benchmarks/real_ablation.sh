#!/bin/bash
# The robust family's ablation at x3 (docs/robust-family.md): five arms at equal training time,
# all at once on this machine's cores (equal conditions), each selected on the held-out T91
# images under its store's mixture and scored on those images (copied to HOLDOUT) under every
# degradation of the suite. Prints the table at the end.
#   benchmarks/real_ablation.sh T91_DIR HOLDOUT_DIR WORK_DIR [MINUTES]
set -euo pipefail
T91=$1 HOLDOUT=$2 W=$3 M=${4:-25}
S=${SRCNN:-srcnn}
export OMP_NUM_THREADS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=300  # five servers start at once
mkdir -p "$W"
store() {  # store NAME FLAGS...
  local n=$1; shift
  [ -d "$W/$n/store" ] || (cd "$W" && SRCNN_HOME=$W/$n PREFECT_HOME=$W/$n/.prefect \
    $S patches "$T91" "$W/$n/store" --preset real-x3 "$@" > "$W/$n-patches.log" 2>&1)
}
store mix
store oldmix --resize-bicubic-aa 0.25 --resize-cubic 0.35 --resize-linear 0.2 --resize-area 0.2 \
  --blur-prob 0.2 --noise-prob 0.3 --jpeg-prob 0.7
store cleanheavy --resize-bicubic-aa 0.6 --resize-cubic 0.15 --resize-linear 0.1 \
  --resize-area 0.15 --blur-prob 0.1 --noise-prob 0.2 --jpeg-prob 0.4
arm() {  # arm NAME STORE FLAGS...
  local n=$1 st=$2; shift 2
  mkdir -p "$W/ablate-$n"
  (cd "$W/ablate-$n" && SRCNN_HOME=$W/ablate-$n PREFECT_HOME=$W/ablate-$n/.prefect \
    $S train "$W/$st/store" --preset real-x3 --max-minutes "$M" --epochs 1000 \
    --eval-dataset "$HOLDOUT" --run-name "ablate-$n" "$@" > "$W/ablate-$n.log" 2>&1) &
  sleep 40  # staggered: the ephemeral Prefect servers start one at a time
}
arm scratch mix --lr 1e-3
arm finetune mix --init-model pretrained:fast
arm smoothl1 mix --init-model pretrained:fast --loss smooth_l1
arm oldmix oldmix --init-model pretrained:fast
arm cleanheavy cleanheavy --init-model pretrained:fast
wait
python3 - "$W" <<'PY'
import re, sys
w = sys.argv[1]
arms = {"scratch": "from scratch (lr 1e-3), this mixture, L1",
        "oldmix": "fine-tuned from fast, the first mixture, L1",
        "finetune": "fine-tuned from fast, this mixture, L1 (the shipped recipe)",
        "smoothl1": "fine-tuned from fast, this mixture, smooth L1",
        "cleanheavy": "fine-tuned from fast, a cleaner mixture, L1"}
print("| arm | epochs | clean gain | worst realistic gain | mean realistic gain | cubic | cubic+jpeg60 | bicubic+jpeg75 |")
print("|---|---|---|---|---|---|---|---|")
for arm, what in arms.items():
    text = open(f"{w}/ablate-{arm}.log").read()
    rows = {m[1].strip(): float(m[2]) - float(m[3]) for m in re.finditer(
        r"^\| [^|]+ \| x3 \| ([^|]+) \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \|", text, re.M)}
    real = {k: v for k, v in rows.items() if k != "bicubic"}
    epochs = len(re.findall(r"epoch \d+:", text))
    print(f"| {what} | {epochs} | {rows['bicubic']:+.2f} | {min(real.values()):+.2f} | "
          f"{sum(real.values()) / len(real):+.2f} | {rows['cubic']:+.2f} | "
          f"{rows['cubic+jpeg60']:+.2f} | {rows['bicubic+jpeg75']:+.2f} |")
PY
