"""Every token weighting (``--token_weight``, each entry of ``TOKEN_WEIGHTS``) on the fused head: peak memory against
the naive full-logits head, and step time against plain SFT on the same fused head.

The coefficient is built the way training builds it: ``OBJECTIVES["sft"](args).coefficient(tokens, ...)`` with the
weighting's default settings (``ObjectiveArgs(token_weight=name)``), the per-token columns the objective reads filled
with plausible values (``ref_logp``: log of a uniform draw in (0, 1); any other column: uniform in [0, 1)), then one
forward + backward of ``weighted_nll_rows`` (the trainer's fused head), fp32, supervised rows only.

* memory: each method in a fresh subprocess, ``ru_maxrss`` read right before and after the one measured call (peak
  extra, gradients included), as ``bench_token_head.py`` does; ratio against ``naive`` (``lm_head`` + ``log_softmax`` +
  gather + mean CE, the [N, V] logits in memory);
* time: in one process, alternating pairs (sft, weighting), (weighting, sft), ... so load from other processes hits
  both alike; wall and CPU clocks (this process's CPU time counts the work done, not waits for a core), median ratio.

    python benchmarks/bench_token_weights.py                          # N=4096, H=576, V=49152 (SmolLM2-135M's head)
    python benchmarks/bench_token_weights.py --n 1024 --pairs 3       # quicker
    python benchmarks/bench_token_weights.py --weights dft,chord --skip-memory
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _args(name: str):
    from sftgo.errors import ConfigError
    from sftgo.objectives import ObjectiveArgs

    try:
        a = ObjectiveArgs(objective="sft", token_weight=name)
        a.check_objective()
    except ConfigError as e:  # a weighting from a reference model: the initial model will do for the shapes
        if "ref_model_name_or_path" not in str(e):
            raise
        a = ObjectiveArgs(objective="sft", token_weight=name, ref_model_name_or_path="initial")
        a.check_objective()
    return a


def _inputs(n, h, v, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).requires_grad_()
    weight = torch.randn(v, h, generator=g).div_(h ** 0.5).requires_grad_()  # in place: no temporary [V, H]
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, targets, g


def _coef(name: str, targets, g):
    """The head's coefficient for ``--objective sft --token_weight name``, as the trainer builds it (``sft``: plain)."""
    import torch

    from sftgo.objectives import OBJECTIVES
    from sftgo.tokens import TokenBatch

    n = targets.shape[0]
    if name == "sft":
        return 1.0
    args = _args(name)
    obj = OBJECTIVES["sft"](args)
    cols = {}
    for c in obj.token_columns(args):
        u = torch.rand(n, generator=g).clamp_(min=1e-6)
        cols[c] = u.log() if c == "ref_logp" else u
    tokens = TokenBatch(targets, torch.zeros(n, dtype=torch.long), torch.arange(n), cols)
    coef, _ = obj.coefficient(tokens, 0.0, {}, None)
    return coef


def _step(name, hidden, weight, targets, coef, chunk):
    from sftgo.token_head import naive_token_logp, weighted_nll_rows

    n = targets.shape[0]
    if name == "naive":
        loss = -naive_token_logp(hidden, weight, targets).sum() / n
    else:
        loss = weighted_nll_rows(hidden, weight, targets, coef, chunk, stats={})[0] / n
    loss.backward()
    return float(loss.detach())


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_worker(args) -> None:
    import torch

    hidden, weight, targets, g = _inputs(args.n, args.h, args.v, args.seed)
    coef = None if args.worker == "naive" else _coef(args.worker, targets, g)
    # warm-up on small separate leaves (thread pools, allocator) without a big high-water mark
    hw = hidden[:16].detach().clone().requires_grad_()
    ww = weight[:2048].detach().clone().requires_grad_()
    tw = targets[:16].clamp(max=2047)
    _step(args.worker, hw, ww, tw, None if coef is None else _coef(args.worker, tw, g), 8)
    del hw, ww, tw
    before = _maxrss()
    loss = _step(args.worker, hidden, weight, targets, coef, args.chunk)
    print(json.dumps({"method": args.worker, "peak_extra": _maxrss() - before, "loss": loss,
                      "threads": torch.get_num_threads()}))


def _memory(name, args) -> dict:
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--n", str(args.n), "--h", str(args.h),
           "--v", str(args.v), "--chunk", str(args.chunk), "--seed", str(args.seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{name}: worker failed (rc={out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--h", type=int, default=576)
    p.add_argument("--v", type=int, default=49152)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--pairs", type=int, default=5, help="alternating (sft, weighting) pairs per weighting")
    p.add_argument("--weights", default="", help="comma list (default: every TOKEN_WEIGHTS entry but none)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-time", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        memory_worker(args)
        return

    from sftgo.objectives import TOKEN_WEIGHTS

    names = [w.strip() for w in args.weights.split(",") if w.strip()] or [w for w in TOKEN_WEIGHTS if w != "none"]
    print(f"token weightings on the fused head: N={args.n} H={args.h} V={args.v} chunk={args.chunk} fp32; "
          f"weightings: {', '.join(names)}", flush=True)
    if not args.skip_memory:
        base = _memory("naive", args)
        sft = _memory("sft", args)
        print(f"\n{'method':<22} {'peak extra':>12} {'/ naive':>8}")
        for name, r in [("naive", base), ("sft (fused, t = 1)", sft)] + [(w, _memory(w, args)) for w in names]:
            print(f"{name:<22} {r['peak_extra'] / 2**20:9.1f} MiB {r['peak_extra'] / base['peak_extra']:7.3f}x",
                  flush=True)
    if args.skip_time:
        return
    hidden, weight, targets, g = _inputs(args.n, args.h, args.v, args.seed)

    def timed(name, coef):
        hidden.grad = weight.grad = None
        t0, c0 = time.perf_counter(), time.process_time()
        _step(name, hidden, weight, targets, coef, args.chunk)
        return time.perf_counter() - t0, time.process_time() - c0

    print(f"\n{'weighting':<14} {'clock':<5} {'sft (median)':>12} {'weighted':>10} {'ratio (median)':>15} {'ratio (min)':>12}")
    for name in names:
        coefs = {"sft": 1.0, name: _coef(name, targets, g)}
        for m in coefs:  # warm-up
            timed(m, coefs[m])
        res = {"sft": [], name: []}
        for i in range(args.pairs):
            for m in (("sft", name) if i % 2 == 0 else (name, "sft")):
                res[m].append(timed(m, coefs[m]))
        for j, clock in enumerate(("wall", "cpu")):
            a, b = [x[j] for x in res["sft"]], [x[j] for x in res[name]]
            print(f"{name:<14} {clock:<5} {statistics.median(a):11.3f}s {statistics.median(b):9.3f}s "
                  f"{statistics.median(b) / statistics.median(a):14.3f}x {min(b) / min(a):11.3f}x", flush=True)


if __name__ == "__main__":
    main()
