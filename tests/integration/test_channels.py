"""Per-channel losses (``loss/<channel>``, ``eval_loss/<channel>``, ``sftgo eval --heldout``'s ``loss_by_channel``)
against a direct computation from full logits, on packed rows with gradient accumulation. (The same losses for every
objective whether a step runs as 1 process x micro-batch 4, accumulation 4 or 2 processes: test_invariance.py, whose
examples carry channels.)"""

from __future__ import annotations

import json

import pytest
import torch

from sftgo.cli import main
from sftgo.data import load_examples, tokenize_examples

TOPICS = {"math": ["Add two and three.", "Five.", "What is six times seven?", "Forty-two, the product."],
          "code": ["Write a loop in Python.", "for i in range(3): print(i)", "What does len do?", "It counts items."],
          "chat": ["Hi there!", "Hello, how can I help you today?", "Thanks.", "You are welcome."]}


def _example(i, channel, weight=None, loss_weights=(None, None)):
    q1, a1, q2, a2 = TOPICS[channel]
    msgs = [{"role": "user", "content": f"{q1} ({i})"}, {"role": "assistant", "content": f"{a1} Case {i}."},
            {"role": "user", "content": q2}, {"role": "assistant", "content": f"{a2} {'ok ' * (i % 3)}"}]
    for j, lw in zip((1, 3), loss_weights):
        if lw is not None:
            msgs[j]["loss_weight"] = lw
    rec = {"messages": msgs, "channel": channel}
    if weight is not None:
        rec["weight"] = weight
    return rec


TRAIN = [_example(0, "math", 2.0), _example(1, "code", loss_weights=(0, 1.5)), _example(2, "math"),
         _example(3, "chat", 0.5), _example(4, "math", 1.0, (3.0, None)), _example(5, "code"),
         _example(6, "math", 0.25), _example(7, "code", 4.0)]
HELDOUT = [_example(10, "math", 2.0), {k: v for k, v in _example(11, "chat").items() if k != "channel"},
           _example(12, "code"), _example(13, "code", 0.5)]
HELDOUT[2]["channel"] = "poetry"  # a channel the training data does not have


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _direct_channel_losses(model_dir, data_file) -> dict[str, float]:
    """sum w * CE / sum w per channel over every supervised token, from the model's full logits (nothing from sftgo's
    loss code; tokens, labels and weights from sftgo.data, which tests/unit/test_data_weights.py checks); key None:
    the same over all channels."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    data = tokenize_examples(load_examples(data_file), tok, 128)
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for i, (ids, labels) in enumerate(zip(data.input_ids, data.labels)):
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            pos = [t for t in range(1, len(ids)) if labels[t] != -100]
            w = data.columns["loss_weight"][i].tolist() if "loss_weight" in data.columns else [1.0] * len(pos)
            s = sums.setdefault(data.channels[i], [0.0, 0.0])
            for t, wt in zip(pos, w):
                s[0] -= wt * logp[t - 1, labels[t]].item()
                s[1] += wt
    out = {c: a / b for c, (a, b) in sums.items()}
    out[None] = sum(a for a, _ in sums.values()) / sum(b for _, b in sums.values())
    return out


def _train(tmp_path, model_dir, name, *extra):
    out = tmp_path / name
    assert main(["train", "--model_name_or_path", model_dir, "--dataset", str(tmp_path / "train.jsonl"),
                 "--output_dir", str(out), "--max_length", "128", "--save_steps", "100", "--disable_tqdm", "true",
                 "--score_cache_dir", str(tmp_path / "cache"), *extra]) == 0
    return out, [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def test_channel_losses_equal_a_direct_computation(tmp_path, tiny_model_dir):
    pytest.importorskip("tensorboard")
    from sftgo.evaluation.heldout import heldout_config, heldout_losses
    from sftgo.models import load_model, load_tokenizer
    from tests.integration.test_tracking import _scalars

    train, heldout = _write(tmp_path / "train.jsonl", TRAIN), _write(tmp_path / "heldout.jsonl", HELDOUT)
    # learning rate 0: the model stays the initial one, so one logging window over the whole epoch (2 steps of 2
    # micro-batches of 2 packed examples) must give each channel's loss over all its tokens under that model.
    out, recs = _train(tmp_path, tiny_model_dir, "run", "--learning_rate", "0", "--max_steps", "2",
                       "--logging_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps",
                       "2", "--packing", "true", "--eval_dataset", heldout, "--eval_steps", "2",
                       "--report_to", "tensorboard")
    want = _direct_channel_losses(tiny_model_dir, train)
    log = next(r for r in recs if "loss" in r)
    assert log["loss_ce"] == pytest.approx(want.pop(None), rel=1e-5)  # the weighted CE over all channels
    assert sorted(want) == ["chat", "code", "math"]
    assert {k[5:]: v for k, v in log.items() if k.startswith("loss/")} == pytest.approx(want, rel=1e-5)
    assert {k.split("/")[1] for k in log if k.startswith("loss_important/")} == set(want)  # sft-go: groups too
    # held-out: the same channels by name, plus the one only it has and 'default' (an example without a channel)
    want_eval = _direct_channel_losses(tiny_model_dir, heldout)
    ev = next(r for r in recs if "eval_loss" in r)
    assert ev["eval_loss_ce"] == pytest.approx(want_eval.pop(None), rel=1e-5)
    assert sorted(want_eval) == ["code", "default", "math", "poetry"]
    assert {k[10:]: v for k, v in ev.items() if k.startswith("eval_loss/")} == pytest.approx(want_eval, rel=1e-5)
    # trackers receive them as metrics.jsonl does
    tb = _scalars(out)
    for c, v in want.items():
        assert tb[f"train/loss/{c}"][2] == pytest.approx(v, rel=1e-5)
    assert (out / "loss_channels.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["channels"] == ["math", "code", "chat", "default", "poetry"] and summary["weighted"]
    # sftgo eval --heldout (in process): the same per-channel numbers
    import yaml

    cfg = heldout_config(yaml.safe_load((out / "config.yaml").read_text()))
    res = heldout_losses(load_model(str(out / "final")), load_tokenizer(str(out / "final")), heldout, cfg)
    assert res["loss_by_channel"] == pytest.approx(want_eval, rel=1e-5)
