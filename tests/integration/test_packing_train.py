"""Packed and padding-free training runs equal the padded run on the same examples: same loss and gradient norm at
every step and the same trained weights (fp32), for sft, sft-go (per-example groups), rho1 (reference columns) and
sft-go on data with per-example weights (the loss_weight column travels with its tokens into the loss) and sft-go with
the power token weighting (its loss value f(p) in the loss and the group sums)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import EXAMPLES
from tests.integration.test_train import _records, _train

MORE = EXAMPLES + [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red is a primary colour."},
    {"instruction": "Translate to French.", "input": "the sea", "output": "la mer"},
    {"instruction": "Write a short poem about the sea.", "input": "",
     "output": "Waves roll in, the gulls cry out, the tide goes back again, and the sea is quiet."},
    {"instruction": "What is two plus two?", "input": "", "output": "Two plus two equals four."},
]


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory, chat_tokenizer):
    """A second tiny model (another seed): Rho-1's reference, so excess losses differ by more than float noise (with
    the initial model as its own reference every excess loss is ~0 at step 1 and the top-k is decided by rounding)."""
    from tests.conftest import build_tiny_model

    d = tmp_path_factory.mktemp("ref_model")
    build_tiny_model(len(chat_tokenizer), seed=1).save_pretrained(d)
    chat_tokenizer.save_pretrained(d)
    return str(d)


@pytest.mark.parametrize("objective", ["sft", "sft-go", "rho1", "sft-go-weighted", "sft-go-prift", "sft-go-power"])
def test_packed_and_padding_free_runs_equal_the_padded_run(tmp_path, tiny_model_dir, other_model_dir, objective):
    data = tmp_path / "data.jsonl"
    rows = MORE
    if objective == "sft-go-weighted":  # distinct weights per example
        rows, objective = [{**r, "weight": 0.5 + 0.75 * i} for i, r in enumerate(MORE)], "sft-go"
    prift = objective == "sft-go-prift"  # PriFT's reference columns travel with their tokens too
    if prift:
        objective = "sft-go"
    weighting = []
    if objective == "sft-go-power":  # Beyond Log Likelihood's (1 - p^0.5) / 0.5 per token, inside sft-go's groups
        objective, weighting = "sft-go", ["--token_weight", "power", "--power_alpha", "0.5"]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # 8 examples of different lengths, batch 4, 2 steps; max_length 96 lets a packed row hold 2-3 examples.
    # Plain SGD: the weight change is lr x gradient, so equal weights mean equal gradients (Adam would divide tiny
    # gradients by their own magnitude and turn float noise in them into visible weight differences).
    args = ["--objective", objective, "--max_length", "96", "--optim", "sgd", "--learning_rate", "0.5",
            "--percentile", "70", *weighting] + (["--ref_model_name_or_path", other_model_dir] if objective == "rho1" or prift else [])
    args += ["--token_weight", "prift_mass"] if prift else []
    runs = {name: _train(tmp_path, tiny_model_dir, str(data), *args, *extra, name=name)
            for name, extra in [("padded", []), ("packed", ["--packing", "true"]), ("free", ["--padding_free", "true"])]}
    ref, ref_w = _records(runs["padded"]), _weights(runs["padded"])
    assert len(ref) == 2
    for name in ("packed", "free"):
        got = _records(runs[name])
        for a, b in zip(ref, got):
            for k in ("loss", "loss_ce", "loss_important", "loss_unimportant", "grad_norm"):
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (name, a["step"], k)
            if prift:
                assert 0.0 < a["mean_weight"] < 1.0 and b["mean_weight"] == pytest.approx(a["mean_weight"], rel=1e-6)
            assert b["tokens"] == a["tokens"]
        w = _weights(runs[name])
        for k, v in ref_w.items():
            torch.testing.assert_close(w[k], v, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name} {k}: {m}")
