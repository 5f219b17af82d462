"""sftgo inside TRL 1.16 (issue 19): SFTGoSFTTrainer against trl.SFTTrainer itself, the optimizer-step invariance of
its group statistics (1 process x micro-batch 4, 1 process x accumulation 4, 2 torchrun processes x micro-batch 2),
token columns that stay aligned through TRL's truncation, packing, padding-free batches and collator, and
sftgo.objectives.compute_loss_func inside trl.SFTTrainer against the official InfoSFT loss written here from its
published formula. Tiny model from config, distinct examples, fp32 on CPU; per-step losses and final weights within
1e-5."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

import datasets  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from sftgo.config import ConfigError  # noqa: E402
from sftgo.integrations.trl import SFTGoSFTConfig, SFTGoSFTTrainer  # noqa: E402
from sftgo.objectives import compute_loss_func  # noqa: E402
from sftgo.tokens import TokenBatch  # noqa: E402
from tests.conftest import build_tiny_model  # noqa: E402
from tests.integration.test_invariance import _free_port, distinct_examples  # noqa: E402
from tests.integration.trl_worker import common_args, conversational, run  # noqa: E402

WORKER = Path(__file__).with_name("trl_worker.py")


@pytest.fixture(scope="module")
def data():
    return datasets.Dataset.from_list(conversational(distinct_examples(12)))


def plain_text(ds):
    """The same rows as TRL's non-conversational prompt-completion format (strings)."""
    return datasets.Dataset.from_list([{"prompt": r["prompt"][0]["content"] + "\n", "completion": r["completion"][0]["content"]}
                                       for r in ds])


def train(trainer_cls, config_cls, tok, ds, out, **kw):
    extra = {k: kw.pop(k) for k in ("compute_loss_func", "eval_dataset") if k in kw}
    trainer = trainer_cls(build_tiny_model(len(tok), seed=0), args=config_cls(**common_args(out, **kw)),
                          train_dataset=ds, processing_class=tok, **extra)
    trainer.train()
    steps = [r for r in trainer.state.log_history if "loss" in r]
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return trainer, steps, weights


def assert_same_run(a, b, keys=("loss", "grad_norm")):
    (_, sa, wa), (_, sb, wb) = a, b
    assert len(sa) == len(sb) == 3
    for x, y in zip(sa, sb):
        for k in keys:
            assert y[k] == pytest.approx(x[k], abs=1e-5, rel=1e-5), (x["step"], k, x[k], y[k])
    for name, w in wa.items():
        assert torch.allclose(wb[name], w, atol=1e-5, rtol=0), (name, (wb[name] - w).abs().max())


def moved(weights, tok):
    init = build_tiny_model(len(tok), seed=0).state_dict()
    return max((weights[k] - v).abs().max().item() for k, v in init.items())


# ----------------------------------------------------------------------------------------------- against TRL itself


@pytest.mark.parametrize("objective,loss_type,fmt,packing", [
    ("sft", "nll", "conversational", False),
    ("dft", "dft", "text", True),  # packed: bfd, so TRL's padding-free batches
])
def test_objective_equals_trl_loss_type(tmp_path, chat_tokenizer, data, objective, loss_type, fmt, packing):
    ds = data if fmt == "conversational" else plain_text(data)
    # micro-batch 2 x accumulation 2: the step's normalization (one token count over both micro-batches) matters
    kw = dict(train_sampling_strategy="sequential", packing=packing, per_device_train_batch_size=2,
              gradient_accumulation_steps=2)
    theirs = train(SFTTrainer, SFTConfig, chat_tokenizer, ds, tmp_path / "trl", loss_type=loss_type, **kw)
    mine = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, ds, tmp_path / "sftgo", objective=objective,
                 scorer="", **kw)
    assert_same_run(theirs, mine)
    assert moved(mine[2], chat_tokenizer) > 1e-4  # the weights did change, so equal weights mean something


