"""The optimizer step's objective does not depend on how its batch was split (issues 9 and 13).

On distinct examples, a global batch of 4 run as (1 process, micro-batch 4), (1 process, micro-batch 1,
accumulation 4) and (2 processes under torchrun + gloo, micro-batch 2) gives the same losses, group metrics and final
weights after 3 steps, for every objective: the same examples in each step (StepOrderSampler), one normalization by the
step's token count, and group statistics (worst group, DRO weights, Rho-1's top-k, batch-scope top-k) taken over the
whole step (--group_stats exact). The examples carry channels, so the per-channel losses (loss/<channel>, and per group)
are checked the same way. One torchrun launch trains every objective's 2-process run in turn (train_worker.py) beside
the tests' single-process runs, which are in-process.
``sft-go-weighted`` is SFT-GO on data with per-example weights (issue 20): the step's weight W, the weighted group
sums and counts are as exact over accumulation and processes as the counts."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sftgo.cli import main

WORDS = ("river mountain cloud seven orange quiet bridge garden winter lamp copper violin desert harbor pencil "
         "thunder marble candle forest silver ladder meadow rocket velvet").split()


def distinct_examples(n=12, weights=None):
    """n examples with different instructions and responses of different lengths (no two alike), in 3 channels;
    ``weights(i)``: the example's data weight (the ``weight`` field), if given."""
    out = []
    for i in range(n):
        w = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 5)]
        out.append({"instruction": f"Describe the {WORDS[i]} in {3 + i % 5} words.", "input": "",
                    "output": " ".join(w).capitalize() + ".", "channel": ("red", "green", "blue")[i % 3]})
        if weights is not None:
            out[-1]["weight"] = weights(i)
    return out


def uneven(i):
    """Distinct weights, 0.25 .. 3.5, so the weighted means differ from the plain ones."""
    return 0.25 + (i * 5 % 12) * 0.25


OBJECTIVES = {
    # (plain sft's normalization, the step's K over processes, is the (1 - lam) term of every case below)
    "sft-go": ["--lam", "0.9"],
    "sft-go-k3": ["--objective", "sft-go", "--num_groups", "3", "--lam", "0.9"],
    "sft-go-batch": ["--objective", "sft-go", "--group_scope", "batch", "--percentile", "70", "--lam", "0.9"],
    "sft-go-dro": ["--dro_eta", "1.0", "--lam", "0.9"],
    "rho1": ["--percentile", "40"],
    # dft / infosft / eaft are sft with a token weighting (one code path); the weighting inside a grouping, with the
    # exact pre-pass computing t_n for the step's group sums, is the case that can break across a split.
    "sft-go-infosft": ["--objective", "sft-go", "--lam", "0.9", "--token_weight", "infosft"],
    # the power family: the loss value f(p) and the group sums of f(p) (the pre-pass computes them too)
    "sft-go-power": ["--objective", "sft-go", "--lam", "0.9", "--token_weight", "power", "--power_alpha", "0.5"],
    # your own token weighting (README, "Your own token weighting"), reading the reference's log p, the entropy and the
    # top-k logits: imported by name in each process (the repository root is on the workers' PYTHONPATH)
    "sft-go-user": ["--objective", "sft-go", "--lam", "0.9", "--token_weight", "tests.user_weights:mixed"],
    "target-sft": ["--target_gamma", "0.8", "--target_residual", "topk", "--target_topk", "5"],
    "sft-go-weighted": ["--objective", "sft-go", "--lam", "0.9", "--dataset", "{weighted}"],
    # PriFT's static t_n (the reference columns, computed once, sharded over the 2 processes) inside a grouping, on
    # weighted data: t_n in the groups' sums, the data weights alone in their counts
    "sft-go-prift": ["--objective", "sft-go", "--lam", "0.9", "--token_weight", "prift_mass", "--dataset", "{weighted}"],
    # --group_scope dataset: one threshold over the training set (Token Cleaning's influence score), whatever the split
    "sft-go-dataset": ["--objective", "sft-go", "--group_scope", "dataset", "--scorer", "influence", "--percentile", "70",
                       "--lam", "0.9"],
    "rho1-dataset": ["--objective", "rho1", "--group_scope", "dataset", "--scorer", "influence", "--percentile", "40"],
}
KEYS = ("loss", "loss_ce", "loss_important", "loss_unimportant", "tokens", "dro_q0", "frac_kept", "entropy",
        "token_accuracy", "entropy_important", "token_accuracy_unimportant", "mean_weight", "min_weight", "max_weight")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, chat_tokenizer):
    from tests.conftest import build_tiny_model

    d = tmp_path_factory.mktemp("inv")
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in distinct_examples()))
    (d / "weighted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in distinct_examples(weights=uneven)))
    ref = d / "ref"  # a different model as Rho-1's reference, so excess losses are far from zero and from ties
    build_tiny_model(len(chat_tokenizer), seed=1).save_pretrained(ref)
    chat_tokenizer.save_pretrained(ref)
    return d, str(data), str(ref)


def _args(name, model_dir, data, ref, cache):
    extra = [a.format(weighted=str(Path(data).with_name("weighted.jsonl"))) for a in OBJECTIVES[name]]
    obj = name if "--objective" not in extra else []
    return ["--model_name_or_path", model_dir, "--dataset", data, "--max_steps", "3", "--max_length", "48",
            "--learning_rate", "1e-3", "--disable_tqdm", "true", "--save_steps", "100", "--score_cache_dir", cache,
            "--ref_model_name_or_path", ref, *(["--objective", obj] if obj else []), *extra]


def _records(out):
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(Path(out) / "final" / "model.safetensors"))


