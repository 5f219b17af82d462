"""Every objective's TRAINING path (SFTGoTrainer.get_batch_samples -> compute_loss -> backward -> _end_step, the fused
per-token head) against the slow reference of tests/reference_objectives.py on the model's full logits: the step's
loss value, every parameter's gradient and the state carried to the next step (Group-DRO's q, the lagged means), over
several steps with distinct micro-batches."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from sftgo.objectives import OBJECTIVES, SETTINGS, TOKEN_WEIGHTS
from sftgo.objectives.weightings import NoWeighting
from tests.conftest import build_tiny_model
from tests.reference_objectives import Tok, formula_step_loss, step_loss, token_weight

V, B, T = 48, 2, 11


def make_batch(seed: int) -> dict:
    """Two padded rows, prompt and padding unsupervised, importance with ties, reference log-probs and lower masses
    (the reference's probability below the label's: at most 1 - p_ref)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[1, T - 2:] = 0
    labels = ids.clone()
    labels[:, :3] = -100
    labels[attn == 0] = -100
    importance = torch.randint(0, 4, (B, T), generator=g).float()  # ties on purpose
    ref_logp = -4.0 * torch.rand(B, T, generator=g)
    ref_lower_mass = torch.rand(B, T, generator=g) * (1.0 - ref_logp.exp())
    return {"input_ids": ids, "attention_mask": attn, "labels": labels, "importance": importance, "ref_logp": ref_logp,
            "ref_lower_mass": ref_lower_mass}


def reference_model():
    """The frozen reference beside the trained model (ASFT): another tiny model, so the KL is not zero. Its parameters
    are left trainable on purpose: the trainer must not give them gradients anyway."""
    return build_tiny_model(V, seed=11)


def make_trainer(tmp_path, model, objective: str, ref_model=None, **over):
    from sftgo.config import SFTGoConfig
    from sftgo.trainer import SFTGoTrainer

    kw = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", objective=objective, lam=0.7, max_steps=10,
              percentile=75.0, head_chunk_size=7)
    if objective in ("rho1", "asft") or over.get("scorer") == "reference" \
            or TOKEN_WEIGHTS.get(over.get("token_weight", "none"), NoWeighting).columns:  # PriFT's static weighting
        kw["ref_model_name_or_path"] = "initial"
    kw.update(over)
    cfg = SFTGoConfig(**kw)
    trainer = SFTGoTrainer(model=model, args=cfg, ref_model=ref_model)
    trainer.state.max_steps = 10
    return trainer, cfg


def train_path(trainer, model, batches):
    model.train()
    model.zero_grad()
    got, K = trainer.get_batch_samples(iter([dict(b) for b in batches]), len(batches), torch.device("cpu"))
    total = 0.0
    for b in got:
        loss = trainer.compute_loss(model, b, num_items_in_batch=K)
        loss.backward()
        total += loss.item()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    trainer._end_step()
    trainer.state.global_step += 1
    return total, grads


def reference_path(model, batches, objective, cfg, state, ref_model=None, reference=step_loss):
    """The step's loss, gradients and next state from ``reference`` (the paper formulas of each objective, or the one
    formula); also the reference's per-token weights t_n (their mean is the logged mean_weight)."""
    model.train()
    model.zero_grad()
    toks = []
    for m, b in enumerate(batches):
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
        ref_logits = None
        if ref_model is not None:
            with torch.no_grad():
                ref_logits = ref_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
        lsm = torch.log_softmax(logits, dim=-1)
        labels = b["labels"][:, 1:]
        for r in range(labels.shape[0]):
            for t in range(labels.shape[1]):
                y = int(labels[r, t])
                if y != -100:
                    w = float(b["loss_weight"][r, t + 1]) if "loss_weight" in b else 1.0
                    toks.append(Tok(lsm[r, t, y], logits[r, t], y, (m, r), float(b["importance"][r, t + 1]),
                                    float(b["ref_logp"][r, t + 1]), None if ref_logits is None else ref_logits[r, t],
                                    w, float(b["ref_lower_mass"][r, t + 1])))
    a = SimpleNamespace(**{k: getattr(cfg, k) for k in SETTINGS})  # every declared objective setting
    loss, new_state = reference(objective, toks, a, lam=cfg.lam, state=state)
    loss.backward()
    return loss.item(), [p.grad.detach().clone() for p in model.parameters()], new_state, \
        [token_weight(t, a) for t in toks]


