"""Reference log-probs (Rho-1 / the `reference` scorer): peak memory of sftgo's pass vs the full-logits pass.

    python benchmarks/bench_reference.py                 # SmolLM2-135M-Instruct (offline default), 8 x 512 tokens
    python benchmarks/bench_reference.py --batch 8 --length 512 --chunk 512 --device cuda

Two methods, each in a fresh subprocess (so neither inherits the other's allocator state), on the same model and the
same tokens, one batch of ``--batch`` sequences of ``--length`` tokens:

* ``full_logits`` -- what sftgo did before: the model's forward returns ``[B, T, V]`` fp32 logits, the supervised rows
  are copied out as ``[M, V]`` and log-softmaxed (the code of ``reference_token_logp`` before it used the chunked head,
  kept here as the baseline);
* ``chunked`` -- ``sftgo.scorers.reference.reference_token_logp``: the decoder's final hidden states, then the chunked
  per-token head (one ``[chunk, V]`` tile at a time).

Peak extra memory = the high-water mark during the pass minus what was resident right before it (model and inputs
loaded, a 16-token warm-up done). CPU: Linux's peak RSS (``VmHWM``), reset right before the pass by writing 5 to
``/proc/self/clear_refs``. CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. The tokens are
random ids (seeded); the first ``--prompt`` positions of each sequence are unsupervised (a prompt), the rest are
supervised. Both methods' log-probs are compared (max abs difference printed). Prints the ratio chunked / full_logits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np


def full_logits_token_logp(model, input_ids, labels, pad_token_id=0):
    """The previous implementation (one batch): full [B, T, V] logits, then the [M, V] supervised rows."""
    import torch

    with torch.inference_mode():
        length = max(len(x) for x in input_ids)
        x = torch.full((len(input_ids), length), pad_token_id, dtype=torch.long)
        y = torch.full((len(input_ids), length), -100, dtype=torch.long)
        attn = torch.zeros((len(input_ids), length), dtype=torch.long)
        for r, (a, b) in enumerate(zip(input_ids, labels)):
            x[r, :len(a)], y[r, :len(b)], attn[r, :len(a)] = torch.tensor(a), torch.tensor(b), 1
        dev = next(model.parameters()).device
        x, y, attn = x.to(dev), y.to(dev), attn.to(dev)
        logits = model(input_ids=x, attention_mask=attn).logits  # [B, T, V]
        target = y[:, 1:]
        sel = target != -100
        rows = logits[:, :-1][sel].float()  # [M, V]
        logp = rows.gather(-1, target[sel].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(rows, dim=-1)
        counts = sel.sum(dim=1).tolist()
        return [p.cpu().numpy() for p in torch.split(logp, counts)]


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", open("/proc/self/status").read()).group(1))


def worker(a) -> dict:
    import gc

    import torch

    from sftgo.models import load_model
    from sftgo.scorers.reference import reference_token_logp

    torch.set_num_threads(a.threads)
    model = load_model(a.model, dtype="float32", device=a.device).to(a.device).eval()
    V = model.config.vocab_size
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, V, size=a.length).tolist() for _ in range(a.batch)]
    labels = [[-100] * a.prompt + x[a.prompt:] for x in ids]

    def run(i, l):
        if a.method == "full_logits":
            return full_logits_token_logp(model, i, l)
        return reference_token_logp(model, i, l, batch_size=a.batch, chunk_size=a.chunk)

    run([ids[0][:16]], [labels[0][:16][:1] + ids[0][1:16]])  # warm-up: kernels, thread pools (16 tokens)
    gc.collect()
    cuda = a.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _status_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS := current RSS
    t0 = time.perf_counter()
    out = run(ids, labels)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base
    seconds = time.perf_counter() - t0
    np.save(a.out, np.concatenate(out))
    return {"method": a.method, "peak_extra_bytes": int(peak), "seconds": round(seconds, 3), "vocab": V,
            "tokens": a.batch * a.length, "supervised": int(sum(len(o) for o in out))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model (default: the offline SmolLM2-135M-Instruct)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--prompt", type=int, default=64, help="unsupervised positions at the start of each sequence")
    p.add_argument("--chunk", type=int, default=512, help="rows per logits tile of the chunked head")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--_worker", dest="method", help=argparse.SUPPRESS)
    p.add_argument("--_out", dest="out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.method:
        print(json.dumps(worker(a)))
        return 0
    res, outs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in ("full_logits", "chunked"):
            out = os.path.join(tmp, f"{m}.npy")
            cmd = [sys.executable, __file__, "--_worker", m, "--_out", out, "--batch", str(a.batch), "--length",
                   str(a.length), "--prompt", str(a.prompt), "--chunk", str(a.chunk), "--device", a.device,
                   "--threads", str(a.threads)] + (["--model", a.model] if a.model else [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-3000:], file=sys.stderr)
                return 1
            res[m] = json.loads(r.stdout.strip().splitlines()[-1])
            outs[m] = np.load(out)
    f, c = res["full_logits"], res["chunked"]
    gib = 2 ** 30
    print(f"model {a.model or 'SmolLM2-135M-Instruct'} (V={f['vocab']}), {a.batch} x {a.length} tokens "
          f"({f['supervised']} supervised), chunk {a.chunk}, device {a.device}, fp32")
    print("| method | peak extra | time |\n|---|---|---|")
    for m in ("full_logits", "chunked"):
        print(f"| {m} | {res[m]['peak_extra_bytes'] / gib:.3f} GiB | {res[m]['seconds']:.2f} s |")
    print(f"memory ratio chunked / full_logits: {c['peak_extra_bytes'] / f['peak_extra_bytes']:.3f} "
          f"(1/{f['peak_extra_bytes'] / c['peak_extra_bytes']:.1f})")
    print(f"max |logp difference|: {float(np.abs(outs['chunked'] - outs['full_logits']).max()):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
