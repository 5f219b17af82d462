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
import time
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


@pytest.fixture(scope="session")
def data():
    return datasets.Dataset.from_list(conversational(distinct_examples(12)))


def plain_text(ds):
    """The same rows as TRL's non-conversational prompt-completion format (strings)."""
    return datasets.Dataset.from_list([{"prompt": r["prompt"][0]["content"] + "\n", "completion": r["completion"][0]["content"]}
                                       for r in ds])


def train(trainer_cls, config_cls, tok, ds, out, **kw):
    extra = {k: kw.pop(k) for k in ("compute_loss_func", "eval_dataset", "peft_config") if k in kw}
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


def test_token_cleaning_threshold_is_cut_from_the_train_dataset(tmp_path, chat_tokenizer, data):
    """rho1 --group_scope dataset --scorer influence in TRL: the threshold is set once when the trainer is built, the
    k-th highest influence over every supervised token of the prepared train_dataset (its importance column)."""
    import numpy as np

    ref = tmp_path / "ref"
    build_tiny_model(len(chat_tokenizer), seed=1).save_pretrained(ref)
    chat_tokenizer.save_pretrained(ref)
    trainer, steps, _ = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "tc", objective="rho1",
                              group_scope="dataset", scorer="influence", percentile=40.0, ref_model_name_or_path=str(ref),
                              score_cache_dir=str(tmp_path / "cache"))
    ds = trainer.train_dataset
    scores = np.concatenate([np.asarray(imp)[np.flatnonzero(np.asarray(lab) != -100)]
                             for imp, lab in zip(ds["importance"], ds["labels"])]).astype(np.float64)
    k = int(np.floor(0.6 * scores.size + 0.5))
    assert trainer.args.group_threshold == np.sort(scores)[::-1][k - 1]
    assert steps and all(math.isfinite(r["loss"]) and 0.0 <= r["frac_kept"] <= 1.0 for r in steps)


@pytest.mark.parametrize("objective,loss_type,fmt,packing,lora", [
    ("sft", "nll", "conversational", False, False),
    ("dft", "dft", "text", True, False),  # packed: bfd, so TRL's padding-free batches
    ("sft", "nll", "conversational", False, True),  # TRL's PEFT (peft_config): LoRA on q_proj / v_proj
])
def test_objective_equals_trl_loss_type(tmp_path, chat_tokenizer, data, objective, loss_type, fmt, packing, lora):
    ds = data if fmt == "conversational" else plain_text(data)
    # micro-batch 2 x accumulation 2: the step's normalization (one token count over both micro-batches) matters
    kw = dict(train_sampling_strategy="sequential", packing=packing, per_device_train_batch_size=2,
              gradient_accumulation_steps=2)
    if lora:
        from peft import LoraConfig

        kw["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    theirs = train(SFTTrainer, SFTConfig, chat_tokenizer, ds, tmp_path / "trl", loss_type=loss_type, **kw)
    mine = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, ds, tmp_path / "sftgo", objective=objective,
                 scorer="", **kw)
    assert_same_run(theirs, mine)
    if lora:  # the adapters trained (lora_B starts at zero), identically in both
        assert max(w.abs().max().item() for k, w in mine[2].items() if "lora_B" in k) > 1e-4
    else:
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


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Each INVARIANCE setting's 2-process run (torchrun, micro-batch 2), one after the other in one torchrun job
    started here; yields a function that waits for one (``<out>.done``) and returns its folder."""
    d = tmp_path_factory.mktemp("trl_ddp")
    path = d / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in distinct_examples(12)))
    jobs = [[str(d / name), str(path), 2, 1, {**s, "score_cache_dir": str(d / "cache"), "group_stats": "exact"}]
            for name, s in INVARIANCE.items()]
    (d / "jobs.json").write_text(json.dumps(jobs))
    log = d / "jobs.log"
    torchrun = Path(sys.executable).parent / "torchrun"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                                 str(WORKER), str(d / "jobs.json")], stdout=f, stderr=subprocess.STDOUT)

    def wait(name, timeout=600):
        t_end = time.time() + timeout
        while not (d / f"{name}.done").exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < t_end, f"{name}: not done in {timeout} s; " + log.read_text()[-3000:]
            time.sleep(0.2)
        return d / name

    yield wait
    if proc.poll() is None:  # a test failed before the job ended
        proc.kill()
    proc.wait()


@pytest.mark.serial
@pytest.mark.parametrize("name", list(INVARIANCE))
def test_step_statistics_however_split(tmp_path, chat_tokenizer, ddp_runs, name):
    """(1 process, micro-batch 4), (1 process, micro-batch 1, accumulation 4) and (2 torchrun processes, micro-batch 2):
    the same global batch per step (sftgo's step-order sampler), group statistics over the whole step."""
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in distinct_examples(12)))
    settings = {**INVARIANCE[name], "score_cache_dir": str(tmp_path / "cache"), "group_stats": "exact"}
    outs = {k: tmp_path / k for k in ("micro4", "accum4")}
    run(outs["micro4"], path, 4, 1, settings)  # in-process while the 2-process runs go
    run(outs["accum4"], path, 1, 4, settings)
    outs["ddp2"] = ddp_runs(name)
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
    """Every supervised token of every collated batch carries its own importance, reference log p and lower mass
    (PriFT's, with --token_weight prift_mass), through TRL's truncation (max_length 20 cuts most completions), packing
    (bfd: several sequences per row) and padding-free rows."""
    kw = dict(max_length=20) if layout == "padded-truncated" else dict(packing=True, max_length=100)
    args = SFTGoSFTConfig(**common_args(tmp_path, objective="rho1", scorer="tests.integration.test_trl:position_scorer",
                                        ref_model_name_or_path="initial", per_device_train_batch_size=3,
                                        token_weight="prift_mass", **kw))
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
            lp, low = trainer.head.logp_lower_mass(model, tokens.select(trainer.head.features(model, batch)),
                                                   tokens.targets)
        assert torch.allclose(tokens.columns["ref_logp"], lp, atol=1e-5), (tokens.columns["ref_logp"] - lp).abs().max()
        assert torch.allclose(tokens.columns["ref_lower_mass"], low, atol=1e-5)
        n += len(tokens)
    assert n > 100