CASES = [
    ("sft", {}),
    ("dft", {}),
    ("infosft", {"infosft_p": 0.9}),
    ("eaft", {}),
    ("eaft", {"eaft_k": 5, "eaft_alpha": 1.7, "eaft_normalize": False}),
    ("asft", {"asft_alpha": 0.3}),
    ("asft", {"asft_alpha": 0.5, "asft_kl": "reverse"}),
    ("asft", {"asft_alpha": 0.3, "token_head": "naive"}),  # the model's own logits: the loss over whole rows at once
    ("target-sft", {"target_residual": "uniform", "target_gamma": "0.8"}),
    ("target-sft", {"target_residual": "model", "target_gamma": "p"}),
    ("target-sft", {"target_residual": "topk", "target_gamma": "0.6", "target_topk": 3}),
    ("sft-go", {}),
    ("sft-go", {"group_scope": "batch"}),
    ("sft-go", {"num_groups": 3}),
    ("sft-go", {"scorer": "reference"}),
    ("sft-go", {"group_stats": "lagged"}),
    ("sft-go-dro", {"num_groups": 3, "dro_eta": 0.5}),
    ("sft-go-dro", {"num_groups": 2, "dro_eta": 1.0, "group_stats": "lagged"}),
    ("rho1", {"percentile": 60.0}),
    ("rho1", {"percentile": 99.0}),  # k rounds to 0 on this small step: at least one token is kept
    # --group_scope dataset: a fixed threshold on the static importance (0..3 with ties: every token at 2 counts)
    ("sft-go", {"group_scope": "dataset", "group_threshold": 2.0}),
    ("rho1", {"group_scope": "dataset", "group_threshold": 2.0}),  # Token Cleaning's selection
]


def _state_lists(state: dict) -> dict:
    return {k: v.tolist() for k, v in state.items()}


# One micro-batch takes its own path (the objective's coefficient from the micro-batch's statistics) only for the
# objectives with step statistics; for the others it is the path of two.
PARAMS = [(o, s, mb) for o, s in CASES for mb in ((2, 1) if OBJECTIVES[o].step_stats else (2,))]


@pytest.mark.parametrize("objective,over,micro_batches", PARAMS,
                         ids=[f"{o}-{'-'.join(f'{k}={v}' for k, v in s.items())}-mb{mb}" for o, s, mb in PARAMS])
def test_training_path_equals_reference(tmp_path, objective, over, micro_batches):
    model = build_tiny_model(V, seed=3)
    ref_model = reference_model() if objective == "asft" else None
    trainer, cfg = make_trainer(tmp_path, model, objective, ref_model=ref_model, **over)
    ref_state: dict = {}
    # distinct micro-batches every step: the group means (and so q, lagged means) move; a second step where state lives
    for step in range(2 if trainer.objective.step_stats else 1):
        batches = [make_batch(100 * step + i) for i in range(micro_batches)]
        loss, grads = train_path(trainer, model, batches)
        ref_loss, ref_grads, ref_state, _ = reference_path(model, batches, objective, cfg, ref_state, ref_model)
        assert math.isfinite(loss)
        assert loss == pytest.approx(ref_loss, abs=1e-5, rel=1e-5), f"step {step}"
        for g, rg in zip(grads, ref_grads):
            torch.testing.assert_close(g, rg, atol=2e-5, rtol=1e-4)
        if step == 0:  # lambda is logged only for the objectives it applies to (their declaration says)
            logs = {"loss": loss}
            trainer.log(logs)
            assert ("lam" in logs) == trainer.objective.uses_lam, logs
        got = _state_lists(trainer.objective_state)
        assert set(got) == set(ref_state), f"step {step}: state keys {set(got)} vs {set(ref_state)}"
        for k in got:
            assert got[k] == pytest.approx(ref_state[k], abs=1e-6), f"step {step}: {k}"


