"""Step time of the loss path, this tree vs another checkout (e.g. the commit before the loss-path refactor), side by
side in one run.

Each tree gets a worker process that imports *its own* ``sftgo`` (``--src``), loads SmolLM2-135M-Instruct (fp32) and
one batch (default 4 x 128 from the bundled data, TF-IDF importance computed once), and times one training step's
forward + backward through ``SFTGoTrainer.compute_loss`` per request. The parent alternates the trees round by round
(A, B, B, A, ...) so that load from other processes hits both alike, and prints medians and the ratio new / old.

    git worktree add /tmp/old 6419341
    python benchmarks/bench_loss_path.py --old /tmp/old --objectives sft,sft-go --rounds 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args):
    sys.path.insert(0, args.src)
    import tempfile

    import torch

    from sftgo.config import SFTGoConfig
    from sftgo.data import Collator, TokenDataset, load_examples, tokenize_examples
    from sftgo.models import load_model, load_tokenizer
    from sftgo.pipeline import compute_importance
    from sftgo.trainer import SFTGoTrainer

    tmp = tempfile.mkdtemp()
    tok = load_tokenizer(None)
    model = load_model(None, dtype="float32")
    data = tokenize_examples(load_examples(None, limit=args.batch), tok, args.max_length)
    base = SFTGoConfig(output_dir=tmp, report_to="none", max_length=args.max_length, score_cache_dir=tmp)
    data.columns["importance"] = compute_importance(base, data, tok)
    batch = Collator(tok.pad_token_id)([TokenDataset(data)[i] for i in range(len(data))])
    n_items = (batch["labels"][:, 1:] != -100).sum()
    trainers = {}
    for name in args.objectives.split(","):
        cfg = SFTGoConfig(output_dir=tmp, report_to="none", objective=name, scorer="tfidf")
        trainers[name] = SFTGoTrainer(model=model, args=cfg, data_collator=Collator(tok.pad_token_id))

    def step(name):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = trainers[name].compute_loss(model, dict(batch), num_items_in_batch=n_items)
        loss.backward()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        model.zero_grad(set_to_none=True)
        return dt, dc, float(loss.detach())

    for name in trainers:  # warm-up: allocator, the head's first-step check
        step(name)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        dt, dc, loss = step(name)
        print(json.dumps({"time": dt, "cpu": dc, "loss": loss}), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=False, help="root of the other checkout (its src/ is imported)")
    ap.add_argument("--objectives", default="sft,sft-go")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    trees = {"new": str(HERE.parent / "src"), "old": str(Path(args.old).resolve() / "src")}
    procs = {}
    for k, src in trees.items():
        procs[k] = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--src", src, "--objectives", args.objectives,
             "--batch", str(args.batch), "--max_length", str(args.max_length)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    for k, p in procs.items():
        for line in p.stdout:
            if line.startswith("{") and json.loads(line).get("ready"):
                break
    names = args.objectives.split(",")
    times = {(k, n): [] for k in trees for n in names}
    cpu = {(k, n): [] for k in trees for n in names}  # process CPU time: less moved by other processes on a busy machine
    losses = {}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]  # A, B, B, A, ...
        for n in names:
            for k in order:
                procs[k].stdin.write(n + "\n")
                procs[k].stdin.flush()
                while True:
                    line = procs[k].stdout.readline()
                    if line.startswith("{"):
                        break
                rec = json.loads(line)
                times[(k, n)].append(rec["time"])
                cpu[(k, n)].append(rec["cpu"])
                losses[(k, n)] = rec["loss"]
        print(f"round {r}: " + ", ".join(f"{k} {n} {times[(k, n)][-1]:.3f}" for n in names for k in trees), flush=True)
    for p in procs.values():
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait()
    print(f"batch {args.batch} x {args.max_length}, {args.rounds} rounds, forward + backward per step (s)")
    print(f"{'objective':10} {'clock':5} {'old median':>11} {'new median':>11} {'new/old':>8} {'old min':>8} {'new min':>8}"
          "  loss old / new")
    for n in names:
        for clock, d in (("wall", times), ("cpu", cpu)):
            o, w = d[("old", n)], d[("new", n)]
            print(f"{n:10} {clock:5} {statistics.median(o):11.3f} {statistics.median(w):11.3f} "
                  f"{statistics.median(w) / statistics.median(o):7.3f}x {min(o):8.3f} {min(w):8.3f}  "
                  f"{losses[('old', n)]:.5f} / {losses[('new', n)]:.5f}")


if __name__ == "__main__":
    main()
