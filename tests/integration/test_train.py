"""`sftgo train` end to end on a tiny model built from config (offline, seconds per run)."""

import json
import math
from pathlib import Path

import pytest
import torch

from sftgo.cli import main
from sftgo.data import load_examples, tokenize_examples
from sftgo.objectives import OBJECTIVES


def _train(tmp_path, model_dir, data, *extra, name="run"):
    out = tmp_path / name
    rc = main(["train", "--model_name_or_path", model_dir, "--dataset", data, "--output_dir", str(out),
               "--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
               "--max_length", "64", "--save_steps", "100", "--score_cache_dir", str(tmp_path / "cache"),
               "--disable_tqdm", "true", *extra])
    assert rc == 0
    return out


def _records(out):
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def _independent_mean_ce(model_dir, data_file):
    """Mean token cross-entropy over response tokens, from full logits, with nothing from sftgo's loss code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    data = tokenize_examples(load_examples(data_file), tok, 64)
    total, n = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(data.input_ids, data.labels):
            logits = model(torch.tensor([ids])).logits[0]
            for t in range(1, len(ids)):
                if labels[t] != -100:
                    total -= torch.log_softmax(logits[t - 1].double(), -1)[labels[t]].item()
                    n += 1
    return total / n


def test_sft_first_loss_is_mean_response_ce(tmp_path, tiny_model_dir, alpaca_file):
    # 4 examples, batch 4: the first step sees every example, so its loss is the dataset's mean response CE.
    out = _train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "sft")
    first = _records(out)[0]
    expected = _independent_mean_ce(tiny_model_dir, alpaca_file)
    assert first["loss"] == pytest.approx(expected, rel=1e-4)
    assert first["loss_ce"] == pytest.approx(expected, rel=1e-4)


def test_sft_go_lam0_equals_sft(tmp_path, tiny_model_dir, alpaca_file):
    a = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "sft", name="a"))
    b = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "sft-go", "--lam", "0", name="b"))
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=1e-5)
    assert b[1]["loss"] == pytest.approx(a[1]["loss"], rel=1e-4)  # same update, same second loss


def test_sft_go_loss_matches_eq4_from_logged_groups(tmp_path, tiny_model_dir, alpaca_file):
    r = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "sft-go", "--lam", "0.9"))[0]
    expected = 0.1 * r["loss_ce"] + 0.9 * max(r["loss_important"], r["loss_unimportant"])
    assert r["loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("head", ["fused", "chunked", "naive"])
def test_token_heads_agree(tmp_path, tiny_model_dir, alpaca_file, head):
    ref = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--token_head", "naive", name="ref"))
    got = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--token_head", head, name=head))
    for a, b in zip(ref, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)


def test_run_directory_artifacts(tmp_path, tiny_model_dir, alpaca_file):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftgo.config import load_yaml

    out = _train(tmp_path, tiny_model_dir, alpaca_file, "--lam", "0.9", "--lam_min", "0.1")
    recs = _records(out)
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        for k in ("step", "loss", "loss_ce", "loss_important", "loss_unimportant", "lam", "learning_rate"):
            assert k in r and r[k] is not None and math.isfinite(r[k]), k
    # Eq. 5: lam = max(0.9 * (1 - t / 2), 0.1) at optimizer steps t = 0, 1.
    assert recs[0]["lam"] == pytest.approx(0.9) and recs[1]["lam"] == pytest.approx(0.45)
    assert (out / "loss_groups.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["supervised_tokens"] > 0 and summary["final"]["loss_important"] is not None
    cfg = load_yaml(out / "config.yaml")
    assert cfg["lam_min"] == 0.1 and cfg["objective"] == "sft-go"
    AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")


def test_config_yaml_roundtrip_and_override(tmp_path, tiny_model_dir, alpaca_file):
    out = _train(tmp_path, tiny_model_dir, alpaca_file, name="first")
    # Re-run from the saved config.yaml with a flag overriding one value.
    rc = main(["train", str(out / "config.yaml"), "--output_dir", str(tmp_path / "second"), "--lam", "0.5"])
    assert rc == 0
    recs = _records(tmp_path / "second")
    assert recs[0]["lam"] == 0.5 and len(recs) == 2


@pytest.mark.parametrize("objective", ["sft-go", "sft-go-dro"])
def test_resume_appends_without_duplicates(tmp_path, tiny_model_dir, alpaca_file, objective):
    import shutil

    extra = ["--objective", objective, "--dro_eta", "0.5"]
    full = _train(tmp_path, tiny_model_dir, alpaca_file, "--max_steps", "4", "--save_steps", "2", "--lam_min", "0",
                  *extra, "--keep_checkpoints", "all", name="full")
    # Simulate an interruption after step 3: the last checkpoint is step 2, metrics already hold step 3.
    run = tmp_path / "resumed"
    shutil.copytree(full, run)
    shutil.rmtree(run / "checkpoint-4")
    shutil.rmtree(run / "final")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n")
    _train(tmp_path, tiny_model_dir, alpaca_file, "--max_steps", "4", "--save_steps", "2", "--lam_min", "0",
           *extra, "--resume_from_checkpoint", "last", name="resumed")
    a, b = _records(full), _records(run)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):  # same data order, RNG and lambda position after the resume
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)
        assert y["lam"] == pytest.approx(x["lam"])
        if objective == "sft-go-dro":  # Group-DRO weights are restored from the checkpoint, not restarted uniform
            assert y["dro_q0"] == pytest.approx(x["dro_q0"], rel=1e-6) and y["dro_q0"] != 0.5


@pytest.mark.parametrize("objective,extra", [
    ("rho1", ["--keep_ratio", "0.5", "--ref_model_name_or_path", "initial"]),
    ("dft", []),
    ("infosft", []),
    ("eaft", ["--eaft_k", "5", "--eaft_alpha", "2"]),
    ("target-sft", ["--target_gamma", "0.8", "--target_residual", "uniform"]),
    ("target-sft", ["--target_gamma", "p", "--target_residual", "model"]),
    ("target-sft", ["--target_residual", "topk", "--target_topk", "5"]),
    ("target-sft", ["--target_residual", "reference"]),
    ("sft-go", ["--num_groups", "3"]),
    ("sft-go-dro", ["--num_groups", "2"]),
    ("sft-go", ["--scorer", "reference", "--ref_model_name_or_path", "initial"]),
    ("sft-go", ["--scorer", "frequency", "--group_scope", "batch"]),
    ("sft-go", ["--scorer", "random"]),
    ("sft-go", ["--token_weight", "eaft", "--group_stats", "exact", "--gradient_accumulation_steps", "2"]),
    ("sft", ["--token_weight", "power", "--power_alpha", "2", "--power_window", "bottom", "--power_q", "0.9"]),
])
def test_every_objective_and_scorer_trains(tmp_path, tiny_model_dir, alpaca_file, objective, extra):
    recs = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--objective", objective, *extra))
    assert len(recs) == 2
    for r in recs:
        assert math.isfinite(r["loss"]) and math.isfinite(r["loss_ce"])
    if objective == "rho1":  # the logged group is the kept set: keep_ratio of the batch's tokens (rounded)
        assert recs[0]["frac_kept"] == pytest.approx(0.5, abs=1 / recs[0]["tokens"] + 1e-9)
    if OBJECTIVES[objective].token_weight is not None or "--token_weight" in extra:  # a shorthand (dft, infosft, ...)
        assert 0 < recs[0]["mean_weight"] < 1
    assert 0 < recs[0]["entropy"] and 0 <= recs[0]["token_accuracy"] <= 1


def test_user_scorer_module_function(tmp_path, tiny_model_dir, alpaca_file, monkeypatch):
    (tmp_path / "my_scorer.py").write_text(
        "import numpy as np\n"
        "def by_position(token_ids, **_):\n"
        "    return [np.arange(len(x), dtype=np.float32) for x in token_ids]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    recs = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--scorer", "my_scorer:by_position"))
    assert recs[0]["frac_important"] > 0


def test_user_token_weight_module_function(tmp_path, tiny_model_dir, alpaca_file, monkeypatch, capsys):
    """``--token_weight my_weight:dft`` (DFT written by the user) trains the same run as ``--token_weight dft``: the
    same logged losses, gradient norms and mean weights, the same final weights; config.yaml records the name. A
    function returning negative weights stops the run with one line naming it (exit 2)."""
    (tmp_path / "my_weight.py").write_text("def dft(logp):\n    return logp.exp()\n\n"
                                           "def negative(logp):\n    return logp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from safetensors.torch import load_file

    runs = [_train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "sft", "--token_weight", tw, name=name)
            for tw, name in (("dft", "builtin"), ("my_weight:dft", "user"))]
    a, b = (_records(out) for out in runs)
    assert [(r["loss"], r["grad_norm"], r["mean_weight"]) for r in a] == \
        [(r["loss"], r["grad_norm"], r["mean_weight"]) for r in b]
    wa, wb = (load_file(str(out / "final" / "model.safetensors")) for out in runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert "token_weight: my_weight:dft" in (runs[1] / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "--model_name_or_path", tiny_model_dir, "--dataset", alpaca_file, "--objective", "sft",
                 "--token_weight", "my_weight:negative", "--output_dir", str(tmp_path / "neg"), "--max_steps", "1",
                 "--disable_tqdm", "true"]) == 2
    err = capsys.readouterr().err
    assert "token_weight 'my_weight:negative' returned -" in err and "finite and >= 0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args,message", [
    (["--objective", "nope"], "sft, sft-go, rho1"),
    (["--token_weight", "no_such_module:f"], "token_weight 'no_such_module:f': cannot import module 'no_such_module'"),
    (["--scorer", "nope"], "tfidf"),
    (["--model_name_or_path", "/does/not/exist"], "does not exist"),
    (["--dataset", "/does/not/exist.jsonl"], "does not exist"),
    (["--lam", "2"], "lam"),
    (["--objective", "rho1"], "objective=rho1 needs a reference model trained on in-domain data. Make one with "
                              "`sftgo train --objective sft --dataset <in-domain data> --output_dir runs/ref`, then pass "
                              "`--ref_model_name_or_path runs/ref/final`"),
    (["--scorer", "reference"], "scorer=reference needs a reference model"),
])
def test_user_mistakes_give_clear_errors(tmp_path, tiny_model_dir, alpaca_file, capsys, args, message):
    base = ["train", "--model_name_or_path", tiny_model_dir, "--dataset", alpaca_file,
            "--output_dir", str(tmp_path / "x"), "--max_steps", "1", "--disable_tqdm", "true",
            "--score_cache_dir", str(tmp_path / "cache")]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # a start that fails leaves nothing behind, not even the directory


def test_unknown_yaml_key_suggests(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learnig_rate: 0.1\n")
    assert main(["train", str(cfg)]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_llmlingua2_scorer_trains_with_a_local_token_classifier(tmp_path, tiny_model_dir, alpaca_file):
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    from tests.conftest import CORPUS

    words = sorted({w.strip(".,?:#").lower() for line in CORPUS for w in line.split()} - {""})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    enc = BertForTokenClassification(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=37, num_labels=2))
    enc_dir = tmp_path / "encoder"
    enc.save_pretrained(enc_dir)
    tok.save_pretrained(enc_dir)
    recs = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--scorer", "llmlingua2",
                           "--llmlingua2_model", str(enc_dir)))
    assert 0 < recs[0]["frac_important"] < 0.3 and math.isfinite(recs[0]["loss_important"])


def test_rho1_two_stage_reference(tmp_path, tiny_model_dir, alpaca_file, caplog, monkeypatch):
    """Stage 1 trains a reference with plain SFT; stage 2 runs Rho-1 against runs/ref/final. The reference log-probs
    are computed once (a rerun reads them from the cache) and again when the reference is retrained."""
    import logging

    import sftgo.scorers.reference as R

    calls = []
    real = R.reference_token_logp
    monkeypatch.setattr(R, "reference_token_logp", lambda *a, **k: calls.append(1) or real(*a, **k))
    ref = _train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "sft", "--max_steps", "3",
                 "--learning_rate", "1e-2", name="ref")
    args = ["--objective", "rho1", "--keep_ratio", "0.5", "--ref_model_name_or_path", str(ref / "final")]
    with caplog.at_level(logging.WARNING):
        trained = _records(_train(tmp_path, tiny_model_dir, alpaca_file, *args, name="rho1"))
    assert len(calls) == 1 and "initial model" not in caplog.text
    _train(tmp_path, tiny_model_dir, alpaca_file, *args, name="rho1_again")
    assert len(calls) == 1  # cached: computed once
    with caplog.at_level(logging.WARNING):
        initial = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "rho1", "--keep_ratio", "0.5",
                                  "--ref_model_name_or_path", "initial", name="rho1_initial"))
    assert len(calls) == 2 and "every excess loss starts at zero" in caplog.text
    # a trained reference selects other tokens than the initial model does (excess losses are not all zero)
    assert trained[0]["loss"] != pytest.approx(initial[0]["loss"], rel=1e-3)
    _train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "sft", "--max_steps", "1", "--learning_rate", "1e-2",
           name="ref")  # retrain the reference in place: new weights
    _train(tmp_path, tiny_model_dir, alpaca_file, *args, name="rho1_new_ref")
    assert len(calls) == 3


def test_resume_with_nothing_left_tolerates_a_torn_last_metrics_line(tmp_path, tiny_model_dir, alpaca_file):
    # A leg killed while appending to metrics.jsonl, then resumed from the last checkpoint with no step left to train:
    # nothing rewrites the file, and the summary must still be written from the records before the torn line.
    run = _train(tmp_path, tiny_model_dir, alpaca_file, "--save_steps", "2", "--keep_checkpoints", "all")
    (run / "summary.json").unlink()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 0.1')
    _train(tmp_path, tiny_model_dir, alpaca_file, "--save_steps", "2", "--resume_from_checkpoint", "last")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["final"]["loss"] == _records_before_torn(run)


def test_checkpoints_written_as_asked_and_kept_per_keep_checkpoints(tmp_path, tiny_model_dir, alpaca_file):
    """No checkpoint at the last step unless --save_steps (or --stop_after_steps) falls there or checkpoints are kept
    (--keep_checkpoints last|all: the last step's is the one to continue from); once the run is complete the default
    --keep_checkpoints none leaves only final/, last keeps the newest, all keeps every one; a run stopped early keeps its
    checkpoint to resume, and loses it when the resumed run completes."""
    def ckpts(run):
        return sorted(p.name for p in run.glob("checkpoint-*"))

    steps = ("--max_steps", "3", "--save_steps", "2")
    kept = _train(tmp_path, tiny_model_dir, alpaca_file, *steps, "--keep_checkpoints", "all", name="all")
    assert ckpts(kept) == ["checkpoint-2", "checkpoint-3"]  # step 3: the end, kept to continue from
    assert all((kept / c / "sftgo_complete.json").exists() for c in ckpts(kept))
    last = _train(tmp_path, tiny_model_dir, alpaca_file, *steps, "--keep_checkpoints", "last", name="last")
    assert ckpts(last) == ["checkpoint-3"]
    run = _train(tmp_path, tiny_model_dir, alpaca_file, *steps, name="default")
    assert ckpts(run) == [] and (run / "final" / "model.safetensors").exists()
    assert json.loads((run / "summary.json").read_text())["steps"] == 3
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no half-deleted leftovers
    stopped = _train(tmp_path, tiny_model_dir, alpaca_file, *steps, "--stop_after_steps", "1", name="stopped")
    assert json.loads((stopped / "summary.json").read_text())["stopped_early"] and ckpts(stopped) == ["checkpoint-1"]
    _train(tmp_path, tiny_model_dir, alpaca_file, *steps, "--stop_after_steps", "3", "--resume_from_checkpoint", "last",
           name="stopped")
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-1") and summary["steps"] == 3 and not summary["stopped_early"]
    assert ckpts(stopped) == []


def _records_before_torn(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()[:-1]][-1]["loss"]


def test_resume_with_only_incomplete_checkpoints_stops_and_names_them(tmp_path, tiny_model_dir, alpaca_file, capsys):
    run = _train(tmp_path, tiny_model_dir, alpaca_file, "--save_steps", "1", "--keep_checkpoints", "all")
    for d in run.glob("checkpoint-*"):
        (d / "sftgo_complete.json").unlink()  # as if killed while saving each of them
    before = (run / "metrics.jsonl").read_text()
    rc = main(["train", str(run / "config.yaml"), "--resume_from_checkpoint", "true"])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint-1, checkpoint-2" in err and "--resume_from_checkpoint false" in err
    assert (run / "metrics.jsonl").read_text() == before  # nothing truncated


def test_eval_dataset_from_a_dataset_dict_reads_its_validation_split(tmp_path, tiny_model_dir, alpaca_file):
    # A save_to_disk DatasetDict stands in for a Hub dataset (same split logic); Hub loading needs the network.
    import datasets
    from transformers import AutoTokenizer

    from tests.conftest import EXAMPLES

    d = str(tmp_path / "heldout")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(EXAMPLES),
                          "validation": datasets.Dataset.from_list(EXAMPLES[:1])}).save_to_disk(d)
    run = _train(tmp_path, tiny_model_dir, alpaca_file, "--eval_dataset", d, "--eval_steps", "2")
    evals = [r for r in _records(run) if "eval_tokens" in r]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    want = tokenize_examples(load_examples(d, split="validation"), tok, 64).num_supervised()
    assert evals and evals[-1]["eval_tokens"] == want < tokenize_examples(load_examples(d), tok, 64).num_supervised()