def test_asft_alpha_zero_is_dft_and_the_reference_gets_no_gradient(tmp_path):
    """ASFT with alpha = 0 is DFT (loss and every gradient), the frozen reference's parameters get no gradient (left
    trainable on purpose), and the logged ``kl`` / ``mean_weight`` are the step's means over its supervised tokens."""
    batches = [make_batch(7), make_batch(8)]
    got = {}
    for objective, over in (("dft", {}), ("asft", {"asft_alpha": 0.0})):
        model = build_tiny_model(V, seed=3)
        ref = reference_model() if objective == "asft" else None
        trainer, _ = make_trainer(tmp_path, model, objective, ref_model=ref, **over)
        got[objective] = train_path(trainer, model, batches)
    assert got["asft"][0] == pytest.approx(got["dft"][0], rel=1e-6)
    for g, rg in zip(got["asft"][1], got["dft"][1]):
        torch.testing.assert_close(g, rg, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in ref.parameters())

    logs = {"loss": got["asft"][0]}
    trainer.log(logs)
    with torch.no_grad():  # the same step's model (its weights did not move: no optimizer here), full logits
        kl, w = [], []
        for b in batches:
            logq = torch.log_softmax(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1], -1)
            logr = torch.log_softmax(ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1], -1)
            sup = b["labels"][:, 1:] != -100
            kl.append((logr.exp() * (logr - logq)).sum(-1)[sup])
            w.append(logq.gather(-1, b["labels"][:, 1:].clamp(min=0)[..., None]).squeeze(-1)[sup].exp())
    assert logs["kl"] == pytest.approx(torch.cat(kl).mean().item(), rel=1e-5) and logs["kl"] > 0.01
    assert logs["mean_weight"] == pytest.approx(torch.cat(w).mean().item(), rel=1e-5)
    assert (logs["min_weight"], logs["max_weight"]) == pytest.approx((torch.cat(w).min().item(),
                                                                      torch.cat(w).max().item()), rel=1e-5)


def test_group_state_follows_the_statistics_device(tmp_path):
    """The objective state lives on the device of the step's statistics. On the meta device (a stand-in for a GPU),
    a state tensor left on the CPU would meet meta tensors in the next step's decision and raise."""
    model = build_tiny_model(V, seed=3)
    for objective, over in [("sft-go", {"group_stats": "lagged"}), ("sft-go", {}), ("sft-go-dro", {"num_groups": 3}),
                            ("rho1", {})]:
        trainer, cfg = make_trainer(tmp_path, model, objective, **over)
        obj, G = trainer.objective, trainer.objective.num_groups
        for _ in range(2):
            trainer._step_groups = (torch.rand(G, device="meta"), torch.ones(G, device="meta"))
            trainer._end_step()
            assert all(v.device.type == "meta" for v in trainer.objective_state.values()), objective
            lagged = "lagged_means" in trainer.objective_state
            ids = [torch.zeros(5, dtype=torch.long, device="meta"), torch.ones(4, dtype=torch.long, device="meta")]
            sums = None if lagged else torch.rand(G, device="meta")
            coefs, _ = obj.decide(ids, sums, torch.ones(G, device="meta"), trainer.objective_state, 0.5, 9)
            assert [c.device.type for c in coefs] == ["meta", "meta"]
        if objective == "sft-go-dro":
            assert "dro_q" in trainer.objective_state


def test_default_lambda_is_static(tmp_path):
    """No --lam_min: lambda stays --lam at every step (Eq. 5 only when lam_min is set below lam)."""
    from sftgo.config import SFTGoConfig

    model = build_tiny_model(V, seed=3)
    trainer, _ = make_trainer(tmp_path, model, "sft-go", lam=0.8)
    assert SFTGoConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none").lam_min is None
    lams = []
    for step in (0, 3, 9):
        trainer.state.global_step = step
        lams.append(trainer.current_lam())
    assert lams == [0.8, 0.8, 0.8]
    trainer2, _ = make_trainer(tmp_path, model, "sft-go", lam=0.8, lam_min=0.2)
    trainer2.state.global_step = 5
    assert trainer2.current_lam() == pytest.approx(0.4)


# ------------------------------------------------------------------------------------------- token weights compose
# --token_weight inside every aggregator: the special cases are the named objectives (their paper formulas in
# step_loss), a combination is the one formula (formula_step_loss) and differs from each of its parts.

