"""Token head benchmark: naive full-logits head vs the chunked paths of ``sftgo.token_head``, side by side.

One forward + backward (fp32, CPU by default) per method, each in a fresh subprocess so peak memory is
measured honestly from the OS:

* inputs (hidden [N, H], weight [V, H] with requires_grad, targets [N]) are allocated first;
* a warm-up call runs on a small slice (16 rows, 2048-row vocabulary slice as separate leaf tensors), so
  libraries and thread pools are initialised without raising the high-water mark much (its grads are dropped);
* ``ru_maxrss`` is read right before and right after the single timed call: peak extra = after - before.
  The "slack" column is ``maxrss_before - rss_now_before`` (how far the high-water mark already sat above
  the live memory before the timed call): peak extra can under-count by at most that much.

Peak extra includes the gradients themselves (hidden.grad [N, H], weight.grad [V, H]) for every method.

Methods: naive (``lm_head`` + ``log_softmax`` + gather + mean CE), ``token_logp`` + mean CE, ``token_head.weighted_nll``
with the coefficients of sft / dft / infosft / sft_go (10% important tokens, lam = 0.5; built from
``sftgo.objectives``' weights and ``worst_onehot``), and TRL's ``trl.kernels.chunked_logprob.ChunkedLogProbFunction``
+ mean CE (skipped with a note if trl is not importable). Every loss is divided by the supervised count, as training
does once per step.

    python benchmarks/bench_token_head.py --quick             # N=4096, H=512, V=49152
    python benchmarks/bench_token_head.py                      # N=8192, H=2048, V=128256 (slow on CPU)
    python benchmarks/bench_token_head.py --n 2048 --h 256 --v 32000 --methods naive,token_logp,fused_sft
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

METHODS = ["naive", "token_logp", "fused_sft", "fused_dft", "fused_infosft", "fused_sft_go", "fused_eaft", "trl",
           "token_logp_metrics", "fused_sft_metrics", "fused_sft_go_metrics"]
TRL_VOCAB_CHUNK = 32768  # TRL's own default vocabulary chunk (_CHUNKED_LOGPROB_CHUNK_SIZE in trl 1.16)


def _rss_now() -> int:
    """Resident set size now, bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _coef(objective, important, lam=0.5):
    """The per-token coefficient the objective gives the fused head (as in ``sftgo.objectives``)."""
    from sftgo.objectives import dft_weights, infosft_weights, worst_onehot
    from sftgo.token_head import GroupCoef

    if objective == "sft":
        return 1.0
    if objective == "dft":
        return lambda lp, s, e: dft_weights(lp)
    if objective == "infosft":
        return lambda lp, s, e: infosft_weights(lp)
    if objective == "eaft":  # top-20 entropy of each chunk's logits, normalized, alpha = 1
        from sftgo.objectives import eaft_weights
        from sftgo.token_head import RowCoef

        return RowCoef(lambda z: eaft_weights(z, 20, 1.0, True))

    def resolve(sums, counts):  # SFT-GO: (1 - lam) + lam * [g worst] * n / C_g, from the group means
        c = counts.clamp(min=1)
        return (1 - lam) + lam * worst_onehot(sums / c, counts) * counts.sum() / c

    return GroupCoef(important.long(), 2, resolve)  # group 1 = important


def _step(method, hidden, weight, targets, important, chunk):
    """One forward + backward; returns the loss (float)."""
    import torch

    from sftgo.token_head import _ChunkedLogp, _Rec, naive_token_logp, token_logp, weighted_nll, weighted_nll_rows

    mask = targets != -100
    k = max(int(mask.sum()), 1)  # the loss is a mean over supervised tokens, as in training
    if method.endswith("_metrics"):  # the head as the trainer runs it: entropy / token accuracy recorded in its chunks
        rows = mask.nonzero().squeeze(1)
        h, t = hidden[rows], targets[rows]
        if method == "token_logp_metrics":
            rec = _Rec(h.shape[0], h.device, True)
            loss = -_ChunkedLogp.apply(h, weight, t, chunk, rec).sum() / k
        else:
            stats: dict = {}
            coef = _coef(method[len("fused_"):-len("_metrics")], important[rows])
            loss = weighted_nll_rows(h, weight, t, coef, chunk, stats=stats)[0] / k
    elif method == "naive":
        loss = -(naive_token_logp(hidden, weight, targets) * mask).sum() / k
    elif method == "token_logp":
        loss = -(token_logp(hidden, weight, targets, chunk_size=chunk) * mask).sum() / k
    elif method.startswith("fused_"):
        loss, _ = weighted_nll(hidden, weight, targets, _coef(method[len("fused_"):], important), chunk_size=chunk)
        loss = loss / k
    elif method == "trl":
        from trl.kernels.chunked_logprob import ChunkedLogProbFunction

        # as TRL does on devices without Triton: score every row (clamped targets), then mask
        lp, *_ = ChunkedLogProbFunction.apply(
            hidden, weight, None, targets.clamp(min=0), 1.0, TRL_VOCAB_CHUNK, None, 1.0, ()
        )
        loss = -lp.masked_fill(~mask, 0.0).sum() / k
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    loss.backward()
    return float(loss.detach())


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method == "trl":
        try:
            import trl.kernels.chunked_logprob  # noqa: F401
        except Exception as exc:  # trl missing or a different version
            print(json.dumps({"method": "trl", "skipped": f"trl not importable: {type(exc).__name__}: {exc}"}))
            return
    g = torch.Generator().manual_seed(args.seed)
    hidden = torch.randn(args.n, args.h, generator=g).requires_grad_()
    # in place: a temporary [V, H] here would raise the high-water mark before the measurement
    weight = torch.randn(args.v, args.h, generator=g).div_(args.h**0.5).requires_grad_()
    targets = torch.randint(0, args.v, (args.n,), generator=g)
    if args.ignore_frac > 0:
        targets[torch.rand(args.n, generator=g) < args.ignore_frac] = -100
    important = torch.rand(args.n, generator=g) < 0.1  # eta = 90: 10% important tokens

    # warm-up on separate small leaves: initialises BLAS / thread pools without a big high-water mark
    wv = min(args.v, 2048)
    hw = hidden[:16].detach().clone().requires_grad_()
    ww = weight[:wv].detach().clone().requires_grad_()
    tw = targets[:16].clamp(max=wv - 1)
    _step(args.method, hw, ww, tw, important[:16], min(args.chunk, 8))
    del hw, ww, tw

    rss_before = _rss_now()
    max_before = _maxrss()
    t0 = time.perf_counter()
    loss = _step(args.method, hidden, weight, targets, important, args.chunk)
    dt = time.perf_counter() - t0
    max_after = _maxrss()
    times = [dt]
    for _ in range(args.repeat - 1):  # extra timed calls (time only; the memory figure is the first call's)
        hidden.grad = weight.grad = None
        t0 = time.perf_counter()
        _step(args.method, hidden, weight, targets, important, args.chunk)
        times.append(time.perf_counter() - t0)
    dt = min(times)
    print(
        json.dumps(
            {
                "method": args.method,
                "time_s": dt,
                "times": times,
                "peak_extra": max_after - max_before,
                "slack": max_before - rss_before,
                "loss": loss,
                "threads": torch.get_num_threads(),
            }
        )
    )


