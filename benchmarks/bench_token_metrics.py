"""Step-time cost of recording ``entropy`` / ``token_accuracy`` in the per-token head: the same head call with and
without the record, side by side in one process, alternating (A B B A ...) so load from other processes on a shared
machine hits both alike. Two clocks: wall time, and this process's CPU time (all its threads; on a machine shared with
other jobs it counts the work done, not the waits for a core, so it resolves a few percent where wall time cannot).

Pairs (one forward + backward each, fp32; supervised rows only, as the trainer calls the head):

* ``fused``   -- ``weighted_nll_rows(coef=1)`` (the trainer's default head, SFT) vs the same with ``stats={}``;
* ``chunked`` -- ``_ChunkedLogp`` (``--token_head chunked``) vs the same recording into a ``_Rec``;
* ``logp``    -- the forward-only pass (evaluation, Target-SFT's metrics pass), no grad.

Peak memory (with the metrics, against the naive head) is measured by ``bench_token_head.py`` (fresh subprocess per
method): ``--methods naive,fused_sft,fused_sft_metrics,token_logp_metrics``.

    python benchmarks/bench_token_metrics.py                      # N=4096, H=576, V=49152 (SmolLM2-135M's head)
    python benchmarks/bench_token_metrics.py --pairs 3 --n 1024   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--h", type=int, default=576)
    p.add_argument("--v", type=int, default=49152)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--pairs", type=int, default=5, help="alternating (off, on) pairs per head kind")
    p.add_argument("--kinds", default="fused,chunked,logp")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from sftgo.token_head import _ChunkedLogp, _logp_pass, _Rec, weighted_nll_rows

    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    hidden = torch.randn(args.n, args.h, generator=g).to(dev).requires_grad_()
    weight = torch.randn(args.v, args.h, generator=g).div_(args.h ** 0.5).to(dev).requires_grad_()
    targets = torch.randint(0, args.v, (args.n,), generator=g).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def call(kind: str, on: bool):
        hidden.grad = weight.grad = None
        if kind == "fused":
            loss, _ = weighted_nll_rows(hidden, weight, targets, 1.0, args.chunk, stats={} if on else None)
            loss.backward()
        elif kind == "chunked":
            rec = _Rec(args.n, dev, True) if on else None
            _ChunkedLogp.apply(hidden, weight, targets, args.chunk, rec).sum().neg().backward()
        elif kind == "logp":
            with torch.no_grad():
                _logp_pass(hidden.detach(), targets, weight.detach(), args.chunk, rec=_Rec(args.n, dev, True) if on else None)
        else:
            raise SystemExit(f"--kinds: unknown {kind!r} (fused, chunked, logp)")

    def timed(kind, on):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        call(kind, on)
        sync()
        return time.perf_counter() - t0, time.process_time() - c0

    print(f"token metrics cost: N={args.n} H={args.h} V={args.v} chunk={args.chunk} fp32 device={dev} "
          f"threads={torch.get_num_threads()}; {args.pairs} alternating (off, on) pairs per kind", flush=True)
    print(f"{'kind':<8} {'clock':<5} {'off (median)':>12} {'on (median)':>12} {'on/off median':>14} {'on/off min':>11}"
          "  pair ratios")
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        call(kind, False)  # warm-up (allocator, thread pools)
        call(kind, True)
        off, on = [], []
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)  # A B, then B A
            for flag in order:
                (on if flag else off).append(timed(kind, flag))
        for j, clock in enumerate(("wall", "cpu")):
            a, b = [x[j] for x in off], [x[j] for x in on]
            ratios = [y / x for x, y in zip(a, b)]
            print(f"{kind:<8} {clock:<5} {statistics.median(a):11.3f}s {statistics.median(b):11.3f}s "
                  f"{statistics.median(b) / statistics.median(a):13.3f}x {min(b) / min(a):10.3f}x  "
                  f"{' '.join(f'{r:.3f}' for r in ratios)}", flush=True)


if __name__ == "__main__":
    main()
