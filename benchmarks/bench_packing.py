"""Supervised tokens per second of one training step (forward + backward, sftgo's loss path) with the same examples
laid out three ways: padded (one example per row), packed (rows of at most max_length) and padding-free (one row).

Each dataset's examples are shuffled once (seed 0) and cut into batches; every batch runs in all three layouts,
rotating which layout goes first, so machine noise hits all of them alike. Reported per layout: the tokens the model
processes (padding included), supervised tokens per second over all timed batches, and the median over batches of the
per-batch ratio to padded.

    python benchmarks/bench_packing.py --alpaca ../shared/data/alpaca_5000.json          # SmolLM2-135M, batch 8, 512
    python benchmarks/bench_packing.py --alpaca PATH --batches 6 --batch 8 --max_length 512 --objective sft-go
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import torch

LAYOUTS = ("padded", "packed", "padding_free")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--alpaca", default=None, help="Alpaca JSON (e.g. ../shared/data/alpaca_5000.json); skipped if not given")
    ap.add_argument("--num_examples", type=int, default=1000, help="examples read from each dataset")
    ap.add_argument("--no_bundled", action="store_true", help="skip the bundled dataset")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4, help="timed batches per dataset (each run in all three layouts)")
    ap.add_argument("--max_length", type=int, default=512)
    ap.add_argument("--objective", default="sft")
    ap.add_argument("--attn_implementation", default="sdpa")
    ap.add_argument("--layers", type=int, default=None,
                    help="keep only the first N decoder layers (a quicker, head-heavier model: the ratios come out lower)")
    args = ap.parse_args(argv)

    from sftgo.config import SFTGoConfig
    from sftgo.data import Collator, TokenDataset, load_examples, tokenize_examples
    from sftgo.models import load_model, load_tokenizer
    from sftgo.pipeline import compute_importance
    from sftgo.trainer import SFTGoTrainer

    tmp = tempfile.mkdtemp()
    tok = load_tokenizer(args.model)
    model = load_model(args.model, dtype="float32", attn_implementation=args.attn_implementation)
    if args.layers:
        model.model.layers = model.model.layers[:args.layers]
        model.config.num_hidden_layers = args.layers
    cfg = SFTGoConfig(output_dir=tmp, report_to="none", objective=args.objective, max_length=args.max_length,
                      score_cache_dir=tmp)
    trainer = SFTGoTrainer(model=model, args=cfg, data_collator=Collator(tok.pad_token_id))
    collators = {name: Collator(tok.pad_token_id, layout=name, max_length=args.max_length) for name in LAYOUTS}

    def step(batch):
        n_items = (batch["labels"][:, 1:] != -100).sum()
        t0 = time.perf_counter()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
        loss.backward()
        dt = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return dt, float(loss.detach())

    print(f"model={args.model or 'SmolLM2-135M-Instruct'} layers={len(model.model.layers)} objective={args.objective} batch={args.batch} "
          f"max_length={args.max_length} attn={args.attn_implementation} threads={torch.get_num_threads()}")
    datasets = ([] if args.no_bundled else [("bundled", None)]) + ([("alpaca", args.alpaca)] if args.alpaca else [])
    for name, path in datasets:
        data = tokenize_examples(load_examples(path, limit=args.num_examples), tok, args.max_length)
        if cfg.objective == "sft-go":
            data.columns["importance"] = compute_importance(cfg, data, tok)
        items = TokenDataset(data)
        order = list(range(len(data)))
        random.Random(0).shuffle(order)
        batches = [[items[j] for j in order[i * args.batch:(i + 1) * args.batch]] for i in range(args.batches + 1)]
        step(collators["padded"](batches[0]))  # warm-up (allocator, first-step head check)
        times = {k: [] for k in LAYOUTS}
        shapes = {k: 0 for k in LAYOUTS}
        sup = 0
        for b, examples in enumerate(batches[1:]):
            laid = {k: collators[k](examples) for k in LAYOUTS}
            sup += int((laid["padded"]["labels"][:, 1:] != -100).sum())
            losses = {}
            for k in LAYOUTS[b % 3:] + LAYOUTS[:b % 3]:
                dt, losses[k] = step(laid[k])
                times[k].append(dt)
                shapes[k] += laid[k]["input_ids"].numel()
            spread = max(losses.values()) - min(losses.values())
            assert spread < 1e-3 * abs(losses["padded"]), f"layouts disagree on the loss: {losses}"
        real = sum(len(e["input_ids"]) for ex in batches[1:] for e in ex)
        print(f"\n{name}: {args.batches} batches x {args.batch} examples, {real} tokens, {sup} supervised")
        print(f"{'layout':<13} {'model tokens':>12} {'/ real':>7} {'total s':>8} {'sup tok/s':>10} {'x padded':>9} {'median x':>9}")
        ref = sup / sum(times["padded"])
        for k in LAYOUTS:
            tps = sup / sum(times[k])
            med = statistics.median(p / t for p, t in zip(times["padded"], times[k]))
            print(f"{k:<13} {shapes[k]:12d} {shapes[k] / real:7.2f} {sum(times[k]):8.2f} {tps:10.1f} {tps / ref:9.2f} {med:9.2f}")


if __name__ == "__main__":
    main()
