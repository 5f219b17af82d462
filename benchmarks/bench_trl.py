"""`sftgo train` vs TRL's SFTTrainer: training step time at equal settings, side by side in one run.

Same model (SmolLM2-135M-Instruct, fp32, CPU), same examples (the first ``--examples`` of an Alpaca JSON file, as
chat prompt/completion so both train on the response tokens only), batch 4, max length 128, AdamW, lr 5e-5, logging
every step, no gradient checkpointing. Each round trains every contender for ``--steps`` optimizer steps from a fresh
copy of the model (order rotated per round); a callback times every optimizer step (forward, backward, optimizer,
logging) and the first step of each run is dropped (warm-up). Prints the median step time of each and its ratio to TRL.
TRL is the `bench` extra (pip install 'sftgo[bench]').

    python benchmarks/bench_trl.py --data ../shared/data/alpaca_5000.json --rounds 3 --steps 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def _timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], None

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


COMMON = dict(per_device_train_batch_size=4, learning_rate=5e-5, logging_steps=1, save_strategy="no",
              report_to="none", disable_tqdm=True, seed=0)


def run_sftgo(examples, objective, extra, steps, max_length):
    from sftgo.config import SFTGoConfig
    from sftgo.data import Collator, TokenDataset, tokenize_examples
    from sftgo.models import load_model, load_tokenizer
    from sftgo.pipeline import add_token_columns
    from sftgo.trainer import SFTGoTrainer

    tmp = tempfile.mkdtemp()
    tok = load_tokenizer(None)
    model = load_model(None, dtype="float32")
    cfg = SFTGoConfig(output_dir=tmp, objective=objective, max_length=max_length, max_steps=steps,
                      score_cache_dir=tmp, **COMMON, **extra)
    data = tokenize_examples(examples, tok, max_length)
    add_token_columns(cfg, data, model, tok)
    timer = _timer()
    trainer = SFTGoTrainer(model=model, args=cfg, train_dataset=TokenDataset(data),
                           data_collator=Collator(tok.pad_token_id), callbacks=[timer])
    trainer.train()
    return timer.times[1:]


def run_trl(examples, steps, max_length):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from sftgo.models import load_model, load_tokenizer

    tok = load_tokenizer(None)
    model = load_model(None, dtype="float32")
    rows = [{"prompt": [{"role": "user", "content": m["messages"][0]["content"]}],
             "completion": [{"role": "assistant", "content": m["messages"][1]["content"]}]} for m in examples]
    # SFTConfig defaults to bf16 where it can; fp32 here, like sftgo on CPU (bf16 is ~8x slower on this CPU).
    cfg = SFTConfig(output_dir=tempfile.mkdtemp(), max_length=max_length, max_steps=steps, bf16=False, **COMMON)
    timer = _timer()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         callbacks=[timer])
    trainer.train()
    return timer.times[1:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Alpaca JSON/JSONL file")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--contenders", default="trl,sft,sft-go-micro,sft-go-lagged")
    args = ap.parse_args(argv)
    import trl

    from sftgo.data import load_examples

    examples = [e for e in load_examples(args.data, limit=args.examples) if len(e["messages"]) == 2]
    runners = {
        "trl": lambda: run_trl(examples, args.steps, args.max_length),
        "sft": lambda: run_sftgo(examples, "sft", {}, args.steps, args.max_length),
        "sft-go-micro": lambda: run_sftgo(examples, "sft-go", {"group_stats": "micro"}, args.steps, args.max_length),
        "sft-go-lagged": lambda: run_sftgo(examples, "sft-go", {"group_stats": "lagged"}, args.steps, args.max_length),
        "sft-go-exact": lambda: run_sftgo(examples, "sft-go", {"group_stats": "exact"}, args.steps, args.max_length),
    }
    names = args.contenders.split(",")
    times = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            times[n] += runners[n]()
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"{len(examples)} examples, batch 4 x {args.max_length}, {args.rounds} rounds x {args.steps - 1} timed steps; "
          f"TRL {trl.__version__}")
    for n in names:
        print(f"  {n:14} median {med[n]:.3f} s/step  min {min(times[n]):.3f}" +
              (f"  {med[n] / med['trl']:.3f}x TRL" if "trl" in med and n != "trl" else ""))
    print(json.dumps({n: round(v, 4) for n, v in med.items()}))


if __name__ == "__main__":
    main()