def test_sft_go_lam0_is_sft_and_lam09_logs_groups(tmp_path, chat_tokenizer, data):
    kw = dict(score_cache_dir=str(tmp_path / "cache"), scorer="tfidf")
    sft = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "sft", objective="sft", **kw)
    lam0 = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "lam0", objective="sft-go", lam=0.0, **kw)
    assert_same_run(sft, lam0)
    trainer, steps, _ = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "lam9",
                              objective="sft-go", lam=0.9, eval_dataset=data.select(range(4)), eval_strategy="steps",
                              eval_steps=3, **kw)
    for r in steps:
        assert 0 < r["loss_important"] < 20 and 0 < r["loss_unimportant"] < 20 and r["lam"] == 0.9, r
        # the step's loss is (1 - lam) CE + lam * the worse group's mean
        worst = max(r["loss_important"], r["loss_unimportant"])
        assert r["loss"] == pytest.approx(0.1 * r["loss_ce"] + 0.9 * worst, rel=1e-4)
    assert steps[0]["loss"] != pytest.approx(sft[1][0]["loss"], abs=1e-3)
    ev = [r for r in trainer.state.log_history if "eval_loss" in r]
    assert ev and "eval_loss_important" in ev[0] and "eval_loss_worst" in ev[0]


INVARIANCE = {
    "sft-go": {"objective": "sft-go", "lam": 0.9, "scorer": "tfidf"},
    "rho1": {"objective": "rho1", "percentile": 40, "scorer": "reference", "ref_model_name_or_path": "initial"},
}


@pytest.mark.parametrize("name", list(INVARIANCE))
def test_step_statistics_however_split(tmp_path, chat_tokenizer, name):
    """(1 process, micro-batch 4), (1 process, micro-batch 1, accumulation 4) and (2 torchrun processes, micro-batch 2):
    the same global batch per step (sftgo's step-order sampler), group statistics over the whole step."""
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in distinct_examples(12)))
    settings = {**INVARIANCE[name], "score_cache_dir": str(tmp_path / "cache"), "group_stats": "exact"}
    outs = {k: tmp_path / k for k in ("micro4", "accum4", "ddp2")}
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.Popen([str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), str(WORKER),
                             str(outs["ddp2"]), str(path), "2", "1", json.dumps(settings)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run(outs["micro4"], path, 4, 1, settings)
        run(outs["accum4"], path, 1, 4, settings)
    finally:
        log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    from safetensors.torch import load_file

    logs = {k: [r for r in json.loads((o / "log.json").read_text()) if "loss" in r] for k, o in outs.items()}
    weights = {k: load_file(str(o / "final" / "model.safetensors")) for k, o in outs.items()}
    keys = ("loss", "loss_ce", "loss_important", "loss_unimportant", "tokens", "frac_kept")
    assert len(logs["micro4"]) == 3
    for k in ("accum4", "ddp2"):
        assert len(logs[k]) == 3
        for a, b in zip(logs["micro4"], logs[k]):
            for key in keys:
                if key in a:
                    assert b[key] == pytest.approx(a[key], abs=1e-5), (k, a["step"], key)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), (k, a["step"])
        for p, w in weights["micro4"].items():
            assert torch.allclose(weights[k][p], w, atol=1e-5, rtol=0), (k, p, (weights[k][p] - w).abs().max())
    assert moved(weights["micro4"], chat_tokenizer) > 1e-4


# ----------------------------------------------------------------------------------------------- token columns


def position_scorer(token_ids, **_):
    """A scorer whose value names its token: id + (index among the sequence's supervised tokens) / 1000."""
    import numpy as np

    return [np.asarray([t + j / 1000 for j, t in enumerate(ids)], dtype=np.float64) for ids in token_ids]