def test_prift_trains_with_the_cached_reference_columns(tmp_path, chat_tokenizer, data):
    """token_weight prift_mass with a reference folder (the cached reference pass): the reference is the initial model
    saved, so step 1's loss is sum_n t_n (-log p_ref) / K with t_n = 1[lower_n + p_ref >= tau], read off the columns
    TRL's prepared dataset got, and the logged mean_weight is the mean t_n."""
    ref = tmp_path / "ref"
    build_tiny_model(len(chat_tokenizer), seed=0).save_pretrained(ref)  # train() starts from these weights
    chat_tokenizer.save_pretrained(ref)
    trainer, steps, _ = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "run", objective="sft",
                              token_weight="prift_mass", prift_threshold=0.4, ref_model_name_or_path=str(ref),
                              per_device_train_batch_size=12, max_steps=1, score_cache_dir=str(tmp_path / "cache"))
    ds = trainer.train_dataset
    lp, low = [], []
    for labels, a, b in zip(ds["labels"], ds["ref_logp"], ds["ref_lower_mass"]):
        sup = [j for j in range(1, len(labels)) if labels[j] != -100]
        lp += [a[j] for j in sup]
        low += [b[j] for j in sup]
    lp, low = torch.tensor(lp), torch.tensor(low)
    t = ((low + lp.exp()) >= 0.4).float()
    assert 0.0 < float(t.mean()) < 1.0
    assert steps[0]["loss"] == pytest.approx(float((t * -lp).sum() / len(t)), rel=1e-4)
    assert steps[0]["mean_weight"] == pytest.approx(float(t.mean()), rel=1e-5)
    entries = [json.loads(f.read_text())["key"]["scorer"] for f in (tmp_path / "cache").rglob("*.json")]
    assert sorted(e for e in entries if e.startswith("reference")) == ["reference", "reference_lower_mass"]


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


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TRL 1.16 deprecates compute_loss_func (removed in 2.0)
def test_power_weighting_in_sftgo_trainer_equals_compute_loss_func_in_trl(tmp_path, chat_tokenizer, data):
    """``--token_weight power`` (Beyond Log Likelihood, alpha 0.5) through SFTGoSFTTrainer (the fused head) and through
    ``compute_loss_func("sft", token_weight="power", ...)`` in trl.SFTTrainer (the model's logits): the same run, logged
    loss (the mean f(p) = (1 - p^0.5) / 0.5, below plain SFT's CE) and weights; the mean weight p^0.5 is logged."""
    kw = dict(train_sampling_strategy="sequential", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    settings = dict(token_weight="power", power_alpha=0.5)
    theirs = train(SFTTrainer, SFTConfig, chat_tokenizer, data, tmp_path / "trl",
                   compute_loss_func=compute_loss_func("sft", **settings), **kw)
    mine = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "sftgo", objective="sft", scorer="",
                 **settings, **kw)
    assert_same_run(theirs, mine)
    for r in mine[1]:  # f(p) = 2 (1 - sqrt(p)) < 2 while CE ~ log V; the logged weight is a mean sqrt(p) in (0, 1)
        assert 0 < r["loss"] < 2 < r["loss_ce"] and 0 < r["mean_weight"] < 1, r
    assert moved(mine[2], chat_tokenizer) > 1e-4