@pytest.fixture(scope="module")
def ddp_runs(setup, tiny_model_dir):
    """Every objective's 2-process run (torchrun + gloo, micro-batch 2), one after the other in one torchrun job started
    here; a test waits for ``<its ddp2 run>.done``. Yields a function that waits for one run."""
    d, data, ref = setup
    jobs = [[str(d / f"{name}-ddp2"), ["train", *_args(name, tiny_model_dir, data, ref, str(d / "cache")),
                                       "--output_dir", str(d / f"{name}-ddp2"), "--per_device_train_batch_size", "2",
                                       "--use_cpu", "true", "--ddp_backend", "gloo"]] for name in OBJECTIVES]
    (d / "ddp_jobs.json").write_text(json.dumps(jobs))
    log = d / "ddp_jobs.log"
    torchrun = Path(sys.executable).parent / "torchrun"
    with open(log, "w") as f:
        root = str(Path(__file__).resolve().parents[2])  # tests.user_weights importable in every worker
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), root) if p)}
        proc = subprocess.Popen([str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                                 str(Path(__file__).with_name("train_worker.py")), str(d / "ddp_jobs.json")],
                                stdout=f, stderr=subprocess.STDOUT, env=env)

    def wait(out: Path, timeout=600):
        t_end = time.time() + timeout
        while not Path(f"{out}.done").exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < t_end, f"{out}: not done in {timeout} s; " + log.read_text()[-3000:]
            time.sleep(0.2)

    yield wait
    if proc.poll() is None:  # a test failed before the job ended
        proc.kill()
    proc.wait()


@pytest.mark.serial
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_same_step_however_split(setup, ddp_runs, tiny_model_dir, name):
    d, data, ref = setup
    common = _args(name, tiny_model_dir, data, ref, str(d / "cache"))
    runs = {
        "micro4": ["--per_device_train_batch_size", "4"],
        "accum4": ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "4"],
    }
    outs = {k: d / f"{name}-{k}" for k in [*runs, "ddp2"]}
    for k, extra in runs.items():  # in-process while the 2-process runs go
        assert main(["train", *common, "--output_dir", str(outs[k]), *extra]) == 0
    ddp_runs(outs["ddp2"])

    recs = {k: _records(o) for k, o in outs.items()}
    weights = {k: _weights(o) for k, o in outs.items()}
    ref_recs, ref_w = recs["micro4"], weights["micro4"]
    assert len(ref_recs) == 3
    for k in ("accum4", "ddp2"):
        assert len(recs[k]) == 3, k
        for a, b in zip(ref_recs, recs[k]):
            channels = [key for key in a if "/" in key]  # loss/<channel>, loss_important/<channel>, ...
            assert any(key.startswith("loss/") for key in channels)
            for key in [*KEYS, *channels]:
                if key in a:
                    assert b[key] == pytest.approx(a[key], abs=1e-5), (k, a["step"], key)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), (k, a["step"])
        for p, w in ref_w.items():
            assert torch.allclose(weights[k][p], w, atol=1e-5, rtol=0), (k, p, (weights[k][p] - w).abs().max())
    thresholds = {k: yaml.safe_load((o / "config.yaml").read_text()).get("group_threshold") for k, o in outs.items()}
    assert len(set(thresholds.values())) == 1, thresholds  # --group_scope dataset: the same on every process and split
    assert (thresholds["micro4"] is not None) == name.endswith("-dataset")
    moved = max((ref_w[p] - w0).abs().max().item() for p, w0 in _weights_initial(tiny_model_dir).items())
    assert moved > 1e-4  # training did change the weights (so equal weights mean something)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights_initial(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_uniform_data_weights_are_the_unweighted_run(setup, tiny_model_dir):
    """Weight 2.0 on every example is the unweighted run (losses, group losses and final weights within 1e-6); uneven
    weights change it. SFT-GO over 2 micro-batches (the exact pre-pass with weighted sums and counts)."""
    d, data, ref = setup
    (d / "uniform2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in distinct_examples(weights=lambda i: 2.0)))
    outs = {}
    for name, path in (("plain", data), ("uniform2", str(d / "uniform2.jsonl")), ("uneven", str(d / "weighted.jsonl"))):
        outs[name] = d / f"uniform-{name}"
        assert main(["train", *_args("sft-go", tiny_model_dir, path, ref, str(d / "cache")), "--output_dir",
                     str(outs[name]), "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"]) == 0
    recs = {k: _records(o) for k, o in outs.items()}
    weights = {k: _weights(o) for k, o in outs.items()}
    for a, b in zip(recs["plain"], recs["uniform2"]):
        for key in ("loss", "loss_ce", "loss_important", "loss_unimportant", "tokens"):
            assert b[key] == pytest.approx(a[key], abs=1e-6, rel=0), (a["step"], key)
    for p, w in weights["plain"].items():
        assert torch.allclose(weights["uniform2"][p], w, atol=1e-6, rtol=0), p
    assert [r["tokens"] for r in recs["uneven"]] == [r["tokens"] for r in recs["plain"]]  # the same tokens, weighed
    assert any(abs(a["loss"] - b["loss"]) > 1e-3 for a, b in zip(recs["plain"], recs["uneven"]))
    assert max((weights["uneven"][p] - w).abs().max().item() for p, w in weights["plain"].items()) > 1e-5
