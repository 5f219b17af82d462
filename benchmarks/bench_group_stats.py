"""--group_stats exact / lagged / micro: step time side by side, and how often lagged picks another worst group.

1. Step time. One SmolLM2-135M-Instruct (fp32), one trainer per mode, the bundled data as a global batch of
   ``micro x accum`` examples x ``max_length`` tokens. A step is what the Trainer's loop does before the optimizer:
   ``get_batch_samples`` (where exact runs its no-grad pre-pass over the step's micro-batches), ``training_step`` on
   each micro-batch (forward + backward), and the end-of-step update (lagged means). Modes are interleaved round by
   round (rotating order) and the median per mode is reported with its ratio to micro. Weights are not updated.
2. Disagreement (``--train_steps N``): a real ``sftgo train --objective sft-go --group_stats lagged`` run on the
   bundled data; each logged step holds the worst group lagged used (``worst_group``, from the previous step's means)
   and the step's own worst group (``worst_group_step``, what exact would pick on the same weights). Reports the
   disagreement rate and the objective's difference, ``lam * (max(loss_important, loss_unimportant) - loss of the
   group lagged used)`` (exact's value minus lagged's, >= 0).

    python benchmarks/bench_group_stats.py --rounds 6 --micro 2 --accum 2 --train_steps 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def step_times(args):
    import torch
    from torch.utils.data import DataLoader

    from sftgo.config import SFTGoConfig
    from sftgo.data import Collator, TokenDataset, load_examples, tokenize_examples
    from sftgo.models import load_model, load_tokenizer
    from sftgo.pipeline import compute_importance
    from sftgo.trainer import SFTGoTrainer

    tmp = tempfile.mkdtemp()
    tok = load_tokenizer(None)
    model = load_model(None, dtype="float32")
    data = tokenize_examples(load_examples(None, limit=args.micro * args.accum * (args.rounds + 2)), tok, args.max_length)
    base = SFTGoConfig(output_dir=tmp, report_to="none", max_length=args.max_length, score_cache_dir=tmp)
    data.columns["importance"] = compute_importance(base, data, tok)
    collate = Collator(tok.pad_token_id)
    modes = ["micro", "lagged", "exact"]
    trainers = {}
    for m in modes:
        cfg = SFTGoConfig(output_dir=tmp, report_to="none", objective="sft-go", group_stats=m,
                          per_device_train_batch_size=args.micro, gradient_accumulation_steps=args.accum)
        trainers[m] = SFTGoTrainer(model=model, args=cfg, data_collator=collate)
    loader = list(DataLoader(TokenDataset(data), batch_size=args.micro, collate_fn=collate))

    def step(m, r):
        t = trainers[m]
        it = iter(loader[(r % (len(loader) // args.accum)) * args.accum:][: args.accum])
        t0 = time.perf_counter()
        batches, n = t.get_batch_samples(it, args.accum, t.args.device)
        for b in batches:
            t.training_step(model, b, n)
        t._end_step()
        dt = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return dt

    for m in modes:  # warm-up, and a first step so that lagged has previous means
        step(m, 0)
    times = {m: [] for m in modes}
    for r in range(args.rounds):
        for m in modes[r % 3:] + modes[: r % 3]:
            times[m].append(step(m, r + 1))
        print(f"round {r}: " + ", ".join(f"{m} {times[m][-1]:.3f}" for m in modes), flush=True)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"step time, sft-go, micro-batch {args.micro} x accumulation {args.accum} x {args.max_length} tokens, "
          f"{args.rounds} rounds (s): " + ", ".join(f"{m} {med[m]:.3f}" for m in modes))
    for m in ("lagged", "exact"):
        print(f"  {m} / micro = {med[m] / med['micro']:.3f}x  (min {min(times[m]):.3f} vs {min(times['micro']):.3f})")
    return med


def disagreement(args):
    from sftgo.cli import main

    out = Path(tempfile.mkdtemp()) / "lagged"
    rc = main(["train", "--objective", "sft-go", "--group_stats", "lagged", "--max_steps", str(args.train_steps),
               "--per_device_train_batch_size", str(args.micro), "--gradient_accumulation_steps", str(args.accum),
               "--max_length", str(args.max_length), "--output_dir", str(out), "--disable_tqdm", "true",
               "--save_steps", "100000", "--report_to", "none"])
    assert rc == 0
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r.get("worst_group") is not None and r.get("loss_important") is not None]
    differ = [r for r in recs if r["worst_group"] != r["worst_group_step"]]
    gaps = []
    for r in recs:
        used = r["loss_important"] if r["worst_group"] == 1 else r["loss_unimportant"]
        gaps.append(r["lam"] * (max(r["loss_important"], r["loss_unimportant"]) - used))
    print(f"lagged vs exact worst group on the bundled data, {len(recs)} steps: disagree on {len(differ)} "
          f"({len(differ) / max(len(recs), 1):.1%}); objective difference (exact - lagged): mean {statistics.mean(gaps):.4f}, "
          f"max {max(gaps):.4f}, mean over the disagreeing steps "
          f"{statistics.mean([g for g, r in zip(gaps, recs) if r in differ]) if differ else 0.0:.4f}; "
          f"mean loss {statistics.mean(r['loss'] for r in recs):.4f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--micro", type=int, default=2)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=6, help="timing rounds (0: skip the timing)")
    ap.add_argument("--train_steps", type=int, default=0, help="also run the disagreement measurement (N steps)")
    args = ap.parse_args(argv)
    if args.rounds:
        step_times(args)
    if args.train_steps:
        disagreement(args)


if __name__ == "__main__":
    main()
