"""Everything only a GPU can check, as one command that prints one table (issue 21, item 7).

    python benchmarks/gpu_check.py                          # one CUDA GPU, SmolLM2-135M-Instruct: a few minutes
    python benchmarks/gpu_check.py --device cpu --quick     # its CPU parts on tiny shapes, in seconds (run by make test)

Parts (``--parts`` picks some; each runs in its own subprocess so one crash, hang or CUDA allocator state cannot leak
into the next, and under one overall ``--budget_s``):

* ``precision``: the fused per-token head in fp32 and bf16 vs a float64 reference (loss and gradient max error) for
  sft, sft-go and target-sft through the training path's head (``token_head.weighted_nll`` with the objectives'
  coefficients, ``token_head.chunked_loss`` with ``objectives.target_sft_chunk_loss``). The reference runs
  the pure objective functions on full float64 logits built from the *same* (already rounded) inputs, so the error
  is the head's arithmetic, not the input rounding.
* ``memory`` (CUDA): peak memory of one head forward + backward (``torch.cuda.max_memory_allocated`` above the
  inputs) and its time: the naive head (full logits, log_softmax), sftgo's fused sft / sft-go heads, and Liger's
  fused linear cross-entropy with ``reduction="none"`` (liger-kernel >= 0.8.2) where it installs.
* ``throughput``: training tokens per second of ``sftgo train`` (sft, sft-go with ``--group_stats exact``) and TRL's
  ``SFTTrainer`` with and without ``use_liger_kernel``, on the same model, data, batch and length, bf16 on CUDA. The
  data are rows of exactly ``--max_length`` tokens (long answers, truncated), so every contender processes the same
  tokens per step. Each contender trains K steps twice and K + N steps once in one process; tokens/s is
  ``N * batch * length / (T(K+N) - T(K))`` from the second and third runs (warm-up, data loading and saving cancel).
* ``packing``: ``--packing`` and ``--padding_free`` vs padded rows on the bundled data: the per-step losses (equal up
  to float error: the same examples, attention never crosses an example) and supervised tokens per second, with sdpa
  (fp32) and with flash-attention 2's varlen kernel (bf16) where ``flash_attn`` installs.
* ``accumulation``: sft-go with ``--group_stats exact`` and ``lagged`` and sft-go-dro, each as (micro-batch 4) and
  (micro-batch 2 x gradient accumulation 2) in fp32: the same losses per step (the objective belongs to the step).
* ``generate``: ``sftgo generate``'s greedy decoding on the device equals transformers' ``model.generate`` on the
  same prompts, and how often a left-padded batch agrees with one prompt at a time.

Every part or row that cannot run (no CUDA, a package not installed, the time budget spent) prints a row that says
so; no figure is made up. ``--json FILE`` also writes the rows. Exit status 1 when a row says FAIL.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = ("precision", "memory", "throughput", "packing", "accumulation", "generate")


def row(part, check, figure="", status="measured"):
    return {"part": part, "check": check, "figure": figure, "status": status}


def not_run(part, check, why):
    return row(part, check, "–", f"not run: {why}")


def verdict(err, limit):
    if err is None or not math.isfinite(err):
        return "FAIL (not finite)"
    return f"ok (< {limit:g})" if err < limit else f"FAIL (>= {limit:g})"


def package_version(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def vtuple(v):
    return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())


# --------------------------------------------------------------------------------------------------------- precision


def fused_loss(kind, hd, wd, t, imp, *, lam=0.9, gamma=0.8):
    """The training path's head for one objective, normalized by the supervised count: sft (c = 1), sft-go (a
    worst-group GroupCoef, as sftgo.objectives.SFTGo builds it) or target-sft (the chunked soft-target loss)."""
    from sftgo.objectives import target_sft_chunk_loss, worst_onehot
    from sftgo.token_head import GroupCoef, chunked_loss, weighted_nll

    n = float((t != -100).sum())
    if kind == "sft":
        return weighted_nll(hd, wd, t, 1.0, chunk_size=512)[0] / n
    if kind == "sft-go":
        coef = GroupCoef(imp.long(), 2, lambda s, c: (1 - lam) + lam * worst_onehot(s / c.clamp(min=1), c) * n
                         / c.clamp(min=1))
        return weighted_nll(hd, wd, t, coef, chunk_size=512)[0] / n
    return chunked_loss(hd, wd, t, lambda z, y, e: target_sft_chunk_loss(z, y, gamma=gamma, residual="uniform"),
                        chunk_size=512) / n


def part_precision(cfg):
    import torch

    from sftgo.token_head import naive_token_logp

    dev = cfg["device"]
    # GPU: a Llama-3-sized head; CPU: small enough for float64 logits in RAM and minutes, not hours.
    n, h, v = (256, 64, 1000) if cfg["quick"] else (4096, 2048, 128256) if dev == "cuda" else (1024, 256, 32000)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g) / math.sqrt(h) * 4  # logits of a few units: a trained model's range
    targets = torch.randint(0, v, (n,), generator=g)
    targets[torch.rand(n, generator=g) < 0.1] = -100  # prompt / padding positions
    important = torch.rand(n, generator=g) < 0.2
    mask = targets != -100
    lam, gamma = 0.9, 0.8
    rows = []

    def run(kind, hd, wd, t, imp):
        return fused_loss(kind, hd, wd, t, imp, lam=lam, gamma=gamma)

    def reference(kind, hd, wd, t, imp):
        from sftgo.objectives import target_sft_chunk_loss

        m = t != -100
        n = m.sum().to(hd.dtype)
        if kind == "target-sft":  # the same per-row formula on the whole [N, V] logits at once
            return target_sft_chunk_loss(hd[m] @ wd.T, t[m], gamma=gamma, residual="uniform") / n
        ce = -naive_token_logp(hd, wd, t)[m]
        if kind == "sft":
            return ce.sum() / n
        i = imp[m]
        means = [ce[~i].mean(), ce[i].mean()]  # unimportant first: ties go to it, as in the training path
        worst = means[1] if means[1] > means[0] else means[0]
        return (1 - lam) * ce.mean() + lam * worst

    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        limit = 1e-5 if dtype == torch.float32 else 2e-2
        for kind in ("sft", "sft-go", "target-sft"):
            check = f"{kind} {dtype_name} fused head vs float64: loss rel err, grad max err (/ max |grad|)"
            try:
                hd = hidden.to(dev, dtype).clone().requires_grad_()  # fresh leaves: no gradient carried over
                wd = weight.to(dev, dtype).clone().requires_grad_()
                t, imp = targets.to(dev), important.to(dev)
                loss = run(kind, hd, wd, t, imp)
                loss.backward()
                h64 = hd.detach().double().requires_grad_()
                w64 = wd.detach().double().requires_grad_()
                ref = reference(kind, h64, w64, t, imp)
                ref.backward()
                lerr = abs(float(loss) - float(ref)) / abs(float(ref))
                gerr = [float((a.grad.double() - b.grad).abs().max() / b.grad.abs().max()) for a, b in ((hd, h64), (wd, w64))]
                err = max([lerr] + gerr)
                rows.append(row("precision", check, f"loss {lerr:.1e}, grad hidden {gerr[0]:.1e}, grad weight {gerr[1]:.1e}",
                                verdict(err, limit)))
            except (AttributeError, TypeError, ImportError) as e:  # the public entry point moved: say so, never guess
                rows.append(not_run("precision", check, f"sftgo API changed ({type(e).__name__}: {str(e)[:120]})"))
            del hd, wd
    rows.append(row("precision", "shape (tokens N, hidden H, vocab V), 10% ignored, 20% important, lam 0.9, gamma 0.8",
                    f"N={n} H={h} V={v} on {dev} (float64 reference on {dev}: {(int(mask.sum()))} supervised tokens)"))
    return rows


# ------------------------------------------------------------------------------------------------------------ memory


def part_memory(cfg):
    import torch

    if cfg["device"] != "cuda":
        return [not_run("memory", "head peak memory: naive vs fused vs Liger", "peak memory is read from the CUDA "
                        "allocator; on CPU see benchmarks/bench_token_head.py (ru_maxrss)")]
    n, h, v = 8192, 2048, 128256
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    hidden = (torch.randn(n, h, device=dev, generator=g)).to(torch.bfloat16)
    weight = (torch.randn(v, h, device=dev, generator=g) / math.sqrt(h) * 4).to(torch.bfloat16)
    targets = torch.randint(0, v, (n,), device=dev, generator=g)
    targets[:n // 10] = -100
    important = torch.rand(n, device=dev, generator=g) < 0.2
    n_sup = int((targets != -100).sum())

    def naive(hd, wd):
        logits = hd @ wd.T  # [N, V] <- the tensor the fused head never builds
        logp = torch.log_softmax(logits.float(), -1)
        lp = logp.gather(1, targets.clamp(min=0)[:, None]).squeeze(1)
        return -(lp * (targets != -100)).sum() / n_sup

    methods = {"naive": naive,
               "fused sft": lambda hd, wd: fused_loss("sft", hd, wd, targets, important),
               "fused sft-go": lambda hd, wd: fused_loss("sft-go", hd, wd, targets, important, lam=0.9)}
    rows = []
    lv = package_version("liger-kernel")
    if lv is None:
        rows.append(not_run("memory", "Liger fused linear CE (reduction='none')", "liger-kernel not installed "
                            "(pip install 'liger-kernel>=0.8.2')"))
    elif vtuple(lv) < (0, 8, 2):
        rows.append(not_run("memory", "Liger fused linear CE (reduction='none')", f"liger-kernel {lv} < 0.8.2"))
    else:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="none")
        # reduction="none": per-token losses, what a token-weighted objective needs from it
        methods[f"liger {lv} (reduction='none')"] = lambda hd, wd: liger(wd, hd, targets).sum() / n_sup
    peaks, times, losses, failed = {}, {}, {}, {}
    for name, fn in methods.items():
        hd, wd = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        try:
            for _ in range(2):  # warm-up (Triton / cuBLAS autotuning), then fresh grads
                fn(hd, wd).backward()
                hd.grad = wd.grad = None
            torch.cuda.synchronize()
            ts = []
            for i in range(3):
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                t0 = time.perf_counter()
                loss = fn(hd, wd)
                loss.backward()
                torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
                if i == 0:
                    peaks[name] = torch.cuda.max_memory_allocated() - base  # includes hidden.grad and weight.grad
                    losses[name] = float(loss)
                hd.grad = wd.grad = None
            times[name] = statistics.median(ts)
        except Exception as e:  # noqa: BLE001 - one method that breaks (an API change, OOM) becomes its own row
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"
        del hd, wd
        torch.cuda.empty_cache()
    for name in methods:
        check = f"{name}: peak above inputs, time (fwd+bwd, median of 3), loss"
        if name in failed:
            rows.append(not_run("memory", check, failed[name]))
        elif "naive" not in peaks:
            rows.append(row("memory", check, f"{peaks[name] / 2**30:.2f} GiB; {times[name] * 1e3:.1f} ms; loss {losses[name]:.5f}"))
        else:
            rows.append(row("memory", check,
                            f"{peaks[name] / 2**30:.2f} GiB = {peaks[name] / peaks['naive']:.3f}x naive; {times[name] * 1e3:.1f} "
                            f"ms = {times[name] / times['naive']:.2f}x naive; loss {losses[name]:.5f}"))
    rows.append(row("memory", "shape", f"N={n} H={h} V={v} bf16 (Llama-3 vocabulary), grads of hidden and weight "
                    f"({(n * h + v * h) * 2 / 2**30:.2f} GiB) counted in every peak"))
    return rows


# -------------------------------------------------------------------------------------------------------- throughput


def sftgo_run(cfg, out, data, steps, *extra):
    """One ``sftgo train`` (in this process, its public command line); returns summary.json and metrics.jsonl."""
    from sftgo.cli import main

    args = ["train", "--model_name_or_path", cfg["model"], "--dataset", data, "--output_dir", str(out),
            "--max_steps", str(steps), "--per_device_train_batch_size", str(cfg["batch"]), "--max_length",
            str(cfg["max_length"]), "--learning_rate", "1e-5", "--save_steps", "100000", "--logging_steps", "1",
            "--report_to", "none", "--disable_tqdm", "true", "--seed", "0", "--score_cache_dir", str(Path(out).parent / "cache"),
            *(["--use_cpu", "true"] if cfg["device"] == "cpu" else []), *extra]
    if main(args) != 0:
        raise RuntimeError(f"sftgo train failed: {' '.join(args)}")
    summary = json.loads((Path(out) / "summary.json").read_text())
    metrics = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    shutil.rmtree(out, ignore_errors=True)  # its final/ model: ~0.5 GB per run of SmolLM2, dozens of runs
    return summary, [m for m in metrics if "loss" in m]


def rate(cfg, runner):
    """(tokens / s, seconds / step) from runs of K, K and K + N steps: the difference of the last two. With --quick
    one run of K + N steps and no figure: a few steps of a tiny model time noise, not the code."""
    k, n = cfg["k"], cfg["n"]
    if cfg["quick"]:
        runner(k + n, "b")
        return None, None
    runner(k, "warm")
    ta, ka = runner(k, "a")
    tb, kb = runner(k + n, "b")
    return (kb - ka) / (tb - ta), (tb - ta) / n


def part_throughput_worker(cfg):
    """One contender (cfg["contender"]) in this process."""
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="tp_", dir=cfg["tmp"]))
    c = cfg["contender"]
    bf16 = ["--bf16", "true"] if cfg["device"] == "cuda" else []
    per_step = cfg["batch"] * cfg["max_length"]  # every row is max_length tokens long
    # Each optimizer step is 2 micro-batches of batch/2 (gradient accumulation), in every contender: so sft-go's
    # exact statistics pay their no-grad pre-pass over the step, as they do in a real run with accumulation.
    micro = {**cfg, "batch": cfg["batch"] // 2}
    if c in ("sft", "sft-go"):
        extra = ["--objective", c, "--gradient_accumulation_steps", "2", *bf16]
        extra += ["--group_stats", "exact"] if c == "sft-go" else []

        def runner(steps, tag):
            s, _ = sftgo_run(micro, tmp / tag, cfg["data"], steps, *extra)
            return s["train_time_s"], s["steps"] * per_step
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        from sftgo.data import load_examples
        from sftgo.models import load_model, load_tokenizer

        examples = load_examples(cfg["data"])
        rows = [{"prompt": [{"role": "user", "content": e["messages"][0]["content"]}],
                 "completion": [{"role": "assistant", "content": e["messages"][1]["content"]}]} for e in examples]
        tok = load_tokenizer(cfg["model"])

        def runner(steps, tag):
            model = load_model(cfg["model"], dtype="float32", device=cfg["device"])
            # TRL 1.16 defaults to gradient checkpointing and bf16; like sftgo: no checkpointing, bf16 on CUDA only.
            args = SFTConfig(output_dir=str(tmp / tag), max_length=cfg["max_length"], max_steps=steps,
                             per_device_train_batch_size=micro["batch"], gradient_accumulation_steps=2,
                             learning_rate=1e-5, logging_steps=1,
                             save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
                             gradient_checkpointing=False, bf16=cfg["device"] == "cuda", use_cpu=cfg["device"] == "cpu",
                             use_liger_kernel=c == "trl+liger")
            trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
            lengths = {len(x) for x in trainer.train_dataset["input_ids"]}
            if lengths != {cfg["max_length"]}:
                raise RuntimeError(f"TRL's rows are not all {cfg['max_length']} tokens long: {sorted(lengths)[:5]}")
            if cfg["device"] == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            trainer.train()
            if cfg["device"] == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            shutil.rmtree(tmp / tag, ignore_errors=True)
            return dt, trainer.state.global_step * per_step

    tps, sps = rate(cfg, runner)
    return [{"contender": c, "tokens_per_s": tps, "s_per_step": sps}]


def uniform_length_data(path: Path, n_examples: int, max_length: int, model: str) -> Path:
    """Alpaca records whose rendered text is longer than ``max_length`` tokens and whose prompt is short, from the
    bundled data: every row is then exactly ``max_length`` tokens after truncation, in sftgo and in TRL alike."""
    from sftgo.data import default_dataset_path, load_examples, tokenize_examples
    from sftgo.models import load_tokenizer

    base = [json.loads(line) for line in default_dataset_path().read_text().splitlines() if line.strip()]
    tok = load_tokenizer(model)
    recs, i = [], 0
    while len(recs) < n_examples:
        instruction = base[i % len(base)]["instruction"]
        i += 1
        prompt = (tok.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                          add_generation_prompt=True) if tok.chat_template else instruction)
        if len(tok(prompt)["input_ids"]) > max_length // 2:
            continue  # a long prompt would leave few or no answer tokens
        answer = ""
        while len(tok(answer)["input_ids"]) < max_length + 8:
            answer += base[i % len(base)]["output"] + "\n\n"
            i += 1
        recs.append({"instruction": instruction, "input": "", "output": answer.strip()})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    data = tokenize_examples(load_examples(str(path)), tok, max_length)
    assert {len(x) for x in data.input_ids} == {max_length}, "rows of unequal length"
    return path


# ------------------------------------------------------------------------------------------------- packing, accumulation


def max_rel_diff(a, b, key="loss"):
    pairs = [(x.get(key), y.get(key)) for x, y in zip(a, b)]
    if not pairs or len(a) != len(b) or any(p is None or q is None for p, q in pairs):
        return float("nan")
    return max(abs(p - q) / max(abs(q), 1e-12) for p, q in pairs)


def part_packing_worker(cfg):
    attn = cfg["attn"]
    tmp = Path(tempfile.mkdtemp(prefix="pack_", dir=cfg["tmp"]))
    dtype = ["--model_dtype", "bfloat16"] if attn.startswith("flash") else ["--model_dtype", "float32"]
    common = ["--objective", "sft-go", "--attn_implementation", attn, *dtype]
    layouts = {"padded": [], "packed": ["--packing", "true"], "padding_free": ["--padding_free", "true"]}
    out = {}
    if not cfg["quick"]:
        sftgo_run(cfg, tmp / "warm", cfg["bundled"], cfg["k"], *common)
    for name, flags in layouts.items():
        sb, mb = sftgo_run(cfg, tmp / f"{name}_b", cfg["bundled"], cfg["k"] + cfg["n"], *common, *flags)
        tps = None
        if not cfg["quick"]:  # timed as in rate(): the difference of a K+N-step and a K-step run
            sa, _ = sftgo_run(cfg, tmp / f"{name}_a", cfg["bundled"], cfg["k"], *common, *flags)
            tps = (sb["supervised_tokens"] - sa["supervised_tokens"]) / (sb["train_time_s"] - sa["train_time_s"])
        out[name] = {"sup_tokens_per_s": tps, "metrics": mb}
    return [{"layout": k, "sup_tokens_per_s": v["sup_tokens_per_s"],
             "loss_rel_diff_vs_padded": max_rel_diff(v["metrics"], out["padded"]["metrics"]),
             "steps": len(v["metrics"])} for k, v in out.items()]


ACCUM = {"sft-go exact": ["--objective", "sft-go", "--group_stats", "exact"],
         "sft-go lagged": ["--objective", "sft-go", "--group_stats", "lagged"],
         "sft-go-dro": ["--objective", "sft-go-dro", "--dro_eta", "1.0"]}


def part_accumulation_worker(cfg):
    tmp = Path(tempfile.mkdtemp(prefix="acc_", dir=cfg["tmp"]))
    out = []
    for name, flags in ACCUM.items():
        base = [*flags, "--lam", "0.9", "--model_dtype", "float32"]
        one = {**cfg, "batch": 4}
        two = {**cfg, "batch": 2}
        _, ma = sftgo_run(one, tmp / f"{name}_1x4".replace(" ", "_"), cfg["bundled"], cfg["acc_steps"], *base)
        _, mb = sftgo_run(two, tmp / f"{name}_2x2".replace(" ", "_"), cfg["bundled"], cfg["acc_steps"], *base,
                          "--gradient_accumulation_steps", "2")
        finite = all(m.get("loss") is not None and math.isfinite(m["loss"]) for m in ma + mb)
        out.append({"objective": name, "loss_rel_diff": max_rel_diff(mb, ma), "steps": len(ma), "finite": finite,
                    "worst_diff": max_rel_diff(mb, ma, "loss_important")})
    return out


# ---------------------------------------------------------------------------------------------------------- generate


def part_generate(cfg):
    """``sftgo generate``'s decoding on the device: greedy answers equal transformers' own ``model.generate`` on the
    same rendered prompt, token for token; and how often a left-padded batch of 4 gives the same answers as one
    prompt at a time (measured: in bf16 a padded batch may flip a near-tie)."""
    import torch

    from sftgo.data import load_examples
    from sftgo.generate import generate_answers, render_prompt, stop_ids
    from sftgo.models import load_model, load_tokenizer

    dev, n_new = cfg["device"], 8 if cfg["quick"] else 64
    prompts = [{"id": i, "messages": e["messages"][:-1], "reference": None}
               for i, e in enumerate(load_examples(cfg["bundled"], limit=8))]
    tok = load_tokenizer(cfg["model"])
    model = load_model(cfg["model"], device=dev).to(dev).eval()
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    one = generate_answers(model, tok, prompts, max_new_tokens=n_new)
    eos = stop_ids(model, tok)
    same = 0
    for p, r in zip(prompts, one):
        text, special = render_prompt(p["messages"], tok)
        enc = tok(text, add_special_tokens=special, return_tensors="pt").to(dev)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=n_new, eos_token_id=eos,
                                 pad_token_id=tok.pad_token_id)
        same += out[0, enc["input_ids"].shape[1]:].tolist() == r["answer_token_ids"]  # the whole answer, EOS included
    batched = generate_answers(model, tok, prompts, max_new_tokens=n_new, batch_size=4)
    agree = sum(a["answer_token_ids"] == b["answer_token_ids"] for a, b in zip(one, batched))
    return [row("generate", f"greedy answers of {len(prompts)} bundled prompts ({n_new} new tokens, {dtype} on {dev}) "
                "equal model.generate on the same prompt", f"{same} of {len(prompts)}",
                "ok" if same == len(prompts) else "FAIL"),
            row("generate", "left-padded batch of 4 vs one prompt at a time: identical greedy answers",
                f"{agree} of {len(prompts)}")]


# ------------------------------------------------------------------------------------------------------------ driver


def spawn(name, cfg, timeout):
    """Run one worker in a subprocess; (result, error line). With --quick in this process (seconds matter more than
    isolation on tiny shapes)."""
    if cfg["quick"]:
        import contextlib
        import io
        import logging

        logging.disable(logging.WARNING)  # the training runs' logs would bury the table
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                return WORKERS[name](cfg), None
        except Exception as e:  # noqa: BLE001 - a part that breaks becomes its row, the table still prints
            return None, f"worker failed: {type(e).__name__}: {str(e)[:200]}"
        finally:
            logging.disable(logging.NOTSET)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    res = Path(f.name + ".out")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run([sys.executable, __file__, "--_worker", name, "--_cfg", f.name, "--_out", str(res)],
                           capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    finally:
        os.unlink(f.name)
    if p.returncode != 0 or not res.exists():
        tail = [line for line in (p.stderr or p.stdout).strip().splitlines() if line.strip()][-1:] or ["no output"]
        return None, f"worker failed (exit {p.returncode}): {tail[0][:200]}"
    out = json.loads(res.read_text())
    res.unlink()
    return out, None


WORKERS = {"precision": part_precision, "memory": part_memory, "throughput": part_throughput_worker,
           "packing": part_packing_worker, "accumulation": part_accumulation_worker, "generate": part_generate}


class Budget:
    def __init__(self, seconds):
        self.end = time.time() + seconds

    def left(self):
        return self.end - time.time()


def run_precision(cfg, budget, rows, name="precision"):
    res, err = spawn(name, cfg, min(cfg["part_timeout"], budget.left()))
    rows += res if res is not None else [not_run(name, "all rows of this part", err)]


def run_throughput(cfg, budget, rows):
    contenders = ["sft", "sft-go", "trl", "trl+liger"]
    got = {}
    trl_v = package_version("trl")
    liger_v = package_version("liger-kernel")
    for c in contenders:
        check = {"sft": "sftgo train --objective sft", "sft-go": "sftgo train --objective sft-go (--group_stats exact)",
                 "trl": f"TRL SFTTrainer ({trl_v or 'trl'})", "trl+liger": "TRL SFTTrainer + use_liger_kernel"}[c]
        check += ": tokens/s, s/step"
        if c.startswith("trl") and trl_v is None:
            rows.append(not_run("throughput", check, "trl not installed (pip install 'sftgo[bench]': trl==1.16.0)"))
            continue
        if c == "trl+liger" and (liger_v is None or cfg["device"] != "cuda"):
            rows.append(not_run("throughput", check, "liger-kernel not installed" if liger_v is None
                                else "Liger's kernels are Triton: CUDA only"))
            continue
        if budget.left() < 20:
            rows.append(not_run("throughput", check, "time budget spent"))
            continue
        res, err = spawn("throughput", {**cfg, "contender": c}, min(cfg["part_timeout"], budget.left()))
        if res is None:
            rows.append(not_run("throughput", check, err))
            continue
        if res[0]["tokens_per_s"] is None:
            rows.append(row("throughput", check, "trained, not timed (--quick)", "ran"))
            continue
        got[c] = res[0]
        rows.append(row("throughput", check, f"{res[0]['tokens_per_s']:,.0f} tok/s; {res[0]['s_per_step'] * 1e3:.1f} ms/step"))
    for c in ("sft", "sft-go"):  # TRL ran after them: their ratios to it
        if c in got and "trl" in got:
            rows.append(row("throughput", f"{c} / TRL tokens/s", f"{got[c]['tokens_per_s'] / got['trl']['tokens_per_s']:.2f}x"))
    rows.append(row("throughput", "setting", f"model {cfg['model_label']}, optimizer step {cfg['batch'] // 2} x 2 "
                    f"accumulation x {cfg['max_length']} tokens (every row full), {'bf16 autocast' if cfg['device'] == 'cuda' else 'fp32'} on "
                    f"{cfg['device']}, " + (f"one run of {cfg['k'] + cfg['n']} steps (--quick)" if cfg["quick"] else
                                      f"steps K={cfg['k']} (twice) and K+N={cfg['k'] + cfg['n']}")))


def run_packing(cfg, budget, rows):
    attns = ["sdpa"]
    fa = package_version("flash-attn") or package_version("flash_attn")
    if cfg["device"] != "cuda":
        rows.append(not_run("packing", "flash_attention_2 varlen: packed / padding-free vs padded", "flash-attention needs CUDA"))
    elif fa is None:
        rows.append(not_run("packing", "flash_attention_2 varlen: packed / padding-free vs padded",
                            "flash-attn not installed (pip install flash-attn --no-build-isolation)"))
    else:
        attns.append("flash_attention_2")
    for attn in attns:
        limit = 1e-4 if attn == "sdpa" else 2e-2
        label = f"{attn} ({'fp32' if attn == 'sdpa' else 'bf16'})"
        if budget.left() < 20:
            rows.append(not_run("packing", label, "time budget spent"))
            continue
        res, err = spawn("packing", {**cfg, "attn": attn}, min(cfg["part_timeout"], budget.left()))
        if res is None:
            rows.append(not_run("packing", label, err))
            continue
        pad = next(r for r in res if r["layout"] == "padded")
        for r in res:
            speed = ("not timed (--quick)" if r["sup_tokens_per_s"] is None else
                     f"{r['sup_tokens_per_s']:,.0f} supervised tok/s = {r['sup_tokens_per_s'] / pad['sup_tokens_per_s']:.2f}x padded")
            if r["layout"] == "padded":
                rows.append(row("packing", f"{label} padded: speed", speed))
            else:
                rows.append(row("packing", f"{label} {r['layout']} vs padded: max rel loss diff over {r['steps']} steps; speed",
                                f"{r['loss_rel_diff_vs_padded']:.1e}; {speed}", verdict(r["loss_rel_diff_vs_padded"], limit)))


def run_accumulation(cfg, budget, rows):
    if cfg["device"] != "cuda":
        note = " (CPU here: the same check as on CUDA)"
    else:
        note = ""
    res, err = spawn("accumulation", cfg, min(cfg["part_timeout"], budget.left())) if budget.left() >= 20 else (None, "time budget spent")
    if res is None:
        rows.append(not_run("accumulation", "micro 4 vs micro 2 x accumulation 2", err))
        return
    for r in res:
        ok = verdict(r["loss_rel_diff"], 1e-4) if r["finite"] else "FAIL (loss not finite)"
        rows.append(row("accumulation", f"{r['objective']}: micro 4 vs micro 2 x accum 2, max rel loss diff over "
                        f"{r['steps']} steps{note}", f"{r['loss_rel_diff']:.1e} (important-group loss {r['worst_diff']:.1e})", ok))


def table(rows) -> str:
    out = ["| part | check | figure | status |", "|---|---|---|---|"]
    out += [f"| {r['part']} | {r['check']} | {r['figure']} | {r['status']} |" for r in rows]
    return "\n".join(out)


def tiny_model(device_quick_dir: Path) -> str:
    """--quick without --model: a 2-layer Llama from config with SmolLM2's tokenizer (seconds, not minutes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sftgo.models import load_tokenizer

    tok = load_tokenizer(None)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(device_quick_dir)
    tok.save_pretrained(device_quick_dir)
    return str(device_quick_dir)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and few steps (CPU parts in seconds)")
    ap.add_argument("--model", default=None, help="model for the training parts (default: SmolLM2-135M-Instruct; "
                    "with --quick: a tiny Llama from config)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    ap.add_argument("--budget_s", type=float, default=450, help="overall time limit from the start (parts past it print a row saying so)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_cfg", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._worker:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import logging

        logging.disable(logging.WARNING)
        cfg = json.loads(Path(a._cfg).read_text())
        Path(a._out).write_text(json.dumps(WORKERS[a._worker](cfg)))
        return 0

    t0 = time.time()
    budget = Budget(a.budget_s)  # from the start: model conversion and data preparation count too
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no CUDA device")
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"gpu_check: unknown part(s) {bad}; choose from {', '.join(PARTS)}")
    tmp = Path(tempfile.mkdtemp(prefix="gpucheck_"))  # every run directory, model and data file: removed at the end
    try:
        return check(a, device, parts, tmp, budget, t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check(a, device, parts, tmp, budget, t0) -> int:
    import torch

    model = a.model or (tiny_model(tmp / "tiny") if a.quick else None)
    from sftgo.data import default_dataset_path
    from sftgo.models import resolve_model_path

    model = resolve_model_path(model)
    quick = a.quick
    cfg = {"device": device, "quick": quick, "model": model, "model_label": a.model or ("tiny Llama" if quick else "SmolLM2-135M-Instruct"),
           "batch": 4 if quick else 8, "max_length": 64 if quick else 512, "k": 1 if quick else 3, "n": 2 if quick else 30,
           "acc_steps": 2 if quick else 4, "part_timeout": 240 if quick else 200,
           "bundled": str(default_dataset_path()), "tmp": str(tmp)}
    rows = []
    header = (f"gpu_check: device {device}" + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else "")
              + f", torch {torch.__version__}, transformers {package_version('transformers')}, trl {package_version('trl')}, "
              f"liger-kernel {package_version('liger-kernel')}, flash-attn {package_version('flash-attn') or package_version('flash_attn')}"
              + (", --quick" if quick else ""))
    print(header, flush=True)
    for part in parts:
        if budget.left() < 20:
            rows.append(not_run(part, "all rows of this part", f"time budget of {a.budget_s:.0f} s spent"))
            continue
        if part in ("precision", "memory", "generate"):
            run_precision(cfg, budget, rows, part)
        elif part == "throughput":
            if "data" not in cfg:
                cfg["data"] = str(uniform_length_data(tmp / "uniform.jsonl", 4 * cfg["batch"], cfg["max_length"], model))
            run_throughput(cfg, budget, rows)
        elif part == "packing":
            run_packing(cfg, budget, rows)
        else:
            run_accumulation(cfg, budget, rows)
        print(f"  {part} done ({time.time() - t0:.0f} s)", flush=True)
    print(table(rows))
    print(f"total {time.time() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"header": header, "rows": rows, "seconds": round(time.time() - t0, 1)}, indent=1))
    return 1 if any(r["status"].startswith("FAIL") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