def peaked_model():
    """The tiny model with its LM head scaled up: logits of std ~3 instead of ~0.1, so p, the token weightings and the
    groups' losses vary from token to token (on a near-uniform model every t_n and every group mean is about the
    same, and a combination could hardly differ from its parts)."""
    model = build_tiny_model(V, seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    return model


SPECIAL = [  # (aggregator, settings, the named objective it must equal)
    ("sft", {"token_weight": "dft"}, "dft"),
    ("sft", {"token_weight": "infosft", "infosft_p": 0.9}, "infosft"),
    ("sft", {"token_weight": "eaft", "eaft_k": 5, "eaft_alpha": 1.7}, "eaft"),
    ("sft-go", {"token_weight": "infosft", "lam": 0.0}, "infosft"),
    ("sft", {"token_weight": "power", "power_alpha": 0.0}, "sft"),  # alpha = 0: -log p, plain SFT's loss and gradient
]


@pytest.mark.parametrize("aggregator,over,named", SPECIAL, ids=[f"{a}+{o['token_weight']}=={n}" for a, o, n in SPECIAL])
def test_token_weight_special_cases_are_the_named_objectives(tmp_path, aggregator, over, named):
    model = peaked_model()
    trainer, cfg = make_trainer(tmp_path, model, aggregator, **over)
    batches = [make_batch(7), make_batch(8)]
    loss, grads = train_path(trainer, model, batches)
    ref_loss, ref_grads, _, _ = reference_path(model, batches, named, cfg, {})
    assert loss == pytest.approx(ref_loss, abs=1e-5, rel=1e-5)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, atol=2e-5, rtol=1e-4)


COMBOS = [  # (aggregator, settings, micro-batches)
    ("sft-go", {"token_weight": "infosft"}, 2),
    ("sft-go", {"token_weight": "infosft"}, 1),  # the micro-batch's own statistics, in the fused head (GroupCoef)
    ("sft-go", {"token_weight": "eaft"}, 2),  # step 2's batches: t_n moves the worst group (the pre-pass needs t_n)
    ("sft-go", {"token_weight": "eaft", "num_groups": 3}, 2),
    ("sft-go", {"token_weight": "eaft", "eaft_k": 4}, 1),
    ("sft-go", {"token_weight": "dft", "scorer": "reference"}, 2),
    ("sft-go", {"token_weight": "infosft", "group_stats": "lagged"}, 2),
    ("rho1", {"token_weight": "dft", "percentile": 60.0}, 2),
    ("rho1", {"token_weight": "eaft", "percentile": 60.0, "group_stats": "micro"}, 1),
    ("sft-go-dro", {"token_weight": "eaft", "num_groups": 3, "dro_eta": 0.5}, 2),
    ("sft-go-dro", {"token_weight": "dft", "num_groups": 3, "dro_eta": 1.0, "group_scope": "batch"}, 1),
    # PriFT's static t_n (read from the batch's reference columns): inside the GroupCoef of one micro-batch, the kept
    # set of Rho-1 (which reads ref_logp itself) and DRO's q
    ("sft-go", {"token_weight": "prift_mass", "prift_threshold": 0.8, "num_groups": 3}, 1),
    ("rho1", {"token_weight": "prift_prob", "percentile": 60.0}, 2),
    ("sft-go-dro", {"token_weight": "prift_mass", "num_groups": 3, "dro_eta": 0.5}, 1),
    ("sft-go", {"token_weight": "eaft", "group_scope": "dataset", "group_threshold": 2.0}, 2),
    ("rho1", {"token_weight": "dft", "group_scope": "dataset", "group_threshold": 2.0}, 1),
    # the power family: the loss value is sum f(p), the group sums are of f(p) (tests/reference_objectives.py)
    ("sft-go", {"token_weight": "power", "power_alpha": 0.5, "power_window": "top", "power_q": 0.0025}, 1),
    ("sft-go", {"token_weight": "power", "power_alpha": 0.25, "num_groups": 3}, 2),
    ("sft-go", {"token_weight": "power", "power_alpha": 2.0, "group_stats": "lagged"}, 2),
    ("rho1", {"token_weight": "power", "power_alpha": 0.5, "power_window": "bottom", "power_q": 0.0015,
              "percentile": 60.0}, 2),
    ("sft-go-dro", {"token_weight": "power", "power_alpha": 0.5, "num_groups": 3, "dro_eta": 0.5}, 2),
]
# every token weighting composes with sft-go over a step of two micro-batches (a new weighting is checked here too)
COMBOS += [c for c in (("sft-go", {"token_weight": w}, 2) for w in TOKEN_WEIGHTS if w != "none") if c not in COMBOS]


