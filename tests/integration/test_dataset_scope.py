"""``--group_scope dataset`` in ``sftgo train`` (Token Cleaning's global selection, arXiv 2502.01968): the threshold is
the training set's, fixed before training and recorded in config.yaml; it is the k-th highest ``--scorer influence``
score of the whole set (checked against full-logits log-probs computed here); packing does not change the run; a
resume uses the recorded threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from sftgo.cli import main
from tests.integration.test_packing_train import MORE, _weights, other_model_dir  # noqa: F401 (a fixture)
from tests.integration.test_train import _records, _train


def _independent_influence(model_dir, ref_dir, data_file, max_length) -> np.ndarray:
    """``log p_ref - log p_initial`` of every supervised token of the data, from each model's full logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftgo.data import load_examples, tokenize_examples

    tok = AutoTokenizer.from_pretrained(model_dir)
    data = tokenize_examples(load_examples(data_file), tok, max_length)
    out = []
    models = [AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval() for d in (ref_dir, model_dir)]
    with torch.no_grad():
        for ids, labels in zip(data.input_ids, data.labels):
            y = torch.tensor(labels[1:])
            sup = y != -100
            lp = [torch.log_softmax(m(torch.tensor([ids])).logits[0, :-1], -1)[sup].gather(1, y[sup, None])[:, 0]
                  for m in models]
            out.append((lp[0] - lp[1]).numpy())
    return np.concatenate(out).astype(np.float64)


def _data(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in MORE))
    return str(data)


def test_the_threshold_is_the_training_sets_and_packing_does_not_change_the_run(tmp_path, tiny_model_dir,
                                                                                  other_model_dir):
    data = _data(tmp_path)
    args = ["--objective", "rho1", "--group_scope", "dataset", "--scorer", "influence", "--percentile", "60",
            "--ref_model_name_or_path", other_model_dir, "--max_length", "96", "--optim", "sgd", "--learning_rate",
            "0.5"]
    runs = {name: _train(tmp_path, tiny_model_dir, data, *args, *extra, name=name)
            for name, extra in [("padded", []), ("packed", ["--packing", "true"])]}
    scores = _independent_influence(tiny_model_dir, other_model_dir, data, 96)
    k = int(np.floor(0.4 * scores.size + 0.5))
    t = yaml.safe_load((runs["padded"] / "config.yaml").read_text())["group_threshold"]
    assert t == pytest.approx(np.sort(scores)[::-1][k - 1], abs=1e-5)
    rec = json.loads((runs["padded"] / "summary.json").read_text())["group_threshold"]
    assert (rec["threshold"], rec["kept"], rec["tokens"]) == (t, k, scores.size)
    assert rec["frac_kept"] == pytest.approx(k / scores.size)
    assert yaml.safe_load((runs["packed"] / "config.yaml").read_text())["group_threshold"] == t  # not the batching's
    padded, packed = _records(runs["padded"]), _records(runs["packed"])
    assert len(padded) == 2
    for a, b in zip(padded, packed):
        for key in ("loss", "loss_ce", "frac_kept", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
        assert b["tokens"] == a["tokens"]
    # the step's kept fraction follows the dataset's threshold, not a per-step top 40% (which would be 0.4 +- 1 token)
    assert any(abs(r["frac_kept"] - 0.4) > 1.0 / r["tokens"] for r in padded), [r["frac_kept"] for r in padded]
    w = _weights(runs["packed"])
    for name, v in _weights(runs["padded"]).items():
        torch.testing.assert_close(w[name], v, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def test_a_resume_uses_the_recorded_threshold(tmp_path, tiny_model_dir, other_model_dir):
    """A run stopped after 2 of 4 steps resumes with the threshold its config.yaml holds, not one computed again: with
    a recorded threshold below every score (planted here) every token of the resumed steps is important."""
    data = _data(tmp_path)
    run = _train(tmp_path, tiny_model_dir, data, "--objective", "sft-go", "--group_scope", "dataset", "--scorer",
                 "influence", "--percentile", "60", "--ref_model_name_or_path", other_model_dir, "--max_steps", "4",
                 "--per_device_train_batch_size", "2", "--save_steps", "2", "--stop_after_steps", "2")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    first = _records(run)
    assert len(first) == 2 and all(0.0 < r["frac_important"] < 1.0 for r in first)
    (run / "config.yaml").write_text(yaml.safe_dump({**saved, "group_threshold": -1e9}, sort_keys=False))
    assert main(["train", "--output_dir", str(run), "--resume_from_checkpoint", "last"]) == 0
    resumed = _records(run)[2:]
    assert [r["step"] for r in resumed] == [3, 4]
    assert all(r["frac_important"] == 1.0 for r in resumed)
    rec = json.loads((run / "summary.json").read_text())["group_threshold"]
    assert rec["threshold"] == -1e9 and rec["source"] == "recorded in the run's config.yaml"