@pytest.mark.parametrize("layout", ["padded-truncated", "packed"])
def test_columns_stay_aligned_with_their_tokens(tmp_path, chat_tokenizer, data, layout):
    """Every supervised token of every collated batch carries its own importance and reference log p, through TRL's
    truncation (max_length 20 cuts most completions), packing (bfd: several sequences per row) and padding-free rows."""
    kw = dict(max_length=20) if layout == "padded-truncated" else dict(packing=True, max_length=100)
    args = SFTGoSFTConfig(**common_args(tmp_path, objective="rho1", scorer="tests.integration.test_trl:position_scorer",
                                        ref_model_name_or_path="initial", per_device_train_batch_size=3, **kw))
    ds = datasets.Dataset.from_list([{"messages": r["prompt"] + r["completion"]} for r in data])  # conversational LM
    trainer = SFTGoSFTTrainer(build_tiny_model(len(chat_tokenizer), seed=0), args=args, train_dataset=ds,
                              processing_class=chat_tokenizer)
    if layout == "packed":
        assert max(len(s) for s in trainer.train_dataset["seq_lengths"]) > 1  # rows do hold several sequences
    else:
        assert max(len(x) for x in trainer.train_dataset["input_ids"]) == 20
    model = trainer.model.eval()
    n = 0
    for batch in trainer.get_train_dataloader():
        assert ("position_ids" in batch) == (layout == "packed")
        tokens = TokenBatch.from_inputs(batch)
        imp = tokens.columns["importance"]
        j = torch.zeros_like(tokens.example)
        for e in tokens.example.unique():
            sel = tokens.example == e
            j[sel] = torch.arange(int(sel.sum()))
        expected = tokens.targets.double() + j.double() / 1000
        assert torch.allclose(imp.double(), expected, atol=1e-4), (imp[:8], expected[:8])
        with torch.no_grad():  # the reference is the initial model: its log p on the collated batch, packed or not
            lp = trainer.head.logp(model, tokens.select(trainer.head.features(model, batch)), tokens.targets)
        assert torch.allclose(tokens.columns["ref_logp"], lp, atol=1e-5), (tokens.columns["ref_logp"] - lp).abs().max()
        n += len(tokens)
    assert n > 100


# ----------------------------------------------------------------------------------------------- compute_loss_func


def official_infosft(outputs, labels, num_items_in_batch=None, P=0.93):
    """InfoSFT's loss as published: w = sg(p) * relu(1 - sg(log(p / (1 - p))) / C), C = log(P / (1 - P)), loss =
    sum(w * -log p) / num_items (transformers' causal shift: logits at t predict labels[t + 1])."""
    logits, labels = outputs.logits[:, :-1].float(), labels[:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    p = logp.detach().exp()
    w = p * torch.relu(1 - torch.log(p / (1 - p)) / math.log(P / (1 - P)))
    n = num_items_in_batch if num_items_in_batch is not None else mask.sum()
    return -(w * logp * mask).sum() / n


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TRL 1.16 deprecates compute_loss_func (removed in 2.0)
def test_compute_loss_func_infosft_equals_official_in_trl(tmp_path, chat_tokenizer, data):
    kw = dict(train_sampling_strategy="sequential", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    official = train(SFTTrainer, SFTConfig, chat_tokenizer, data, tmp_path / "official",
                     compute_loss_func=official_infosft, **kw)
    mine = train(SFTTrainer, SFTConfig, chat_tokenizer, data, tmp_path / "sftgo",
                 compute_loss_func=compute_loss_func("infosft"), **kw)
    assert_same_run(official, mine)
    assert moved(mine[2], chat_tokenizer) > 1e-4


# ----------------------------------------------------------------------------------------------- errors


def test_clear_errors(tmp_path, chat_tokenizer, data):
    with pytest.raises(ConfigError, match="loss_type"):
        SFTGoSFTConfig(**common_args(tmp_path, loss_type="dft"))
    with pytest.raises(ConfigError, match="objective"):
        SFTGoSFTConfig(**common_args(tmp_path, objective="sftgo"))
    with pytest.raises(ConfigError, match="ref_model_name_or_path"):
        SFTGoSFTConfig(**common_args(tmp_path, objective="rho1"))
    model = build_tiny_model(len(chat_tokenizer), seed=0)
    with pytest.raises(ConfigError, match="SFTGoSFTConfig"):
        SFTGoSFTTrainer(model, args=SFTConfig(**common_args(tmp_path)), train_dataset=data, processing_class=chat_tokenizer)
    with pytest.raises(ConfigError, match="compute_loss_func"):
        SFTGoSFTTrainer(model, args=SFTGoSFTConfig(**common_args(tmp_path)), train_dataset=data,
                        processing_class=chat_tokenizer, compute_loss_func=compute_loss_func("sft"))