# ----------------------------------------------------------------------------------------------- errors


def test_user_token_weight(tmp_path, chat_tokenizer, data):
    """``token_weight="module:function"`` in SFTGoSFTTrainer: a user DFT is the built-in ``dft`` run (losses, gradient
    norms, mean weights, final weights); a function reading the reference's log p, the entropy and the top-k logits
    trains ``sft-go`` (the trainer computes the ref_logp column it declares)."""
    kw = dict(objective="sft", scorer="")
    builtin = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "a", token_weight="dft", **kw)
    user = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "b",
                 token_weight="tests.user_weights:dft", **kw)
    assert_same_run(builtin, user, keys=("loss", "grad_norm", "mean_weight"))
    _, steps, weights = train(SFTGoSFTTrainer, SFTGoSFTConfig, chat_tokenizer, data, tmp_path / "c", objective="sft-go",
                              lam=0.9, score_cache_dir=str(tmp_path / "cache"), token_weight="tests.user_weights:mixed",
                              ref_model_name_or_path="initial")
    assert len(steps) == 3 and all(math.isfinite(r["loss"]) and r["mean_weight"] > 0 for r in steps)
    assert moved(weights, chat_tokenizer) > 1e-4


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


# ----------------------------------------------------------------------------------------------- state, precision, eval


