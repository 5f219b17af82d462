"""The objectives' pure pieces against slow references written from the formulas (Python loops over tokens): the
token weights, lambda's schedule, Target-SFT's chunk loss, the worst-group choice and the group statistics. The
training path of every objective is checked in test_objective_paths.py; the per-token head in test_token_head.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sftgo.objectives import (
    OBJECTIVES,
    TARGET_RESIDUALS,
    dft_weights,
    group_stats,
    infosft_weights,
    lambda_schedule,
    target_sft_chunk_loss,
    worst_onehot,
)
from tests.reference_objectives import Tok, infosft_weight, target_sft_token

V = 13


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
    ref = torch.tensor([infosft_weight(math.exp(v), 0.93) for v in logp.tolist()], dtype=dtype)
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


# ------------------------------------------------------------------ Target-SFT's chunk loss


def make_rows(seed, n=20, scale=2.0):
    """fp64 logits rows ``[n, V]`` (a leaf), targets ``[n]`` and reference logits ``[n, V]``."""
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (n,), generator=g)
    ref = torch.randn(n, V, generator=g, dtype=torch.float64)
    return z.requires_grad_(), y, ref


def ref_target_sft(z, y, gamma, residual, topk=10, ref_logits=None):
    """Sum over rows of ``-sum_k Q_k log q_k``, ``Q = gamma onehot(y) + (1 - gamma) pi`` (Q a constant): the slow
    per-token reference of tests/reference_objectives.py, and the "reference" residual ``pi = softmax(ref)`` here."""
    total = z.new_zeros(())
    for i in range(z.shape[0]):
        if residual != "reference":
            tok = Tok(logp=None, logits=z[i], target=int(y[i]), example=(0, i), importance=0.0, ref_logp=0.0)
            total = total + target_sft_token(tok, gamma, residual, topk)
            continue
        logq = torch.log_softmax(z[i], dim=-1)
        pi = torch.softmax(ref_logits[i], dim=-1).tolist()
        g = math.exp(logq[int(y[i])].item()) if gamma == "p" else gamma
        Q = torch.tensor([g * (k == int(y[i])) + (1 - g) * pi[k] for k in range(V)], dtype=z.dtype)
        total = total - (Q * logq).sum()
    return total


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("residual", TARGET_RESIDUALS)
@pytest.mark.parametrize("gamma", [0.7, 0.0, "p"])
def test_target_sft_chunk_loss_matches_reference(seed, residual, gamma):
    z, y, ref = make_rows(seed)
    kw = dict(gamma=gamma, residual=residual, topk=4, ref_logits=ref)
    assert_close_value_and_grad(lambda: target_sft_chunk_loss(z, y, **kw), lambda: ref_target_sft(z, y, **kw), z)


def test_target_sft_chunk_loss_topk_larger_than_vocab():
    z, y, _ = make_rows(2)
    # topk >= V - 1 means "all other classes", i.e. the model distribution with y removed.
    assert_close_value_and_grad(
        lambda: target_sft_chunk_loss(z, y, gamma=0.5, residual="topk", topk=100),
        lambda: ref_target_sft(z, y, 0.5, "topk", topk=V - 1),
        z,
    )


@pytest.mark.parametrize("residual", TARGET_RESIDUALS)
def test_target_sft_chunk_loss_gamma1_is_cross_entropy(residual):
    z, y, ref = make_rows(4)
    assert_close_value_and_grad(
        lambda: target_sft_chunk_loss(z, y, gamma=1.0, residual=residual, topk=3, ref_logits=ref),
        lambda: F.cross_entropy(z, y, reduction="sum"),
        z,
    )


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_target_sft_chunk_loss_uniform_is_label_smoothing(eps):
    z, y, _ = make_rows(5)
    assert_close_value_and_grad(
        lambda: target_sft_chunk_loss(z, y, gamma=1 - eps, residual="uniform"),
        lambda: F.cross_entropy(z, y, reduction="sum", label_smoothing=eps),
        z,
    )


def test_target_sft_chunk_loss_gamma_p_model_residual_has_dft_gradient():
    z, y, _ = make_rows(6)
    _, g = grad_of(lambda: target_sft_chunk_loss(z, y, gamma="p", residual="model"), z)
    # DFT's gradient on the logits: d(-sg(p_y) log p_y)/dz = p_y (softmax(z) - onehot(y)), row by row
    p = torch.softmax(z.detach(), dim=-1)
    want = torch.stack([p[i, int(y[i])] * (p[i] - F.one_hot(y[i], V).double()) for i in range(z.shape[0])])
    torch.testing.assert_close(g, want)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_target_sft_chunk_loss_upcasts_half_precision(dtype):
    z, y, _ = make_rows(7)
    v16 = target_sft_chunk_loss(z.detach().to(dtype), y, gamma=0.9, residual="model")
    assert v16.dtype == torch.float32
    assert v16.item() == pytest.approx(ref_target_sft(z.detach(), y, 0.9, "model").item(), rel=2e-2)


def test_target_sft_chunk_loss_rejects_an_unknown_residual():
    z, y, _ = make_rows(0)
    with pytest.raises(ValueError, match="residual must be one of"):
        target_sft_chunk_loss(z, y, gamma=0.5, residual="smooth")


# ------------------------------------------------------------------ worst group and group statistics


def ref_worst(means, counts):
    """Index of the non-empty group with the largest mean, ties to the lowest id; None when all are empty."""
    best = None
    for g, (m, c) in enumerate(zip(means, counts)):
        if c > 0 and (best is None or m > means[best]):
            best = g
    return best


def test_worst_onehot_ties_go_to_the_lowest_id():
    t = torch.tensor
    assert worst_onehot(t([1.0, 3.0, 3.0]), t([1.0, 1.0, 1.0])).tolist() == [0.0, 1.0, 0.0]
    assert worst_onehot(t([2.0, 2.0]), t([5.0, 1.0])).tolist() == [1.0, 0.0]


def test_worst_onehot_empty_groups_never_win():
    t = torch.tensor
    # the empty group has the largest "mean" (garbage) ...
    assert worst_onehot(t([0.5, 9.0, 0.7]), t([2.0, 0.0, 3.0])).tolist() == [0.0, 0.0, 1.0]
    # ... or ties with the only real group at the lowest id (all tokens certain: loss 0 everywhere)
    assert worst_onehot(t([0.0, 0.0]), t([0.0, 4.0])).tolist() == [0.0, 1.0]
    # a negative mean still beats an empty group
    assert worst_onehot(t([0.0, -1.0]), t([0.0, 2.0])).tolist() == [0.0, 1.0]


def test_worst_onehot_all_empty_is_zeros():
    out = worst_onehot(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert out.tolist() == [0.0, 0.0, 0.0] and out.dtype == torch.float64


@pytest.mark.parametrize("seed", range(6))
def test_worst_onehot_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    means = torch.randint(0, 3, (5,), generator=g).double()  # many ties
    counts = torch.randint(0, 3, (5,), generator=g).double()  # some empty groups
    want = ref_worst(means.tolist(), counts.tolist())
    got = worst_onehot(means, counts)
    assert got.tolist() == [float(k == want) for k in range(5)]


def test_group_stats_sums_and_counts():
    g = torch.Generator().manual_seed(0)
    ce = torch.rand(30, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 3, (30,), generator=g)  # group 3 of 4 is empty
    sums, counts = group_stats(ids, ce, 4)
    for k in range(4):
        members = [ce[i].item() for i in range(30) if int(ids[i]) == k]
        assert counts[k].item() == len(members)
        assert sums[k].item() == pytest.approx(sum(members))
    assert sums.dtype == ce.dtype and counts.dtype == ce.dtype


def test_objective_names():
    # the names and order users see (in --help and errors) stay; a new objective is one row after them
    assert tuple(OBJECTIVES)[:9] == ("sft", "sft-go", "rho1", "dft", "infosft", "target-sft", "sft-go-dro", "eaft",
                                     "asft")
    assert TARGET_RESIDUALS == ("uniform", "model", "topk", "reference")


def test_chord_weight_is_p_times_one_minus_p_token_by_token():
    from sftgo.objectives.weightings.chord import chord_weights

    logp = torch.log_softmax(torch.randn(6, 11, generator=torch.Generator().manual_seed(5)) * 4, -1).flatten()
    logp = torch.cat([logp, torch.tensor([0.0, -math.inf, math.log(0.5)])]).requires_grad_()
    w = chord_weights(logp)
    assert not w.requires_grad
    for lp, got in zip(logp.tolist(), w.tolist()):
        p = math.exp(lp)
        assert got == pytest.approx(p * (1 - p), abs=1e-7)
    assert w[-1].item() == pytest.approx(0.25) and w[-3].item() == 0.0 and w[-2].item() == 0.0


def test_chord_gradient_is_that_of_the_detached_weight_times_ce():
    """``--token_weight chord``: d/dlogits of ``sum_n sg(p_n (1 - p_n)) CE_n / K``, written here from the formula."""
    from types import SimpleNamespace

    from sftgo.objectives import compute_loss_func

    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(2, 6, 13, generator=g, dtype=torch.float64) * 3).requires_grad_()
    labels = torch.randint(0, 13, (2, 6), generator=g)
    labels[0, :2] = -100
    compute_loss_func("sft", token_weight="chord")(SimpleNamespace(logits=logits), labels).backward()
    got = logits.grad.clone()
    ref_logits = logits.detach().clone().requires_grad_()
    z, y = ref_logits[:, :-1].reshape(-1, 13), labels[:, 1:].reshape(-1)
    keep = y != -100
    ce = -torch.log_softmax(z[keep], -1).gather(1, y[keep, None]).squeeze(1)
    p = (-ce).exp().detach()
    ((p * (1 - p) * ce).sum() / keep.sum()).backward()
    torch.testing.assert_close(got, ref_logits.grad, atol=1e-7, rtol=1e-5)  # the head works in float32
    assert got.abs().sum() > 0