def _fmt_bytes(b: float) -> str:
    return f"{b / 2**20:9.1f} MiB" if b < 2**30 else f"{b / 2**30:9.2f} GiB"


def _run_worker(m, args, env) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", m, "--n", str(args.n), "--h", str(args.h),
           "--v", str(args.v), "--chunk", str(args.chunk), "--ignore-frac", str(args.ignore_frac),
           "--threads", str(args.threads), "--seed", str(args.seed), "--repeat", str(args.repeat)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"method": m, "skipped": f"timed out after {args.timeout} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"method": m, "skipped": f"failed (rc={out.returncode}): {' | '.join(tail)}"}
    return json.loads(lines[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8192, help="tokens N (default 8192)")
    p.add_argument("--h", type=int, default=2048, help="hidden size H (default 2048)")
    p.add_argument("--v", type=int, default=128256, help="vocabulary V (default 128256, Llama-3)")
    p.add_argument("--chunk", type=int, default=512, help="token chunk size of the sftgo paths (default 512, the library default)")
    p.add_argument("--quick", action="store_true", help="preset N=4096, H=512, V=49152 (overrides --n/--h/--v)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list from {METHODS}")
    p.add_argument("--ignore-frac", type=float, default=0.0, help="fraction of positions with target -100")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each worker (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="timed calls per worker; time = min (memory: first call)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run all methods this many times, interleaved (evens out load from other processes); "
                        "time = min over rounds, memory = max over rounds")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per method before it is reported as timed out")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.h, args.v = 4096, 512, 49152
    if args.worker:
        args.method = args.worker
        worker(args)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"--methods: unknown {bad}; choose from {METHODS}")
    if "naive" not in methods:
        methods = ["naive"] + methods  # ratios are relative to naive
    print(
        f"token head benchmark: N={args.n} H={args.h} V={args.v} chunk={args.chunk} fp32 "
        f"ignore_frac={args.ignore_frac} torch threads={args.threads or 'default'}; fwd+bwd, fresh subprocess per "
        f"method, time = min of {args.repeat} call(s) x {args.rounds} round(s), memory = first call of each worker",
        flush=True,
    )
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    results = {}
    for rnd in range(args.rounds):
        for m in methods:
            r = _run_worker(m, args, env)
            if "skipped" in r:
                results.setdefault(m, r)
                print(f"  round {rnd + 1} {m}: skipped ({r['skipped']})", flush=True)
                continue
            print(f"  round {rnd + 1} {m}: {r['time_s']:.2f} s, peak extra {_fmt_bytes(r['peak_extra'])}", flush=True)
            prev = results.get(m)
            if prev is None or "skipped" in prev:
                r["round_times"] = [r["time_s"]]
                results[m] = r
            else:
                prev["round_times"].append(r["time_s"])
                prev["time_s"] = min(prev["time_s"], r["time_s"])
                prev["peak_extra"] = max(prev["peak_extra"], r["peak_extra"])
                prev["slack"] = max(prev["slack"], r["slack"])

    base = results.get("naive", {})
    print()
    print(f"{'method':<14} {'time':>9} {'time/naive':>10} {'peak extra':>13} {'mem/naive':>9} {'slack':>13} {'loss':>10}")
    for m in methods:
        r = results[m]
        if "skipped" in r:
            print(f"{m:<14} skipped: {r['skipped']}")
            continue
        tr = r["time_s"] / base["time_s"] if "time_s" in base else float("nan")
        mr = r["peak_extra"] / base["peak_extra"] if base.get("peak_extra") else float("nan")
        print(
            f"{m:<14} {r['time_s']:8.2f}s {tr:9.2f}x {_fmt_bytes(r['peak_extra'])} {mr:8.3f}x "
            f"{_fmt_bytes(r['slack'])} {r['loss']:10.5f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": {"n": args.n, "h": args.h, "v": args.v, "chunk": args.chunk}, "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
