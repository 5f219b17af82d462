"""`sftgo train --eval_dataset D --eval_steps K`: held-out group losses in metrics.jsonl, through the same head and
grouping as training, and an evaluation pass never moves the training state (DRO's q, lagged means, train metrics)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sftgo.cli import main
from tests.conftest import EXAMPLES

HELD_OUT = [
    {"instruction": "Name a color.", "input": "", "output": "The sky is blue and the grass is green."},
    {"instruction": "Count to five.", "input": "", "output": "One, two, three, four, five."},
    {"instruction": "Say hello.", "input": "", "output": "Hello, how are you today?"},
]


def _files(tmp_path):
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES * 2))
    held.write_text("".join(json.dumps(r) + "\n" for r in HELD_OUT))
    return str(train), str(held)


def _run(tmp_path, model_dir, train, name, *extra):
    out = tmp_path / name
    assert main(["train", "--model_name_or_path", model_dir, "--dataset", train, "--output_dir", str(out),
                 "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", "--learning_rate", "1e-3",
                 "--max_length", "64", "--save_steps", "100", "--score_cache_dir", str(tmp_path / "cache"),
                 "--disable_tqdm", "true", *extra]) == 0
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()], out


@pytest.mark.parametrize("objective,extra", [("sft-go-dro", ["--dro_eta", "1.0"]),
                                             ("sft-go", ["--group_stats", "lagged"])])
def test_eval_pass_leaves_training_untouched(tmp_path, tiny_model_dir, objective, extra):
    train, held = _files(tmp_path)
    args = ["--objective", objective, "--max_steps", "3", "--lam", "0.9", *extra]
    plain, _ = _run(tmp_path, tiny_model_dir, train, "plain", *args)
    with_eval, _ = _run(tmp_path, tiny_model_dir, train, "eval", *args, "--eval_dataset", held, "--eval_steps", "1",
                        "--per_device_eval_batch_size", "2")
    train_recs = [r for r in with_eval if "loss" in r]
    eval_recs = [r for r in with_eval if "eval_loss" in r]
    assert [r["step"] for r in eval_recs] == [1, 2, 3]
    for r in eval_recs:
        for k in ("eval_loss_ce", "eval_loss_important", "eval_loss_unimportant", "eval_loss_worst"):
            assert math.isfinite(r[k]), k
        assert "loss_ce" not in r  # held-out tokens never reach the training metrics
    assert len(train_recs) == len(plain) == 3
    for a, b in zip(plain, train_recs):
        for k, v in a.items():
            if k.startswith("dro_q") or k in ("loss", "loss_ce", "loss_important", "loss_unimportant", "tokens",
                                              "grad_norm", "worst_group", "worst_group_step"):
                assert b[k] == pytest.approx(v, abs=1e-7), (a["step"], k)
    if objective == "sft-go-dro":
        assert plain[-1]["dro_q0"] != pytest.approx(0.5, abs=1e-4)  # q moves in training: its equality is meaningful


def test_eval_losses_equal_full_logits(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftgo.config import SFTGoConfig
    from sftgo.data import load_examples, tokenize_examples
    from sftgo.grouping import percentile_groups
    from sftgo.pipeline import compute_importance

    train, held = _files(tmp_path)
    # one optimizer step, then the evaluation at step 1 sees exactly the weights saved in final/
    recs, out = _run(tmp_path, tiny_model_dir, train, "run", "--max_steps", "1", "--eval_dataset", held,
                     "--eval_steps", "1", "--percentile", "70", "--per_device_eval_batch_size", "2")
    got = [r for r in recs if "eval_loss" in r][0]

    tok = AutoTokenizer.from_pretrained(out / "final")
    model = AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32).eval()
    data = tokenize_examples(load_examples(held), tok, 64)
    cfg = SFTGoConfig(output_dir=str(tmp_path / "x"), scorer="tfidf", score_cache_dir=str(tmp_path / "cache2"))
    groups = percentile_groups(compute_importance(cfg, data, tok), 70)
    ce = {"all": [], "imp": [], "unimp": []}
    with torch.no_grad():
        for ids, labels, imp in zip(data.input_ids, data.labels, groups):
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)  # full [T, V] logits
            sup = [t for t in range(1, len(ids)) if labels[t] != -100]
            assert len(sup) == len(imp)
            for t, important in zip(sup, imp):
                x = -logp[t - 1, labels[t]].item()
                ce["all"].append(x)
                ce["imp" if important else "unimp"].append(x)
    want = {k: float(np.mean(v)) for k, v in ce.items()}
    assert got["eval_loss_ce"] == pytest.approx(want["all"], rel=1e-5)
    assert got["eval_loss_important"] == pytest.approx(want["imp"], rel=1e-5)
    assert got["eval_loss_unimportant"] == pytest.approx(want["unimp"], rel=1e-5)
    assert got["eval_loss_worst"] == pytest.approx(max(want["imp"], want["unimp"]), rel=1e-5)
    assert got["eval_tokens"] == len(ce["all"])
