#!/usr/bin/env bash
# Learn vs forget on CPU (issue 14): 5 objectives x 2 seeds on a GSM8K-train subset (configs/cpu/gsm8k_learn_forget.yaml),
# then per run:
#   forget: held-out Alpaca loss (general instructions the runs never train on) and ARC-C / HellaSwag / MMLU subsets
#           (the harness's registered tasks on the local files), each as a difference from the base model;
#   learn:  held-out GSM8K-test loss and GSM8K accuracy (the harness's gsm8k task, 0-shot, chat template, greedy).
# About 45 minutes on 2 idle cores. Run from the repository root after `make install`; re-running skips finished runs:
#   bash configs/cpu/gsm8k_learn_forget.sh [OUT=runs/learn_forget] [DATA=../shared/data] [LIMIT=30]
#   .venv/bin/sftgo report OUT --output_dir OUT/report
# Held-out losses use one grouping for every run (TF-IDF, eta = 90) and the base model's are in OUT/base/.
set -euo pipefail
OUT=${1:-runs/learn_forget}
DATA=${2:-../shared/data}
LIMIT=${3:-30}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
head -n 100 "$DATA/gsm8k_test.jsonl" > "$OUT/heldout_gsm8k.jsonl"
"$BIN/python" - "$DATA/alpaca_5000.json" "$OUT/heldout_alpaca.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
json.dump(rows[-100:], open(sys.argv[2], "w"))   # the training runs use GSM8K only; any Alpaca rows are held out
PY
HELD=(--scorer tfidf --percentile 90 --max_length 256)
GENERAL=(--tasks arc_challenge,hellaswag,mmlu --data_dir "$DATA" --limit "$LIMIT")
LEARN=(--tasks gsm8k --data_dir "$DATA" --limit "$LIMIT" --num_fewshot 0 --apply_chat_template --max_gen_toks 256)
for seed in 1 2; do
  for obj in sft dft infosft target-sft sft-go; do
    run="$OUT/${obj}_s${seed}"
    [ -f "$run/final/config.json" ] || "$BIN/sftgo" train configs/cpu/gsm8k_learn_forget.yaml --objective "$obj" \
        --seed "$seed" --output_dir "$run"
    "$BIN/sftgo" eval "$run" --heldout "$OUT/heldout_alpaca.json" "${HELD[@]}"   # forget (loss) -> heldout-heldout_alpaca.json
    "$BIN/sftgo" eval "$run" --heldout "$OUT/heldout_gsm8k.jsonl" "${HELD[@]}"   # learn (loss): the last one -> heldout.json
    "$BIN/sftgo" eval "$run" "${GENERAL[@]}"   # forget (accuracy); the base model is evaluated once and cached
    "$BIN/sftgo" eval "$run" "${LEARN[@]}"     # learn (accuracy), with the base model's beside it
  done
done
# The base model's held-out losses on the same two sets (the "before" of learn / forget).
"$BIN/sftgo" eval smollm2-135m-instruct --heldout "$OUT/heldout_alpaca.json" "${HELD[@]}" --output_dir "$OUT/base"
"$BIN/sftgo" eval smollm2-135m-instruct --heldout "$OUT/heldout_gsm8k.jsonl" "${HELD[@]}" --output_dir "$OUT/base"
echo "done: $OUT/*/eval/*.json; report: $BIN/sftgo report $OUT --output_dir $OUT/report"
