"""LoRA vs full fine-tuning on SmolLM2: time of one optimizer step (forward + backward + AdamW) and peak memory.

Each measurement runs in a fresh subprocess (so peak RSS belongs to one method): load the model, wrap it with LoRA
(r, alpha = 2r, all linear layers but the LM head) or not, build AdamW over the trainable parameters, run one warm-up
step, then time `--steps` steps through sftgo's loss path. Peak extra memory = ru_maxrss after the steps minus RSS
after loading the model (weights excluded: both methods hold the same base weights; the difference is gradients and
optimizer states, which LoRA keeps for the adapters only). Full and LoRA subprocesses alternate for `--rounds` rounds
on the shared machine; medians are reported.

    python benchmarks/bench_lora.py                       # SmolLM2-135M, r=16, batch 4 x 256, 3 steps, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def worker(args) -> dict:
    import resource
    import tempfile
    import time

    import torch

    from sftgo.config import SFTGoConfig
    from sftgo.data import Collator, TokenDataset, load_examples, tokenize_examples
    from sftgo.models import apply_lora, load_model, load_tokenizer
    from sftgo.trainer import SFTGoTrainer

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    tmp = tempfile.mkdtemp()
    tok = load_tokenizer(args.model)
    model = load_model(args.model, dtype="float32")
    if args.method == "lora":
        model = apply_lora(model, r=args.r, alpha=2 * args.r, dropout=0.0, target_modules="all-linear")
    data = tokenize_examples(load_examples(None, limit=args.batch * (args.steps + 1)), tok, args.max_length)
    items = TokenDataset(data)
    collate = Collator(tok.pad_token_id)
    batches = [collate([items[i] for i in range(s * args.batch, (s + 1) * args.batch)]) for s in range(args.steps + 1)]
    cfg = SFTGoConfig(output_dir=tmp, report_to="none", objective="sft", max_length=args.max_length)
    trainer = SFTGoTrainer(model=model, args=cfg, data_collator=collate)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    base = rss_mib()

    def step(batch):
        n = (batch["labels"][:, 1:] != -100).sum()
        t0 = time.perf_counter()
        trainer.compute_loss(model, dict(batch), num_items_in_batch=n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step(batches[0])
    times = [step(b) for b in batches[1:]]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"method": args.method, "step_s": statistics.median(times), "peak_extra_mib": peak - base,
            "trainable": sum(p.numel() for p in params), "total": sum(p.numel() for p in model.parameters())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)  # worker mode
    args = ap.parse_args(argv)
    if args.method:
        print(json.dumps(worker(args)))
        return
    results = {"full": [], "lora": []}
    base_cmd = [sys.executable, __file__, "--r", str(args.r), "--batch", str(args.batch), "--max_length",
                str(args.max_length), "--steps", str(args.steps)] + (["--model", args.model] if args.model else [])
    for r in range(args.rounds):
        for method in (("full", "lora") if r % 2 == 0 else ("lora", "full")):
            out = subprocess.run(base_cmd + ["--method", method], capture_output=True, text=True, check=True)
            results[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r}: {results[method][-1]}", flush=True)
    print(f"model={args.model or 'SmolLM2-135M-Instruct'} r={args.r} batch={args.batch}x{args.max_length} "
          f"steps={args.steps} rounds={args.rounds}")
    print(f"{'method':<6} {'trainable':>12} {'step s':>8} {'peak extra MiB':>15}")
    med = {}
    for m, rows in results.items():
        med[m] = (statistics.median(x["step_s"] for x in rows), statistics.median(x["peak_extra_mib"] for x in rows))
        print(f"{m:<6} {rows[0]['trainable']:12,d} {med[m][0]:8.3f} {med[m][1]:15.1f}")
    print(f"lora / full: step time {med['lora'][0] / med['full'][0]:.2f}x, peak extra memory "
          f"{med['lora'][1] / med['full'][1]:.2f}x")


if __name__ == "__main__":
    main()
