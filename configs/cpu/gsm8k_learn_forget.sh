#!/usr/bin/env bash
# Learn vs forget on CPU: 5 objectives x 2 seeds on a GSM8K-train subset (configs/cpu/gsm8k_learn_forget.yaml), then
# the learn / forget evaluations. About 30 minutes on 2 free cores (20 steps of 4 x <=256 tokens per run); more
# steps / seeds / --limit make it the ~90-minute study of issue 14. Run from the repository root after `make install`:
#   bash configs/cpu/gsm8k_learn_forget.sh [OUT=runs/learn_forget] [DATA=../shared/data]
# Held-out sets are cut from files the runs never train on: GSM8K test (learn) and the last Alpaca rows (forget).
set -euo pipefail
OUT=${1:-runs/learn_forget}
DATA=${2:-../shared/data}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
head -n 100 "$DATA/gsm8k_test.jsonl" > "$OUT/heldout_gsm8k.jsonl"
"$BIN/python" - "$DATA/alpaca_5000.json" "$OUT/heldout_alpaca.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
json.dump(rows[-100:], open(sys.argv[2], "w"))   # the training runs use GSM8K only; any Alpaca rows are held out
PY
for seed in 1 2; do
  for obj in sft dft infosft target-sft sft-go; do
    run="$OUT/${obj}_s${seed}"
    [ -f "$run/final/config.json" ] || "$BIN/sftgo" train configs/cpu/gsm8k_learn_forget.yaml --objective "$obj" \
        --seed "$seed" --output_dir "$run"
    "$BIN/sftgo" eval "$run" --heldout "$OUT/heldout_alpaca.json"     # forget (held-out loss)
    "$BIN/sftgo" eval "$run" --heldout "$OUT/heldout_gsm8k.jsonl"      # learn (held-out loss) -> heldout.json
    # general suite vs the base (evaluated once, cached): base_value / delta_vs_base per row
    "$BIN/sftgo" eval "$run" --tasks arc_challenge,hellaswag,mmlu --data_dir "$DATA" --limit 50
  done
done
# base model held-out losses for the same two sets (the "before" of learn / forget)
"$BIN/sftgo" eval smollm2-135m-instruct --heldout "$OUT/heldout_gsm8k.jsonl" --scorer tfidf --percentile 90 --max_length 256 --output_dir "$OUT/base"
"$BIN/sftgo" eval smollm2-135m-instruct --heldout "$OUT/heldout_alpaca.json" --scorer tfidf --percentile 90 --max_length 256 --output_dir "$OUT/base"
echo "done: $OUT/*/eval/*.json"
