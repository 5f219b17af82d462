"""Objectives against slow references written from the formulas (python loops over tokens).

Conventions: float64 inputs, random masks, NaN planted at unsupervised positions so any leak of
those values into the value or the gradient shows up as NaN.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sftgo.objectives import (
    OBJECTIVES,
    TARGET_RESIDUALS,
    GroupDRO,
    dft,
    dft_weights,
    group_dro_loss,
    group_sums,
    infosft,
    infosft_weights,
    lambda_schedule,
    quantile_group_ids,
    rho1,
    rho1_select,
    sft,
    sft_go,
    sft_go_multi,
    sft_go_stats,
    target_sft,
)

B, T, V = 3, 9, 13


def make_batch(seed: int, p_mask: float = 0.3, shape=(B, T)):
    """logp in (-4, 0) with NaN at unsupervised positions; returns (logp leaf, mask)."""
    g = torch.Generator().manual_seed(seed)
    logp = -4.0 * torch.rand(shape, generator=g, dtype=torch.float64)
    mask = torch.rand(shape, generator=g) > p_mask
    logp = torch.where(mask, logp, torch.full_like(logp, math.nan))
    return logp.requires_grad_(), mask


def supervised(mask):
    """List of (index tuple) of supervised positions, row-major."""
    return [tuple(i) for i in mask.nonzero().tolist()]


def grad_of(fn, x):
    x.grad = None
    out = fn()
    out.backward()
    g = x.grad.clone()
    x.grad = None
    return out.detach(), g


def assert_close_value_and_grad(fn, ref_fn, x, atol=1e-10):
    v, g = grad_of(fn, x)
    rv, rg = grad_of(ref_fn, x)
    assert torch.isfinite(v) and not torch.isnan(g).any()
    torch.testing.assert_close(v, rv, atol=atol, rtol=1e-9)
    torch.testing.assert_close(g, rg, atol=atol, rtol=1e-9)


# ------------------------------------------------------------------ references


def ref_weighted(logp, mask, weight_of_p, num_items=None):
    """sum over supervised tokens of -w(p) * logp, w a python-float constant, / count or num_items."""
    total = logp.new_zeros(())
    idx = supervised(mask)
    for i in idx:
        p = math.exp(logp[i].item())
        total = total + (-weight_of_p(p)) * logp[i]
    denom = num_items if num_items is not None else max(len(idx), 1)
    return total / max(denom, 1)


def ref_infosft_w(p, P=0.93):
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 0.0
    return p * max(0.0, 1.0 - math.log(p / (1 - p)) / math.log(P / (1 - P)))


def ref_sft_go(logp, mask, important, lam, num_items=None):
    imp, unimp = [], []
    for i in supervised(mask):
        (imp if important[i] else unimp).append(-logp[i])
    n_sup = len(imp) + len(unimp)
    if n_sup == 0:
        return logp.new_zeros(()) + 0.0 * logp.nan_to_num().sum()
    ce = sum(imp + unimp) / (num_items if num_items is not None else n_sup)
    means = [sum(g) / len(g) for g in (unimp, imp) if g]
    worst = means[0] if len(means) == 1 else (means[0] if means[0].item() >= means[1].item() else means[1])
    scale = 1.0 if num_items is None else n_sup / num_items
    return (1 - lam) * ce + lam * worst * scale


def ref_target_sft(logits, labels, mask, gamma, residual, topk=10, ref_logits=None, num_items=None):
    total = logits.new_zeros(())
    idx = supervised(mask)
    for i in idx:
        z = logits[i]
        logq = torch.log_softmax(z, dim=-1)
        probs = [math.exp(v) for v in logq.tolist()]
        y = int(labels[i])
        g = probs[y] if gamma == "p" else gamma
        if residual == "uniform":
            pi = [1.0 / V] * V
        elif residual == "model":
            pi = probs
        elif residual == "reference":
            r = torch.softmax(ref_logits[i], dim=-1).tolist()
            pi = r
        else:
            others = sorted((k for k in range(V) if k != y), key=lambda k: -probs[k])[:topk]
            s = sum(probs[k] for k in others)
            pi = [probs[k] / s if k in others else 0.0 for k in range(V)]
        Q = torch.tensor([g * (k == y) + (1 - g) * pi[k] for k in range(V)], dtype=logits.dtype)
        total = total - (Q * logq).sum()
    denom = num_items if num_items is not None else max(len(idx), 1)
    return total / max(denom, 1)


def make_logits(seed, shape=(B, T), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(*shape, V, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, shape, generator=g)
    mask = torch.rand(shape, generator=g) > 0.3
    labels = torch.where(mask, labels, torch.full_like(labels, -100))
    return logits.requires_grad_(), labels, mask


# ------------------------------------------------------------------ weights


def test_dft_weights_is_detached_probability():
    logp = torch.log(torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=torch.float64)).requires_grad_()
    w = dft_weights(logp)
    assert not w.requires_grad
    torch.testing.assert_close(w, torch.tensor([0.0, 0.2, 0.7, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_infosft_weights_match_formula_and_are_safe_at_extremes(dtype):
    ps = [0.0, 1e-30, 1e-6, 0.05, 0.3, 0.5, 0.8, 0.92, 0.93, 0.95, 0.999999, 1.0]
    logp = torch.log(torch.tensor(ps, dtype=torch.float64)).to(dtype).requires_grad_()
    w = infosft_weights(logp)
    assert not w.requires_grad
    assert torch.isfinite(w).all()
    ref = torch.tensor([ref_infosft_w(math.exp(v)) for v in logp.tolist()], dtype=dtype)
    torch.testing.assert_close(w, ref, atol=1e-6, rtol=1e-5)


def test_infosft_weight_shape_peaks_at_medium_p():
    def w(p):
        return infosft_weights(torch.tensor([math.log(p)], dtype=torch.float64)).item()

    assert w(0.5) > w(0.95)
    assert w(0.5) > w(0.05)
    assert w(0.05) < 0.15 and w(1e-4) < 1e-2
    for p in (0.93 + 1e-9, 0.95, 0.99, 1.0):
        assert w(p) == 0.0
    # A different threshold moves the cut-off.
    assert infosft_weights(torch.tensor([math.log(0.85)]), P=0.8).item() == 0.0
    assert infosft_weights(torch.tensor([math.log(0.75)]), P=0.8).item() > 0.0


@pytest.mark.parametrize("P", [0.5, 1.0, 0.2, 1.5])
def test_infosft_rejects_bad_threshold(P):
    with pytest.raises(ValueError, match="P must be"):
        infosft_weights(torch.zeros(2), P=P)


# ------------------------------------------------------------------ sft / dft / infosft


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_items", [None, 40])
def test_sft_dft_infosft_match_reference(seed, num_items):
    logp, mask = make_batch(seed)
    assert_close_value_and_grad(
        lambda: sft(logp, mask, num_items), lambda: ref_weighted(logp, mask, lambda p: 1.0, num_items), logp
    )
    assert_close_value_and_grad(
        lambda: dft(logp, mask, num_items), lambda: ref_weighted(logp, mask, lambda p: p, num_items), logp
    )
    assert_close_value_and_grad(
        lambda: infosft(logp, mask, num_items=num_items),
        lambda: ref_weighted(logp, mask, ref_infosft_w, num_items),
        logp,
    )
    assert_close_value_and_grad(
        lambda: infosft(logp, mask, P=0.7, num_items=num_items),
        lambda: ref_weighted(logp, mask, lambda p: ref_infosft_w(p, 0.7), num_items),
        logp,
    )


def test_any_leading_shape_is_flattened():
    logp, mask = make_batch(5, shape=(2, 3, 4))
    v3 = sft_go(logp, mask, mask & (logp.detach().nan_to_num() < -2), 0.4)
    v2 = sft_go(logp.reshape(6, 4), mask.reshape(6, 4), (mask & (logp.detach().nan_to_num() < -2)).reshape(6, 4), 0.4)
    assert torch.equal(v3, v2)
    assert torch.equal(dft(logp, mask), dft(logp.reshape(-1), mask.reshape(-1)))


@pytest.mark.parametrize("name", ["sft", "dft", "infosft", "target_sft"])
def test_num_items_is_additive_over_splits(name):
    logits, labels, mask = make_logits(3, shape=(4, T))
    n = int(mask.sum())

    def logp():  # rebuilt per call so every backward has its own graph
        return torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)

    fns = {
        "sft": lambda rows, ni: sft(logp()[rows], mask[rows], num_items=ni),
        "dft": lambda rows, ni: dft(logp()[rows], mask[rows], num_items=ni),
        "infosft": lambda rows, ni: infosft(logp()[rows], mask[rows], num_items=ni),
        "target_sft": lambda rows, ni: target_sft(
            logits[rows], labels[rows], mask[rows], gamma=0.8, residual="topk", topk=3, num_items=ni
        ),
    }
    f = fns[name]
    whole, g_whole = grad_of(lambda: f(slice(None), None), logits)
    parts, g_parts = grad_of(lambda: f(slice(0, 1), n) + f(slice(1, 3), n) + f(slice(3, 4), n), logits)
    torch.testing.assert_close(parts, whole)
    torch.testing.assert_close(g_parts, g_whole)
    # num_items as a tensor (as a trainer passes after an all-reduce) gives the same.
    torch.testing.assert_close(f(slice(None), torch.tensor(n)), whole)


# ------------------------------------------------------------------ SFT-GO


def important_mask(seed, shape=(B, T), frac=0.3):
    g = torch.Generator().manual_seed(seed + 100)
    return torch.rand(shape, generator=g) < frac


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("num_items", [None, 50])
def test_sft_go_matches_reference(seed, lam, num_items):
    logp, mask = make_batch(seed)
    imp = important_mask(seed)
    assert_close_value_and_grad(
        lambda: sft_go(logp, mask, imp, lam, num_items),
        lambda: ref_sft_go(logp, mask, imp, lam, num_items),
        logp,
    )


@pytest.mark.parametrize("which", ["no_important", "all_important"])
def test_sft_go_empty_group_is_left_out_of_the_max(which):
    logp, mask = make_batch(7)
    imp = torch.zeros_like(mask) if which == "no_important" else torch.ones_like(mask)
    # One non-empty group: the group mean is the overall mean, so any lam gives plain SFT.
    v, g = grad_of(lambda: sft_go(logp, mask, imp, 0.6), logp)
    rv, rg = grad_of(lambda: sft(logp, mask), logp)
    torch.testing.assert_close(v, rv)
    torch.testing.assert_close(g, rg)


def test_sft_go_group_term_picks_the_worse_group():
    logp = torch.tensor([[-0.1, -3.0, -0.2, -2.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, True]])
    imp = torch.tensor([[False, True, False, True]])  # important mean 2.5 > unimportant 0.15
    v = sft_go(logp, mask, imp, 1.0)
    assert v.item() == pytest.approx(2.5)
    v.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5, 0.0, -0.5]], dtype=torch.float64))


def test_sft_go_empty_group_never_wins_a_tie():
    # All tokens certain (loss 0): the empty important group (mean "0") ties with the real one and
    # must still be skipped, so the gradient of the group term reaches the tokens.
    logp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    for imp in (torch.zeros_like(mask), mask.clone()):
        _, g = grad_of(lambda: sft_go(logp, mask, imp, 1.0), logp)
        _, rg = grad_of(lambda: sft(logp, mask), logp)
        torch.testing.assert_close(g, rg)


@pytest.mark.parametrize("seed", [0, 4])
def test_sft_go_lam0_equals_sft_exactly(seed):
    logp, mask = make_batch(seed)
    imp = important_mask(seed)
    assert torch.equal(sft_go(logp, mask, imp, 0.0), sft(logp, mask))
    assert torch.equal(sft_go(logp, mask, imp, 0.0, num_items=31), sft(logp, mask, num_items=31))


def test_sft_go_stats_match_reference():
    logp, mask = make_batch(11)
    imp = important_mask(11)
    s = sft_go_stats(logp, mask, imp)
    li = [-logp[i].item() for i in supervised(mask) if imp[i]]
    lu = [-logp[i].item() for i in supervised(mask) if not imp[i]]
    assert s["n_important"].item() == len(li) and s["n_unimportant"].item() == len(lu)
    assert s["loss_important"].item() == pytest.approx(sum(li) / len(li))
    assert s["loss_unimportant"].item() == pytest.approx(sum(lu) / len(lu))
    assert s["loss_ce"].item() == pytest.approx(sum(li + lu) / len(li + lu))
    assert s["worst_group"].item() == (1 if sum(li) / len(li) > sum(lu) / len(lu) else 0)
    assert s["sum_important"].item() == pytest.approx(sum(li))
    assert all(not v.requires_grad for v in s.values())

    empty = sft_go_stats(logp, mask, torch.zeros_like(mask))
    assert math.isnan(empty["loss_important"].item()) and empty["n_important"].item() == 0
    assert empty["worst_group"].item() == 0
    none = sft_go_stats(logp, torch.zeros_like(mask), imp)
    assert math.isnan(none["loss_ce"].item()) and none["worst_group"].item() == -1


# ------------------------------------------------------------------ lambda schedule


def test_lambda_schedule_values():
    assert lambda_schedule(0, 100, 0.8, 0.2) == pytest.approx(0.8)
    assert lambda_schedule(25, 100, 0.8, 0.2) == pytest.approx(0.6)
    assert lambda_schedule(50, 100, 0.8, 0.2) == pytest.approx(0.4)
    assert lambda_schedule(75, 100, 0.8, 0.2) == pytest.approx(0.2)  # 0.8 * 0.25 = 0.2
    assert lambda_schedule(90, 100, 0.8, 0.2) == pytest.approx(0.2)  # floored at lam_min
    assert lambda_schedule(500, 100, 0.8, 0.0) == 0.0
    # lam_min >= lam_max: static lam_max.
    assert lambda_schedule(0, 100, 0.5, 0.5) == 0.5
    assert lambda_schedule(99, 100, 0.5, 0.7) == 0.5


@pytest.mark.parametrize(
    "args,match",
    [((0, 10, 1.2, 0.0), "lam_max"), ((0, 10, 0.5, -0.1), "lam_min"), ((0, 0, 0.5, 0.1), "total_steps"),
     ((-1, 10, 0.5, 0.1), "step")],
)
def test_lambda_schedule_validates(args, match):
    with pytest.raises(ValueError, match=match):
        lambda_schedule(*args)


# ------------------------------------------------------------------ Rho-1


def ref_rho1_select(logp, mask, ref_logp, keep_ratio):
    idx = supervised(mask)
    if not idx:
        return torch.zeros_like(mask)
    flat = {i: n for n, i in enumerate(tuple(j) for j in torch.ones_like(mask).nonzero().tolist())}
    ranked = sorted(idx, key=lambda i: (-(ref_logp[i].item() - logp[i].item()), flat[i]))
    k = max(1, min(len(idx), math.floor(keep_ratio * len(idx) + 0.5)))
    keep = torch.zeros_like(mask)
    for i in ranked[:k]:
        keep[i] = True
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("keep_ratio", [0.05, 0.4, 0.6, 1.0])
def test_rho1_matches_reference(seed, keep_ratio):
    logp, mask = make_batch(seed)
    ref_logp = -4.0 * torch.rand(logp.shape, generator=torch.Generator().manual_seed(seed + 9), dtype=torch.float64)
    keep = rho1_select(logp, mask, ref_logp, keep_ratio)
    assert torch.equal(keep, ref_rho1_select(logp, mask, ref_logp, keep_ratio))
    assert not (keep & ~mask).any()

    def ref():
        kept = [-logp[i] for i in supervised(keep)]
        return sum(kept) / len(kept)

    assert_close_value_and_grad(lambda: rho1(logp, mask, ref_logp, keep_ratio), ref, logp)


def test_rho1_select_ties_keep_earliest_positions():
    logp = torch.full((2, 4), -1.0)
    mask = torch.tensor([[True, False, True, True], [True, True, False, True]])
    keep = rho1_select(logp, mask, torch.zeros_like(logp), 0.5)  # 6 supervised -> k = 3, all tied
    assert keep.tolist() == [[True, False, True, True], [False, False, False, False]]
    # Many ties in a larger batch: still the earliest positions (needs a stable sort).
    g = torch.Generator().manual_seed(0)
    big = -torch.randint(0, 2, (8, 500), generator=g).double()
    bmask = torch.rand(8, 500, generator=g) > 0.2
    keep = rho1_select(big, bmask, torch.zeros_like(big), 0.3)
    assert torch.equal(keep, ref_rho1_select(big, bmask, torch.zeros_like(big), 0.3))
    # k is at least 1 when there is a supervised token.
    assert rho1_select(logp, mask, torch.zeros_like(logp), 0.01).sum().item() == 1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rho1_equals_sft_go_lam1_with_excess_loss_grouping(seed):
    # Identity "Rho-1 = SFT-GO with lam = 1 and importance = excess loss". With a constant reference
    # loss, the excess loss ranks tokens by their own loss, so the kept (important) group holds the
    # highest losses and its mean is the max of the two group means: sft_go's max picks it.
    logp, mask = make_batch(seed)
    ref_logp = torch.full(logp.shape, -1.5, dtype=torch.float64)
    keep = rho1_select(logp, mask, ref_logp, 0.4)
    s = sft_go_stats(logp, mask, keep)
    assert s["loss_important"] >= s["loss_unimportant"]  # the premise of the identity
    v1, g1 = grad_of(lambda: rho1(logp, mask, ref_logp, 0.4), logp)
    v2, g2 = grad_of(lambda: sft_go(logp, mask, keep, 1.0), logp)
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(g1, g2)


def test_rho1_num_items_scaling():
    logp = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones_like(logp, dtype=torch.bool)
    ref_logp = torch.zeros_like(logp)
    # keep 0.4 of 5 -> 2 tokens (-5, -4): sum 9; num_items 5 -> 9 / (0.4 * 5) = 4.5 = the kept mean.
    assert rho1(logp, mask, ref_logp, 0.4, num_items=5).item() == pytest.approx(4.5)
    assert rho1(logp, mask, ref_logp, 0.4, num_items=10).item() == pytest.approx(2.25)
    # ... and matches sft_go(lam=1) with the same num_items (token-weighted group term).
    keep = rho1_select(logp, mask, ref_logp, 0.4)
    assert sft_go(logp, mask, keep, 1.0, num_items=10).item() == pytest.approx(2.25)


# ------------------------------------------------------------------ Target-SFT


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("residual", TARGET_RESIDUALS)
@pytest.mark.parametrize("gamma", [0.7, 0.0, "p"])
def test_target_sft_matches_reference(seed, residual, gamma):
    logits, labels, mask = make_logits(seed)
    ref_logits = torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed + 5), dtype=torch.float64)
    # Garbage at unsupervised rows must not leak.
    with torch.no_grad():
        logits[~mask] = math.nan
    kw = dict(gamma=gamma, residual=residual, topk=4, ref_logits=ref_logits)
    assert_close_value_and_grad(
        lambda: target_sft(logits, labels, mask, **kw), lambda: ref_target_sft(logits, labels, mask, **kw), logits
    )
    assert_close_value_and_grad(
        lambda: target_sft(logits, labels, mask, num_items=40, **kw),
        lambda: ref_target_sft(logits, labels, mask, num_items=40, **kw),
        logits,
    )


def test_target_sft_topk_larger_than_vocab():
    logits, labels, mask = make_logits(2)
    kw = dict(gamma=0.5, residual="topk")
    # topk >= V - 1 means "all other classes", i.e. the model distribution with y removed.
    torch.testing.assert_close(
        target_sft(logits, labels, mask, topk=100, **kw), ref_target_sft(logits, labels, mask, topk=V - 1, **kw)
    )


@pytest.mark.parametrize("residual", TARGET_RESIDUALS)
def test_target_sft_gamma1_is_sft(residual):
    logits, labels, mask = make_logits(4)
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    v, g = grad_of(lambda: target_sft(logits, labels, mask, 1.0, residual, ref_logits=logits.detach() + 1), logits)
    rv, rg = grad_of(lambda: sft(logp, mask), logits)
    torch.testing.assert_close(v, rv)
    torch.testing.assert_close(g, rg)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_target_sft_uniform_is_label_smoothing(eps):
    logits, labels, mask = make_logits(5)
    v, g = grad_of(lambda: target_sft(logits, labels, mask, 1 - eps, "uniform"), logits)
    rv, rg = grad_of(
        lambda: F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100, label_smoothing=eps),
        logits,
    )
    torch.testing.assert_close(v, rv)
    torch.testing.assert_close(g, rg)


def test_target_sft_gamma_p_model_residual_has_dft_gradient():
    logits, labels, mask = make_logits(6)
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    _, g = grad_of(lambda: target_sft(logits, labels, mask, "p", "model"), logits)
    _, rg = grad_of(lambda: dft(logp, mask), logits)
    torch.testing.assert_close(g, rg)
    assert g.abs().sum() > 0


def test_target_sft_upcasts_half_precision():
    logits, labels, mask = make_logits(7)
    v16 = target_sft(logits.detach().to(torch.bfloat16), labels, mask, 0.9, "model")
    assert v16.dtype == torch.float32
    assert v16.item() == pytest.approx(target_sft(logits.detach(), labels, mask, 0.9, "model").item(), rel=2e-2)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(residual="smooth"), "residual"),
        (dict(gamma=1.5), "gamma"),
        (dict(gamma="q"), "gamma"),
        (dict(residual="reference"), "ref_logits"),
        (dict(residual="topk", topk=0), "topk"),
    ],
)
def test_target_sft_validates(kw, match):
    logits, labels, mask = make_logits(0)
    with pytest.raises(ValueError, match=match):
        target_sft(logits, labels, mask, **kw)


def test_target_sft_rejects_bad_labels_and_shapes():
    logits, labels, mask = make_logits(0)
    with pytest.raises(ValueError, match="labels at supervised"):
        target_sft(logits, torch.full_like(labels, -100), mask)
    with pytest.raises(ValueError, match="mask shape"):
        target_sft(logits, labels, mask[:, :-1])
    with pytest.raises(ValueError, match="labels shape"):
        target_sft(logits, labels[0], mask)


# ------------------------------------------------------------------ groups beyond the paper


def test_quantile_group_ids_match_reference():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (4, 11), generator=g).double()  # many ties
    mask = torch.rand(4, 11, generator=g) > 0.3
    mask[3] = False
    mask[2, 2:] = False  # 2 tokens, fewer than G
    scores[~mask] = math.nan
    G = 3
    ids = quantile_group_ids(scores, mask, G)
    for r in range(4):
        pos = [t for t in range(11) if mask[r, t]]
        ranked = sorted(pos, key=lambda t: (scores[r, t].item(), t))
        for rank, t in enumerate(ranked):
            assert ids[r, t].item() == rank * G // len(pos)
        for t in range(11):
            if not mask[r, t]:
                assert ids[r, t].item() == -1
    # Sizes are balanced within a row.
    counts = [(ids[0] == k).sum().item() for k in range(G)]
    assert max(counts) - min(counts) <= 1


def test_quantile_group_ids_one_dim_and_leading_dims():
    scores = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0, 0.0])
    mask = torch.tensor([True, True, True, True, True, False])
    assert quantile_group_ids(scores, mask, 2).tolist() == [1, 0, 0, 0, 1, -1]  # ranks 0-2 -> 0, 3-4 -> 1
    s3 = torch.randn(2, 3, 5)
    m3 = torch.rand(2, 3, 5) > 0.2
    assert torch.equal(quantile_group_ids(s3, m3, 2).reshape(6, 5), quantile_group_ids(s3.reshape(6, 5), m3.reshape(6, 5), 2))


def ref_group_means(logp, mask, ids, G):
    groups = [[] for _ in range(G)]
    for i in supervised(mask):
        groups[int(ids[i])].append(-logp[i])
    return groups


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_items", [None, 45])
def test_sft_go_multi_matches_reference(seed, num_items):
    logp, mask = make_batch(seed)
    G = 4
    ids = torch.randint(0, G - 1, logp.shape, generator=torch.Generator().manual_seed(seed))  # group 3 empty
    ids[~mask] = -1

    def ref():
        groups = ref_group_means(logp, mask, ids, G)
        allg = [x for gr in groups for x in gr]
        n = len(allg)
        ce = sum(allg) / (num_items or n)
        means = [sum(gr) / len(gr) for gr in groups if gr]
        worst = max(means, key=lambda t: t.item())
        return 0.65 * ce + 0.35 * worst * (n / (num_items or n))

    assert_close_value_and_grad(lambda: sft_go_multi(logp, mask, ids, G, 0.35, num_items), ref, logp)
    sums, counts = group_sums(logp, mask, ids, G)
    assert counts.tolist() == [len(g) for g in ref_group_means(logp, mask, ids, G)]


def test_sft_go_multi_with_two_groups_equals_sft_go():
    logp, mask = make_batch(3)
    imp = important_mask(3)
    torch.testing.assert_close(sft_go_multi(logp, mask, imp.long(), 2, 0.5), sft_go(logp, mask, imp, 0.5))


def test_group_ids_out_of_range_is_a_clear_error():
    logp, mask = make_batch(0)
    ids = torch.zeros(logp.shape, dtype=torch.long)
    ids[mask.nonzero()[0].tolist()[0], mask.nonzero()[0].tolist()[1]] = 5
    with pytest.raises(ValueError, match="group_ids must lie in"):
        sft_go_multi(logp, mask, ids, 3, 0.5)
    with pytest.raises(ValueError, match="integer"):
        sft_go_multi(logp, mask, ids.double(), 3, 0.5)


def test_group_dro_step_reference_and_empty_groups_keep_weight():
    dro = GroupDRO(3, eta_q=0.5)
    q0 = dro.q.clone()
    q = dro.step(torch.tensor([1.0, 2.0, 0.5]))
    raw = [q0[g].item() * math.exp(0.5 * l) for g, l in enumerate([1.0, 2.0, 0.5])]
    assert q.tolist() == pytest.approx([r / sum(raw) for r in raw])
    # Group 1 empty (NaN) and group 2 empty (count 0): they keep their weight exactly.
    before = dro.q.clone()
    q2 = dro.step(torch.tensor([3.0, math.nan, 1.0]), counts=torch.tensor([4, 0, 0]))
    assert q2[1].item() == pytest.approx(before[1].item()) and q2[2].item() == pytest.approx(before[2].item())
    assert q2.sum().item() == pytest.approx(1.0) and q2[0].item() == pytest.approx(before[0].item())
    q3 = dro.step(torch.tensor([3.0, math.nan, 1.0]))
    assert q3[1].item() == pytest.approx(q2[1].item()) and q3[0] > q2[0]
    # Huge losses do not overflow.
    assert torch.isfinite(dro.step(torch.tensor([1e6, 0.0, 0.0]))).all()


def test_group_dro_state_dict_roundtrip():
    dro = GroupDRO(3, eta_q=0.1)
    dro.step(torch.tensor([1.0, 0.0, 2.0]))
    other = GroupDRO(3)
    other.load_state_dict(dro.state_dict())
    assert torch.equal(other.q, dro.q) and other.eta_q == 0.1
    assert torch.equal(other.step(torch.ones(3)), dro.step(torch.ones(3)))
    with pytest.raises(ValueError, match="num_groups"):
        GroupDRO(4).load_state_dict(dro.state_dict())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_items", [None, 45])
@pytest.mark.parametrize("empty_group", [False, True])
def test_group_dro_loss_matches_reference(seed, num_items, empty_group):
    logp, mask = make_batch(seed)
    G = 3
    ids = quantile_group_ids(-logp.detach().nan_to_num(), mask, G)
    if empty_group:
        ids = torch.where(ids == 1, torch.zeros_like(ids), ids)  # group 1 has no token
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)

    def ref():
        groups = ref_group_means(logp, mask, ids, G)
        allg = [x for gr in groups for x in gr]
        n = len(allg)
        present = [g for g in range(G) if groups[g]]
        weighted = sum(q[g].item() * sum(groups[g]) / len(groups[g]) for g in present)
        weighted = weighted / sum(q[g].item() for g in present)
        return 0.6 * sum(allg) / (num_items or n) + 0.4 * weighted * (n / (num_items or n))

    assert_close_value_and_grad(lambda: group_dro_loss(logp, mask, ids, q, 0.4, num_items), ref, logp)
    # A one-hot q on the worst group gives SFT-GO-multi.
    s, c = group_sums(logp, mask, ids, G)
    worst = int(torch.argmax(torch.where(c > 0, s.detach() / c.clamp(min=1), -math.inf)))
    q1 = F.one_hot(torch.tensor(worst), G).double()
    torch.testing.assert_close(group_dro_loss(logp, mask, ids, q1, 0.4), sft_go_multi(logp, mask, ids, G, 0.4))


# ------------------------------------------------------------------ degenerate inputs and validation


def test_all_masked_gives_zero_and_finite_grad():
    logp = torch.full((B, T), math.nan, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(B, T, dtype=torch.bool)
    ids = torch.full((B, T), -1)
    calls = [
        lambda: sft(logp, mask),
        lambda: dft(logp, mask, num_items=0),
        lambda: infosft(logp, mask),
        lambda: sft_go(logp, mask, mask, 0.5),
        lambda: sft_go(logp, mask, mask, 0.5, num_items=0),
        lambda: rho1(logp, mask, logp.detach(), 0.5),
        lambda: sft_go_multi(logp, mask, ids, 3, 0.5),
        lambda: group_dro_loss(logp, mask, ids, torch.ones(3) / 3, 0.5),
    ]
    for f in calls:
        v, g = grad_of(f, logp)
        assert v.item() == 0.0
        assert torch.equal(g, torch.zeros_like(g))
    logits = torch.full((B, T, V), math.nan, dtype=torch.float64, requires_grad=True)
    for residual in TARGET_RESIDUALS:
        v, g = grad_of(
            lambda: target_sft(logits, torch.full((B, T), -100), mask, "p", residual, ref_logits=logits.detach()),
            logits,
        )
        assert v.item() == 0.0 and torch.equal(g, torch.zeros_like(g))


def test_bad_inputs_raise_clear_errors():
    logp, mask = make_batch(0)
    with pytest.raises(ValueError, match="mask has shape"):
        sft(logp, mask[:, :-1])
    with pytest.raises(ValueError, match="floating-point"):
        sft(torch.zeros(B, T, dtype=torch.long), mask)
    with pytest.raises(ValueError, match="lam"):
        sft_go(logp, mask, mask, 1.5)
    with pytest.raises(ValueError, match="important has shape"):
        sft_go(logp, mask, mask[0], 0.5)
    with pytest.raises(ValueError, match="num_items"):
        sft(logp, mask, num_items=-3)
    with pytest.raises(ValueError, match="keep_ratio"):
        rho1(logp, mask, logp.detach(), 0.0)
    with pytest.raises(ValueError, match="num_groups"):
        quantile_group_ids(logp.detach(), mask, 0)
    with pytest.raises(ValueError, match="eta_q"):
        GroupDRO(2, eta_q=-1.0)


def test_objective_names():
    assert tuple(OBJECTIVES) == ("sft", "sft-go", "rho1", "dft", "infosft", "target-sft", "sft-go-dro")
    assert TARGET_RESIDUALS == ("uniform", "model", "topk", "reference")