def formula_steps(tmp_path, aggregator, over, micro_batches):
    """Two training steps of ``aggregator`` with ``over`` against the one formula (loss, every gradient, the carried
    state, the logged mean t_n); yields ``(step, model, batches, grads, cfg, the reference's t_n)`` after each."""
    model = peaked_model()
    trainer, cfg = make_trainer(tmp_path, model, aggregator, **over)
    ref_state: dict = {}
    for step in range(2):  # a second step: the carried state (q, lagged means) comes from the weighted statistics
        batches = [make_batch(100 * step + i) for i in range(micro_batches)]
        loss, grads = train_path(trainer, model, batches)
        ref_loss, ref_grads, ref_state, ref_t = reference_path(model, batches, aggregator, cfg, ref_state,
                                                               reference=formula_step_loss)
        assert loss == pytest.approx(ref_loss, abs=1e-5, rel=1e-5), f"step {step}"
        for g, rg in zip(grads, ref_grads):
            torch.testing.assert_close(g, rg, atol=2e-5, rtol=1e-4)
        got = _state_lists(trainer.objective_state)
        assert set(got) == set(ref_state)
        for k in got:
            assert got[k] == pytest.approx(ref_state[k], abs=1e-6), f"step {step}: {k}"
        logs = {"loss": loss}
        trainer.log(logs)
        assert logs["mean_weight"] == pytest.approx(sum(ref_t) / len(ref_t), rel=1e-5)  # the mean t_n
        # and its range over the step's supervised tokens (both micro-batches, no prompt or padding position)
        assert (logs["min_weight"], logs["max_weight"]) == pytest.approx((min(ref_t), max(ref_t)), rel=1e-5, abs=1e-7)
        if over.get("power_window", "none") != "none":  # the window cuts: some tokens inside, some outside
            assert 0 < sum(t == 0 for t in ref_t) < len(ref_t), ref_t
        yield step, model, batches, grads, cfg, ref_t


@pytest.mark.parametrize("aggregator,over,micro_batches", COMBOS,
                         ids=[f"{a}+{'-'.join(f'{k}={v}' for k, v in o.items())}-mb{m}" for a, o, m in COMBOS])
def test_token_weight_combination_is_the_formula(tmp_path, aggregator, over, micro_batches):
    for step, model, batches, grads, cfg, _ in formula_steps(tmp_path, aggregator, over, micro_batches):
        if step == 0:  # differs from each of its parts: the aggregator alone, the weighting alone (as sft). Compared
            # on the gradient: on an untrained model every token's CE is about log V, so the losses can nearly agree
            # while the per-token coefficients (t_n, and the groups' W / C_g) differ a lot.
            flat = torch.cat([g.flatten() for g in grads])
            # the weighting alone is sft with it (the named objective for dft / infosft / eaft: SPECIAL above)
            for part, ref in ((aggregator, step_loss), ("sft", formula_step_loss)):
                other = torch.cat([g.flatten() for g in reference_path(model, batches, part, cfg, {}, reference=ref)[1]])
                assert (flat - other).norm() > 0.05 * other.norm(), part


def test_formula_reference_without_token_weights_is_each_paper_formula():
    """The one formula with t = w = 1 is each aggregator's own formula (tests/reference_objectives.step_loss)."""
    g = torch.Generator().manual_seed(0)
    toks = [Tok(torch.tensor(-float(v)), torch.zeros(V), 1, (0, i % 3), float(i % 4), -1.5)
            for i, v in enumerate(torch.rand(13, generator=g) * 4)]
    for aggregator, extra in [("sft", {}), ("sft-go", {}), ("sft-go", {"num_groups": 3}),
                              ("sft-go", {"group_stats": "lagged"}), ("sft-go-dro", {"num_groups": 3}), ("rho1", {})]:
        a = SimpleNamespace(**{"token_weight": "none", "scorer": "tfidf", "percentile": 75.0, "num_groups": 2,
                               "group_scope": "sequence", "group_stats": "exact", "dro_eta": 0.5, **extra})
        state = {"lagged_means": [0.3, 2.0]} if a.group_stats == "lagged" else {}
        for lam in (0.0, 0.6):
            want, want_state = step_loss(aggregator, toks, a, lam=lam, state=state)
            got, got_state = formula_step_loss(aggregator, toks, a, lam=lam, state=state)
            assert float(got) == pytest.approx(float(want), rel=1e-6), (aggregator, extra, lam)
            assert got_state.keys() == want_state.keys()
            for k in got_state:
                assert got_state[k] == pytest.approx(want_state[k], rel=1e-6)


