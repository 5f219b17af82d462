#!/usr/bin/env bash
# CPU study 3 (issue 20 item 6b): does a combination -- SFT-GO's grouping with InfoSFT or EAFT token weights
# (--token_weight) -- learn more or forget less than either part alone? The learn-forget setup of study 2
# (configs/cpu/gsm8k_learn_forget.yaml: 400 GSM8K-train examples, 20 steps of 4 x <=256 tokens, lr 5e-5 constant):
#   learn:  held-out cross-entropy on the first 100 GSM8K-test rows,
#   forget: held-out cross-entropy on the last 100 Alpaca rows (never trained on),
# both grouped by TF-IDF at eta 90 for every run, and the base model's once (OUT/base). No harness benchmarks: study 2
# showed that at this scale they cannot tell runs apart. Runs, seed by seed: sft-go (TF-IDF, eta 90, lam 0.9),
# infosft, sft-go + --token_weight infosft; then (EAFT=1, the default) eaft and sft-go + --token_weight eaft; then
# (SFT=1) plain sft as the common baseline. Run from the repository root; re-running skips finished runs / evaluations:
#   OMP_NUM_THREADS=1 bash configs/cpu/study3_combine.sh [OUT=runs/study3/combine] [DATA=../shared/data]
#   .venv/bin/sftgo report OUT --output_dir OUT/report
set -euo pipefail
OUT=${1:-runs/study3/combine}
DATA=${2:-../shared/data}
BIN=${BIN:-.venv/bin}
SEEDS=${SEEDS-1 2 3}   # SEEDS= (empty): only the base model
EAFT=${EAFT:-1}
SFT=${SFT:-0}
mkdir -p "$OUT/logs"
[ -f "$OUT/heldout_gsm8k.jsonl" ] || head -n 100 "$DATA/gsm8k_test.jsonl" > "$OUT/heldout_gsm8k.jsonl"
[ -f "$OUT/heldout_alpaca.json" ] || "$BIN/python" scripts/slice_data.py "$DATA/alpaca_5000.json" "$OUT/heldout_alpaca.json" --start 4900 --stop 5000
HELD=(--scorer tfidf --percentile 90 --max_length 256)
GO=(--objective sft-go --scorer tfidf --percentile 90 --lam 0.9)

evaluate() {  # $1 = run directory or model, $2 = log name, $3 = where the results land, then extra eval flags
  local run=$1 name=$2 results=$3; shift 3
  for set in alpaca gsm8k; do   # forget, learn
    local file="$OUT/heldout_$set.json"; [ "$set" = gsm8k ] && file="$OUT/heldout_gsm8k.jsonl"
    if [ ! -f "$results/heldout-heldout_$set.json" ]; then
      echo "$(date -u +%FT%TZ) eval $name on $set"
      "$BIN/sftgo" eval "$run" --heldout "$file" "${HELD[@]}" "$@" > "$OUT/logs/$name.eval-$set.log" 2>&1
    fi
  done
}

train() {  # $1 = run name, $2 = seed, then the objective's flags
  local name=$1 seed=$2; shift 2
  local run="$OUT/${name}_s${seed}"
  if [ ! -f "$run/summary.json" ] || [ ! -f "$run/final/config.json" ]; then
    echo "$(date -u +%FT%TZ) train $run"
    # save_steps 1000 > 20 steps: no checkpoint at all (a complete run keeps final/ only: --keep_checkpoints none),
    # so an interrupted run starts over.
    "$BIN/sftgo" train configs/cpu/gsm8k_learn_forget.yaml --dataset "$DATA/gsm8k_train.jsonl" "$@" --seed "$seed" \
        --output_dir "$run" \
        --save_total_limit 1 --resume_from_checkpoint false > "$OUT/logs/${name}_s${seed}.train.log" 2>&1
  fi
  evaluate "$run" "${name}_s${seed}" "$run/eval"
}

# The "before" of learn and forget; a model (not a run directory) writes its results into --output_dir itself.
evaluate smollm2-135m-instruct base "$OUT/base" --output_dir "$OUT/base"
for seed in $SEEDS; do
  train sft-go "$seed" "${GO[@]}"
  train infosft "$seed" --objective infosft
  train sft-go_tw-infosft "$seed" "${GO[@]}" --token_weight infosft
done
if [ "$EAFT" = 1 ]; then
  for seed in $SEEDS; do
    train eaft "$seed" --objective eaft
    train sft-go_tw-eaft "$seed" "${GO[@]}" --token_weight eaft
  done
fi
if [ "$SFT" = 1 ]; then
  for seed in $SEEDS; do train sft "$seed" --objective sft; done
fi
echo "$(date -u +%FT%TZ) done: $OUT/*/eval/heldout-heldout_{gsm8k,alpaca}.json; report: $BIN/sftgo report $OUT --output_dir $OUT/report"
