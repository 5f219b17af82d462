#!/usr/bin/env bash
# CPU study 3 (issue 20 item 6a): is SFT-GO's worst-group loss at or below SFT's near a minimum of the training loss?
# SFT and SFT-GO (TF-IDF, eta 90, lam 0.9) x seeds 0,1,2 on 48 Alpaca rows (0-47) for 5 epochs
# (configs/cpu/study3_prop1.yaml), then per run the worst-group loss on its own training rows and on 200 held-out rows
# (4800-4999, as study 1), both grouped by TF-IDF at eta 90 (the same groups for every run). About 75 min at one
# thread on a busy 2-core machine. Run from the repository root; re-running skips finished runs and evaluations:
#   OMP_NUM_THREADS=1 bash configs/cpu/study3_prop1.sh [OUT=runs/study3/prop1] [DATA=../shared/data]
#   .venv/bin/sftgo report OUT --output_dir OUT/report
# Each run writes eval/heldout-train.json (its training rows) and eval/heldout-heldout.json (held-out rows).
set -euo pipefail
OUT=${1:-runs/study3/prop1}
DATA=${2:-../shared/data}
BIN=${BIN:-.venv/bin}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT/data" "$OUT/logs"
[ -f "$OUT/data/train.json" ] || "$BIN/python" scripts/slice_data.py "$DATA/alpaca_5000.json" "$OUT/data/train.json" --start 0 --stop 48
[ -f "$OUT/data/heldout.json" ] || "$BIN/python" scripts/slice_data.py "$DATA/alpaca_5000.json" "$OUT/data/heldout.json" --start 4800 --stop 5000
HELD=(--scorer tfidf --percentile 90 --max_length 64)
for seed in $SEEDS; do
  for obj in sft sft-go; do
    run="$OUT/${obj}_s${seed}"
    if [ ! -f "$run/summary.json" ] || [ ! -f "$run/final/config.json" ]; then
      echo "$(date -u +%FT%TZ) train $run"
      # No checkpoint at all (save_steps > the run; a complete run keeps final/ only), so an interrupted run starts over.
      "$BIN/sftgo" train configs/cpu/study3_prop1.yaml --dataset "$OUT/data/train.json" --objective "$obj" \
          --seed "$seed" --output_dir "$run" --resume_from_checkpoint false > "$OUT/logs/${obj}_s${seed}.train.log" 2>&1
    fi
    for split in train heldout; do
      if [ ! -f "$run/eval/heldout-$split.json" ]; then
        echo "$(date -u +%FT%TZ) eval $run on $split"
        "$BIN/sftgo" eval "$run" --heldout "$OUT/data/$split.json" "${HELD[@]}" > "$OUT/logs/${obj}_s${seed}.eval-$split.log" 2>&1
      fi
    done
  done
done
# The base model on the same two sets (the "before"); a model (not a run directory) writes into --output_dir itself.
for split in train heldout; do
  if [ ! -f "$OUT/base/heldout-$split.json" ]; then
    echo "$(date -u +%FT%TZ) eval the base model on $split"
    "$BIN/sftgo" eval smollm2-135m-instruct --heldout "$OUT/data/$split.json" "${HELD[@]}" --output_dir "$OUT/base" \
        > "$OUT/logs/base.eval-$split.log" 2>&1
  fi
done
echo "$(date -u +%FT%TZ) done: $OUT/*/eval/heldout-{train,heldout}.json; report: $BIN/sftgo report $OUT --output_dir $OUT/report"