def test_resume_restores_the_objective_state(tmp_path, chat_tokenizer, data, monkeypatch):
    """sft-go-dro with accumulation 2, stopped after 2 of 4 steps and resumed, ends where the straight run ends:
    Group-DRO's q (logged as dro_q*) and the weights (q saved in the checkpoint and restored by train()). Each
    checkpoint is marked complete only once sftgo's state and counters are in it, as in `sftgo train`."""
    from types import SimpleNamespace

    from sftgo.checkpoints import CompleteCheckpointCallback
    from sftgo.pipeline import StopAfterSteps
    from sftgo.trainer import COUNTERS_FILE, STATE_FILE

    found_when_marked = []
    mark = CompleteCheckpointCallback.on_save

    def spy(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        found_when_marked.append(sorted(f for f in (COUNTERS_FILE, STATE_FILE) if (ckpt / f).is_file()))
        return mark(self, args, state, control, **kwargs)

    monkeypatch.setattr(CompleteCheckpointCallback, "on_save", spy)

    kw = dict(objective="sft-go-dro", dro_eta=1.0, lam=0.9, num_groups=3, score_cache_dir=str(tmp_path / "cache"),
              max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2)

    def trainer(out, callbacks=(), **over):
        args = SFTGoSFTConfig(**common_args(out, **{**kw, **over}))
        return SFTGoSFTTrainer(build_tiny_model(len(chat_tokenizer), seed=0), args=args, train_dataset=data,
                               processing_class=chat_tokenizer, callbacks=list(callbacks))

    straight = trainer(tmp_path / "straight")
    straight.train()
    first = trainer(tmp_path / "resumed", callbacks=[StopAfterSteps(2)], save_strategy="steps", save_steps=2)
    first.train()
    assert first.state.global_step == 2
    assert found_when_marked == [sorted([COUNTERS_FILE, STATE_FILE])]
    # The marker refuses a checkpoint that lacks the counters (the guard `sftgo train` has against a misordering).
    marker = next(c for c in first.callback_handler.callbacks if isinstance(c, CompleteCheckpointCallback))
    bare = tmp_path / "bare" / "checkpoint-1"
    bare.mkdir(parents=True)
    (bare / "trainer_state.json").write_text("{}")
    with pytest.raises(RuntimeError, match=COUNTERS_FILE):
        mark(marker, SimpleNamespace(output_dir=str(bare.parent), save_total_limit=None),
             SimpleNamespace(is_world_process_zero=True, global_step=1, best_model_checkpoint=None), None)
    second = trainer(tmp_path / "resumed", save_strategy="steps", save_steps=2)
    second.train(resume_from_checkpoint=True)
    a = [r for r in straight.state.log_history if "loss" in r]
    b = [r for r in second.state.log_history if "loss" in r]
    assert a[-1]["step"] == b[-1]["step"] == 4
    for g in range(3):
        assert b[-1][f"dro_q{g}"] == pytest.approx(a[-1][f"dro_q{g}"], abs=1e-5), g
    assert abs(a[-1]["dro_q0"] - 1 / 3) > 1e-3  # q did move (so equal q means it was restored)
    wa, wb = straight.model.state_dict(), second.model.state_dict()
    for name, w in wa.items():
        assert torch.allclose(wb[name], w, atol=1e-5, rtol=0), name
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        trainer(tmp_path / "empty").train(resume_from_checkpoint=True)


def test_trl_default_bf16_autocast_runs(tmp_path, chat_tokenizer, data):
    """TRL defaults to bf16 (accelerate's autocast around the forward): the per-token head's one-time logits check
    must allow half-precision logits and training must run."""
    args = SFTGoSFTConfig(**{**common_args(tmp_path, max_steps=1, objective="sft", scorer=""), "bf16": True})
    trainer = SFTGoSFTTrainer(build_tiny_model(len(chat_tokenizer), seed=0), args=args, train_dataset=data,
                              processing_class=chat_tokenizer)
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])


def test_evaluate_a_dataset_given_later(tmp_path, chat_tokenizer, data):
    args = SFTGoSFTConfig(**common_args(tmp_path, max_steps=1, objective="sft-go", score_cache_dir=str(tmp_path / "c")))
    trainer = SFTGoSFTTrainer(build_tiny_model(len(chat_tokenizer), seed=0), args=args, train_dataset=data,
                              processing_class=chat_tokenizer)
    trainer.train()
    out = trainer.evaluate(eval_dataset=plain_text(data.select(range(5))))
    assert math.isfinite(out["eval_loss_important"]) and out["eval_tokens"] > 20


# ----------------------------------------------------------------------------------------------- a plain Trainer


def _own_rows(tok, examples):
    """What a transformers user has: their own tokenization, labels -100 on the prompt."""
    rows = []
    for e in examples:
        p, r = tok(e["instruction"] + "\n")["input_ids"], tok(e["output"] + tok.eos_token)["input_ids"]
        rows.append({"input_ids": p + r, "labels": [-100] * len(p) + r})
    return rows


def _own_collate(pad_id):
    def collate(batch):
        n = max(len(b["input_ids"]) for b in batch)

        def pad(key, v, dtype=torch.long):
            return torch.tensor([b[key] + [v] * (n - len(b[key])) for b in batch], dtype=dtype)

        out = {"input_ids": pad("input_ids", pad_id), "labels": pad("labels", -100),
               "attention_mask": torch.tensor([[1] * len(b["input_ids"]) + [0] * (n - len(b["input_ids"]))
                                               for b in batch])}
        if "importance" in batch[0]:  # the column an sftgo objective reads: [B, T] float, aligned with labels
            out["importance"] = pad("importance", 0.0, torch.float32)
        return out

    return collate