# on these rows the weighted and the unweighted group means pick different worst groups
@pytest.mark.parametrize("aggregator,over", [("sft-go", {"token_weight": "eaft", "eaft_alpha": 3.0, "eaft_k": 4}),
                                             ("rho1", {"token_weight": "infosft"}),
                                             ("sft-go", {"token_weight": "power", "power_alpha": 0.5})])
def test_exact_statistics_with_token_weights_do_not_depend_on_the_split(tmp_path, aggregator, over):
    """--group_stats exact with a token weighting: one micro-batch of 4 rows and 4 micro-batches of 1 row are the same
    step (loss and every gradient): the pre-pass gives the step's S_g with the t_n factor."""
    rows = [make_batch(40 + i) for i in range(2)]
    one = {k: torch.cat([b[k] for b in rows]) for k in rows[0]}  # [4, T]: rows of two distinct batches
    singles = [{k: v[i:i + 1] for k, v in one.items()} for i in range(4)]
    results = []
    for batches in ([one], singles):
        model = peaked_model()
        trainer, _ = make_trainer(tmp_path, model, aggregator, **over)
        results.append(train_path(trainer, model, batches))
    (l1, g1), (l4, g4) = results
    assert l1 == pytest.approx(l4, abs=1e-6, rel=1e-6)
    for a, b in zip(g1, g4):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------------- data weights
# A batch's float [B, T] ``loss_weight`` column (w_n > 0 at supervised positions) enters the same formula: W = sum w
# is the normalizer (get_batch_samples), C_g are weighted counts, S_g carry w_n t_n.

