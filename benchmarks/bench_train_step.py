"""One training step (forward + backward through the whole model) per objective, as a ratio to `sft`.

Same model, same batch, same per-token head setting; objectives are interleaved round by round so that machine noise
hits all of them alike; the median and the minimum over rounds are reported. Static columns (TF-IDF importance, Rho-1 reference
log-probs) are computed once before timing, as in training.

    python benchmarks/bench_train_step.py                      # SmolLM2-135M, batch 4 x 128, fp32 CPU
    python benchmarks/bench_train_step.py --rounds 5 --batch 8 --max_length 256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

OBJECTIVES = [
    ("sft", {}),
    ("sft-go", {}),
    ("dft", {}),
    ("infosft", {}),
    ("rho1", {}),
    ("target-sft", {"target_residual": "uniform"}),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--token_head", default="auto")
    args = ap.parse_args(argv)

    from sftgo.config import SFTGoConfig
    from sftgo.data import Collator, TokenDataset, load_examples, tokenize_examples
    from sftgo.models import load_model, load_tokenizer
    from sftgo.pipeline import compute_importance, compute_reference
    from sftgo.trainer import SFTGoTrainer

    tmp = tempfile.mkdtemp()
    tok = load_tokenizer(args.model)
    model = load_model(args.model, dtype="float32")
    data = tokenize_examples(load_examples(None, limit=args.batch), tok, args.max_length)
    base = SFTGoConfig(output_dir=tmp, report_to="none", max_length=args.max_length, score_cache_dir=tmp)
    data.columns["importance"] = compute_importance(base, data, tok)
    data.columns["ref_logp"] = compute_reference(base, data, model, tok)
    batch = Collator(tok.pad_token_id)([TokenDataset(data)[i] for i in range(len(data))])
    n_items = (batch["labels"][:, 1:] != -100).sum()

    trainers = {}
    for name, extra in OBJECTIVES:
        scorer = "reference" if name == "rho1" else "tfidf"
        cfg = SFTGoConfig(output_dir=tmp, report_to="none", objective=name, scorer=scorer,
                          ref_model_name_or_path="initial", token_head=args.token_head, **extra)  # timing only
        trainers[name] = SFTGoTrainer(model=model, args=cfg, data_collator=Collator(tok.pad_token_id))

    def step(name):
        inputs = dict(batch)
        if name != "rho1":
            inputs.pop("ref_logp")
        t0 = time.perf_counter()
        loss = trainers[name].compute_loss(model, inputs, num_items_in_batch=n_items)
        loss.backward()
        dt = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return dt

    for name, _ in OBJECTIVES:  # warm-up (allocator, first-step head check)
        step(name)
    times = {name: [] for name, _ in OBJECTIVES}
    order = [name for name, _ in OBJECTIVES]
    for r in range(args.rounds):
        # Rotate the order each round so no objective always runs first (after the previous round's frees).
        for name in order[r % len(order):] + order[:r % len(order)]:
            times[name].append(step(name))
    ref = statistics.median(times["sft"])
    ref_min = min(times["sft"])
    print(f"model={args.model or 'SmolLM2-135M-Instruct'} batch={args.batch}x{args.max_length} tokens={int(n_items)} "
          f"rounds={args.rounds} threads={torch.get_num_threads()} token_head={args.token_head}")
    # Interference from other processes only adds time, so the minimum is the steadier estimate; both are shown.
    print(f"{'objective':<12} {'median s':>9} {'median/sft':>11} {'min s':>7} {'min/sft':>8}")
    for name, _ in OBJECTIVES:
        m, lo = statistics.median(times[name]), min(times[name])
        print(f"{name:<12} {m:9.3f} {m / ref:11.3f} {lo:7.3f} {lo / ref_min:8.3f}")


if __name__ == "__main__":
    main()