def test_plain_trainer_compute_loss_func_sft_equals_the_models_loss(tmp_path, chat_tokenizer):
    """transformers.Trainer with the model's own loss vs with compute_loss_func("sft") (accumulation 2: the step's
    token count normalizes both): same losses and weights — the README's drop-in claim for a plain Trainer."""
    from transformers import Trainer, TrainingArguments

    rows = _own_rows(chat_tokenizer, distinct_examples(8))

    def go(out, **kw):
        args = TrainingArguments(**{k: v for k, v in common_args(out, per_device_train_batch_size=2,
                                                                   gradient_accumulation_steps=2,
                                                                   train_sampling_strategy="sequential").items()
                                    if k != "max_length"}, remove_unused_columns=False)
        t = Trainer(build_tiny_model(len(chat_tokenizer), seed=0), args=args, train_dataset=rows,
                    data_collator=_own_collate(chat_tokenizer.pad_token_id), **kw)
        t.train()
        return t, [r for r in t.state.log_history if "loss" in r], dict(t.model.state_dict())

    assert_same_run(go(tmp_path / "model_loss"), go(tmp_path / "sftgo", compute_loss_func=compute_loss_func("sft")))


def test_plain_trainer_user_runs_sft_go_with_own_collator(tmp_path, chat_tokenizer):
    """The README's recipe: the user's collator passes an importance column (TF-IDF here); SFTGoTrainer trains
    SFT-GO on it."""
    from sftgo.config import SFTGoConfig
    from sftgo.scorers import tfidf
    from sftgo.trainer import SFTGoTrainer

    rows = _own_rows(chat_tokenizer, distinct_examples(8))
    scores = tfidf([[t for t in r["labels"] if t != -100] for r in rows])
    for r, s in zip(rows, scores):
        it = iter(s.tolist())
        r["importance"] = [next(it) if t != -100 else 0.0 for t in r["labels"]]
    args = SFTGoConfig(output_dir=str(tmp_path), objective="sft-go", lam=0.9, max_steps=2, per_device_train_batch_size=4,
                       learning_rate=1e-3, report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no")
    t = SFTGoTrainer(build_tiny_model(len(chat_tokenizer), seed=0), args=args, train_dataset=rows,
                     data_collator=_own_collate(chat_tokenizer.pad_token_id))
    t.train()
    for r in [r for r in t.state.log_history if "loss" in r]:
        worst = max(r["loss_important"], r["loss_unimportant"])
        assert r["loss"] == pytest.approx(0.1 * r["loss_ce"] + 0.9 * worst, rel=1e-4)
        assert 0.05 < r["frac_important"] < 0.3  # eta 90: about the top 10% of each example's tokens


def test_config_takes_sftgo_train_flags(tmp_path):
    """The objective settings are sftgo train's flags, under the same names, in TRL's own argument parser."""
    from dataclasses import fields

    from trl import TrlParser

    from sftgo.config import ObjectiveArgs, SFTGoConfig

    mine = {f.name for f in fields(ObjectiveArgs)}
    assert mine <= {f.name for f in fields(SFTGoSFTConfig)} and mine <= {f.name for f in fields(SFTGoConfig)}
    (cfg,) = TrlParser(SFTGoSFTConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--objective", "sft-go", "--lam", "0.5", "--lam_min", "0.1", "--keep_ratio", "0.3",
         "--group_stats", "lagged", "--use_cpu", "true"])
    assert (cfg.objective, cfg.lam, cfg.lam_min, cfg.percentile, cfg.group_stats) == ("sft-go", 0.5, 0.1, 70.0, "lagged")


def test_bf16_default_is_fp32_on_cpu_and_bf16_where_supported(tmp_path):
    """TRL's bf16 default stops a CPU script at construction ("Your setup doesn't support bf16/gpu"): left unset,
    SFTGoSFTConfig is fp32 on a CPU (or with use_cpu=True), TRL's bf16 where the accelerator has it; set, it is kept."""
    assert SFTGoSFTConfig(output_dir=str(tmp_path)).bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert SFTGoSFTConfig(output_dir=str(tmp_path), use_cpu=True).bf16 is False
    assert SFTGoSFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True).bf16 is True
    assert SFTGoSFTConfig(output_dir=str(tmp_path), use_cpu=True, fp16=False).bf16 is False