def weighted(batch: dict, seed: int, uniform: float | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    w = torch.full(batch["labels"].shape, uniform) if uniform is not None else 0.2 + 2.8 * torch.rand(batch["labels"].shape, generator=g)
    return {**batch, "loss_weight": w.float()}


WEIGHTED = [  # (aggregator, settings, micro-batches)
    ("sft", {}, 2),
    ("sft", {"token_weight": "infosft"}, 1),
    ("sft-go", {}, 2),
    ("sft-go", {"token_weight": "eaft"}, 1),
    ("sft-go", {"token_weight": "dft", "group_stats": "lagged", "num_groups": 3}, 2),
    ("rho1", {"percentile": 60.0}, 2),
    ("rho1", {"percentile": 60.0, "token_weight": "dft"}, 1),  # the kept set's weighted count, in the micro-batch path
    ("sft", {"token_weight": "prift_mass"}, 2),
    ("sft-go", {"token_weight": "prift_prob"}, 1),  # a static t_n is no data weight: C_g stays the sum of w_n
    ("sft", {"token_weight": "power", "power_alpha": 0.5}, 2),
    ("sft-go", {"token_weight": "power", "power_alpha": 2.0, "power_window": "top", "power_q": 0.0025}, 1),
    ("sft-go-dro", {"num_groups": 3, "dro_eta": 0.5}, 2),
    ("sft-go", {"group_scope": "dataset", "group_threshold": 1.0}, 2),
    ("rho1", {"group_scope": "dataset", "group_threshold": 2.0}, 1),
    ("target-sft", {"target_residual": "topk", "target_gamma": "0.6", "target_topk": 3}, 2),  # rows weighted in the head
    ("asft", {"asft_alpha": 0.3}, 2),  # rows weighted in the head, beside a reference model
]


def _weighted_ids(cases):
    return [f"{a}-{'-'.join(f'{k}={v}' for k, v in o.items())}-mb{m}" for a, o, m in cases]


@pytest.mark.parametrize("aggregator,over,micro_batches", WEIGHTED, ids=_weighted_ids(WEIGHTED))
def test_data_weights_are_the_formula(tmp_path, aggregator, over, micro_batches):
    _check_data_weights(tmp_path, aggregator, over, micro_batches)


# One micro-batch: the worst group is decided inside the head, from the groups' sums and weighted counts C_g (not their
# sizes). The cases above run the fused head; the chunked and naive heads resolve the same factors by autograd.
WEIGHTED_GROUPED = [("sft-go", {}, 1), ("sft-go", {"token_weight": "eaft"}, 1), ("sft-go", {"token_weight": "prift_mass"}, 1),
                    ("sft-go", {"token_weight": "power", "power_alpha": 0.5, "power_window": "bottom",
                                "power_q": 0.0015}, 1)]


@pytest.mark.parametrize("head", ["chunked", "naive"])
@pytest.mark.parametrize("aggregator,over,micro_batches", WEIGHTED_GROUPED, ids=_weighted_ids(WEIGHTED_GROUPED))
def test_data_weights_are_the_formula_on_the_chunked_and_naive_heads(tmp_path, aggregator, over, micro_batches, head):
    _check_data_weights(tmp_path, aggregator, over, micro_batches, token_head=head)


def _check_data_weights(tmp_path, aggregator, over, micro_batches, **head):
    over = {**over, **head}
    model = peaked_model()
    ref_model = reference_model() if aggregator == "asft" else None
    trainer, cfg = make_trainer(tmp_path, model, aggregator, ref_model=ref_model, **over)
    ref_state: dict = {}
    for step in range(2):
        batches = [weighted(make_batch(100 * step + i), 7 * step + i) for i in range(micro_batches)]
        loss, grads = train_path(trainer, model, batches)
        ref_loss, ref_grads, ref_state, _ = reference_path(
            model, batches, aggregator, cfg, ref_state, ref_model,
            reference=step_loss if trainer.objective.chunk_loss else formula_step_loss)
        assert loss == pytest.approx(ref_loss, abs=1e-5, rel=1e-5), f"step {step}"
        for g, rg in zip(grads, ref_grads):
            torch.testing.assert_close(g, rg, atol=2e-5, rtol=1e-4)
        got = _state_lists(trainer.objective_state)
        for k in got:
            assert got[k] == pytest.approx(ref_state[k], abs=1e-6), f"step {step}: {k}"
        logs = {"loss": loss}
        trainer.log(logs)  # the logged CE means are w-weighted means; tokens stays a count
        assert logs["tokens"] == sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        if aggregator == "sft" and over == head:  # the loss is the weighted mean CE
            assert logs["loss_ce"] == pytest.approx(ref_loss, rel=1e-5)
        if aggregator == "sft-go" and over == head:  # (1 - lam) mean + lam * worst of the two weighted group means
            worst = max(logs["loss_important"], logs["loss_unimportant"])
            assert (1 - cfg.lam) * logs["loss_ce"] + cfg.lam * worst == pytest.approx(ref_loss, rel=1e-5)


# ------------------------------------------------------------------------------------------------- the power family
# Beyond Log Likelihood (arXiv 2510.00526): the loss value is the paper's f(p), the gradient sg(p^alpha) times CE's.

@pytest.mark.parametrize("head", ["fused", "chunked", "naive"])
def test_power_alpha_one_is_dfts_gradient_and_logs_one_minus_p(tmp_path, head):
    """``--token_weight power --power_alpha 1`` (their ``p``): every gradient is DFT's, the loss the step returns (the
    run's logged ``loss``) is the mean ``1 - p`` over the step's tokens, not DFT's ``-p log p``; ``mean_weight`` the
    mean ``p``. On each head."""
    batches = [make_batch(7), make_batch(8)]
    got = {}
    for objective, over in (("dft", {}), ("sft", {"token_weight": "power", "power_alpha": 1.0})):
        model = peaked_model()
        trainer, _ = make_trainer(tmp_path, model, objective, token_head=head, **over)
        got[objective] = train_path(trainer, model, batches)
        logs = {"loss": got[objective][0]}
        trainer.log(logs)
        got[objective] += (logs["mean_weight"],)
    for g, rg in zip(got["sft"][1], got["dft"][1]):
        torch.testing.assert_close(g, rg, atol=1e-7, rtol=1e-5)
    with torch.no_grad():
        p = []
        for b in batches:
            logq = torch.log_softmax(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1], -1)
            lab = b["labels"][:, 1:]
            p.append(logq.gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1)[lab != -100].exp())
        p = torch.cat(p).double()
    assert got["sft"][0] == pytest.approx(float((1 - p).mean()), rel=1e-6)
    assert got["dft"][0] == pytest.approx(float((-p * p.log()).mean()), rel=1e-5)
    assert got["sft"][2] == got["dft"][2] == pytest.approx(float(p.mean()), rel=1e-5)
