"""Per-token head (token_logp, weighted_nll, chunked_loss) vs the naive full-logits path: values and gradients (fp32
and fp64). The coefficients and chunk losses are the objectives' pieces (sftgo.objectives); the references are slow
loops over the supervised tokens of the full logits, written here."""

import math

import pytest
import torch
import torch.nn.functional as F

from sftgo.objectives import dft_weights, infosft_weights, target_sft_chunk_loss, worst_onehot
from sftgo.token_head import Coef, GroupCoef, chunked_loss, naive_token_logp, token_logp, weighted_nll
from tests.reference_objectives import infosft_weight

N, H, V = 37, 16, 101
ATOL = 1e-5


def make(dtype=torch.float32, seed=0, ignore_every=4, n=N):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, H, generator=g, dtype=dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=g, dtype=dtype) * 0.5).requires_grad_()
    targets = torch.randint(0, V, (n,), generator=g)
    if ignore_every:
        targets[::ignore_every] = -100  # positions 0, 4, 8, ... are unsupervised
    return hidden, weight, targets


def grads(loss, hidden, weight):
    return torch.autograd.grad(loss, (hidden, weight))


def assert_close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------------------------------------


def test_naive_token_logp_matches_cross_entropy_formula():
    hidden, weight, targets = make()
    got = naive_token_logp(hidden, weight, targets)
    # independent formula: -CE per token, with ignore_index giving 0
    want = -F.cross_entropy(hidden @ weight.T, targets, ignore_index=-100, reduction="none")
    assert_close(got, want)
    assert bool((got[targets == -100] == 0).all())
    assert bool((got[targets != -100] < 0).all())


# ---------------------------------------------------------------------------------------------------------
# token_logp (recompute backward)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 37, 1024])
@pytest.mark.parametrize("ignore_every", [0, 4])
def test_token_logp_matches_naive_value_and_grads(chunk_size, ignore_every):
    hidden, weight, targets = make(ignore_every=ignore_every)
    upstream = torch.randn(N, generator=torch.Generator().manual_seed(1))
    ref = naive_token_logp(hidden, weight, targets)
    got = token_logp(hidden, weight, targets, chunk_size=chunk_size)
    assert got.shape == (N,)
    assert_close(got, ref)
    assert bool((got[targets == -100] == 0).all())
    g_ref = grads((ref * upstream).sum(), hidden, weight)
    g_got = grads((got * upstream).sum(), hidden, weight)
    for a, b in zip(g_got, g_ref):
        assert_close(a, b)
    if ignore_every:  # no gradient reaches ignored rows of hidden
        assert bool((g_got[0][targets == -100] == 0).all())


def test_token_logp_batched_shape():
    hidden, weight, targets = make(n=36)
    h3, t3 = hidden.reshape(4, 9, H), targets.reshape(4, 9)
    got = token_logp(h3, weight, t3, chunk_size=7)
    assert got.shape == (4, 9)
    assert_close(got, naive_token_logp(hidden, weight, targets).reshape(4, 9))


def test_token_logp_all_ignored():
    hidden, weight, _ = make()
    targets = torch.full((N,), -100)
    got = token_logp(hidden, weight, targets, chunk_size=5)
    assert bool((got == 0).all())
    gh, gw = grads(got.sum(), hidden, weight)  # backward must work and give zeros
    assert bool((gh == 0).all()) and bool((gw == 0).all())


def test_token_logp_gradcheck_float64():
    hidden, weight, targets = make(dtype=torch.float64, n=7)
    hidden = hidden[:, :5].detach().clone().requires_grad_()
    weight = weight[:11, :5].detach().clone().requires_grad_()
    targets = targets.clamp(max=10)
    targets[0] = -100
    assert torch.autograd.gradcheck(lambda h, w: token_logp(h, w, targets, chunk_size=3), (hidden, weight))


def test_token_logp_frozen_weight():
    hidden, weight, targets = make()
    w = weight.detach()
    got = token_logp(hidden, w, targets, chunk_size=6)
    (gh,) = torch.autograd.grad(got.sum(), hidden)
    (gh_ref,) = torch.autograd.grad(naive_token_logp(hidden, w, targets).sum(), hidden)
    assert_close(gh, gh_ref)


def test_token_logp_bfloat16_close_to_fp32():
    hidden, weight, targets = make()
    got = token_logp(hidden.detach().bfloat16(), weight.detach().bfloat16(), targets, chunk_size=8)
    assert got.dtype == torch.float32  # softmax math is done in fp32 for half inputs
    ref = naive_token_logp(hidden.detach(), weight.detach(), targets)
    assert (got - ref).abs().max() < 0.1


# ---------------------------------------------------------------------------------------------------------
# weighted_nll (gradients computed in the forward) vs slow loops over the naive full logits
# ---------------------------------------------------------------------------------------------------------


def ref_rows(hidden, weight, targets):
    """``[(position, differentiable log p)]`` of the supervised positions, from the full ``[N, V]`` logits."""
    logprobs = torch.log_softmax(hidden.reshape(-1, hidden.shape[-1]) @ weight.T, dim=-1)
    flat = targets.reshape(-1).tolist()
    return [(n, logprobs[n, y]) for n, y in enumerate(flat) if y != -100]


def ref_weighted(hidden, weight, targets, w_of):
    """``sum_n -w_n * log p_n`` over supervised positions; ``w_of(n, p)`` a Python float (so no gradient through it)."""
    total = hidden.new_zeros(())
    for n, lp in ref_rows(hidden, weight, targets):
        total = total - w_of(n, math.exp(lp.item())) * lp
    return total


REF_W = {
    "sft": lambda n, p: 1.0,
    "dft": lambda n, p: p,
    "infosft": lambda n, p: infosft_weight(p, 0.93),
    "infosft_p07": lambda n, p: infosft_weight(p, 0.7),
}


def ref_worst_group(hidden, weight, targets, ids, G, lam):
    """SFT-GO (Eq. 3-4) times the supervised count n: ``(1 - lam) sum_n CE_n + lam n max_g mean_{n in g} CE_n``, the
    max over non-empty groups, ties to the lowest id."""
    rows = ref_rows(hidden, weight, targets)
    groups = [[] for _ in range(G)]
    for n, lp in rows:
        groups[int(ids.reshape(-1)[n])].append(-lp)
    total = hidden.new_zeros(()) + 0.0 * weight.sum()  # connected to both inputs even with no supervised row
    if not rows:
        return total
    worst = None
    for g in groups:  # ascending ids: a later group needs a strictly larger mean
        if g and (worst is None or (sum(g) / len(g)).item() > worst.item()):
            worst = sum(g) / len(g)
    return total + (1 - lam) * sum(-lp for _, lp in rows) + lam * len(rows) * worst


# The head coefficients of the objectives, built from sftgo.objectives' pieces as the objectives do.
def pointwise_coef(name):
    if name == "sft":
        return 1.0
    if name == "dft":
        return lambda lp, s, e: dft_weights(lp)
    P = 0.7 if name == "infosft_p07" else 0.93
    return lambda lp, s, e: infosft_weights(lp, P)


def worst_group_coef(ids, G, lam):
    """``c_g = (1 - lam) + lam * [g worst] * n / C_g``, decided inside the head from the micro-batch's group means."""

    def resolve(sums, counts):
        c = counts.clamp(min=1)
        return (1 - lam) + lam * worst_onehot(sums / c, counts) * counts.sum() / c

    return GroupCoef(ids, G, resolve)


def check_head(hidden, weight, targets, coef, ref, chunk_size=6):
    loss, logp = weighted_nll(hidden, weight, targets, coef, chunk_size=chunk_size)
    assert loss.dim() == 0
    assert not logp.requires_grad
    assert_close(logp, naive_token_logp(hidden, weight, targets).detach())
    assert_close(loss, ref)
    for a, b in zip(grads(loss, hidden, weight), grads(ref, hidden, weight)):
        assert_close(a, b)
    return loss


@pytest.mark.parametrize("name", ["sft", "dft", "infosft", "infosft_p07"])
@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
@pytest.mark.parametrize("ignore_every", [0, 4])
def test_weighted_nll_pointwise_coefficients(name, chunk_size, ignore_every):
    hidden, weight, targets = make(ignore_every=ignore_every)
    ref = ref_weighted(hidden, weight, targets, REF_W[name])
    check_head(hidden, weight, targets, pointwise_coef(name), ref, chunk_size=chunk_size)


def test_weighted_nll_infosft_weights_not_trivial():
    # make sure the InfoSFT case exercises both the zero (p >= P) and the positive branch of the weight
    hidden, weight, targets = make()
    with torch.no_grad():
        confident = 3
        targets[confident] = 7
        weight[7] = hidden[confident] * 4.0  # logit of token 7 dominates at row 3 -> p ~ 1 > 0.93
    logp = naive_token_logp(hidden, weight, targets)
    w = infosft_weights(logp)
    sup = targets != -100
    assert bool((w[sup] == 0).any()) and bool((w[sup] > 0).any())
    check_head(hidden, weight, targets, pointwise_coef("infosft"), ref_weighted(hidden, weight, targets, REF_W["infosft"]))


def test_weighted_nll_tensor_coefficient_ignores_unsupervised_positions():
    hidden, weight, targets = make()
    c = torch.rand(N, generator=torch.Generator().manual_seed(4)) * 2
    c[targets == -100] = math.nan  # a coefficient at an ignored position must never be read
    ref = ref_weighted(hidden, weight, targets, lambda n, p: c[n].item())
    check_head(hidden, weight, targets, c, ref)


def imp_mask(n=N, seed=3, frac=0.3):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) < frac


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("frac", [0.3, 0.8])  # important is the smaller / the larger group
@pytest.mark.parametrize("chunk_size", [5, 1024])
def test_weighted_nll_worst_group(lam, frac, chunk_size):
    hidden, weight, targets = make()
    ids = imp_mask(frac=frac).long()
    ref = ref_worst_group(hidden, weight, targets, ids, 2, lam)
    check_head(hidden, weight, targets, worst_group_coef(ids, 2, lam), ref, chunk_size=chunk_size)


@pytest.mark.parametrize("which", ["none_important", "all_important"])
def test_weighted_nll_worst_group_single_group_is_plain_sft(which):
    hidden, weight, targets = make()
    ids = torch.zeros(N, dtype=torch.long) if which == "none_important" else torch.ones(N, dtype=torch.long)
    loss = check_head(hidden, weight, targets, worst_group_coef(ids, 2, 0.6),
                      ref_worst_group(hidden, weight, targets, ids, 2, 0.6))
    # one non-empty group: its mean is the overall mean, so any lam gives the plain CE sum
    assert_close(loss, ref_weighted(hidden, weight, targets, REF_W["sft"]))


def test_weighted_nll_worst_group_both_choices_covered():
    # the gradient path differs with which group is worse; find seeds giving each and check both
    seen = set()
    for seed in range(20):
        hidden, weight, targets = make(seed=seed)
        important = imp_mask(seed=seed)
        logp = naive_token_logp(hidden, weight, targets).detach()
        sup = targets != -100
        worst_g1 = bool((-logp[sup & important]).mean() > (-logp[sup & ~important]).mean())
        if worst_g1 in seen:
            continue
        seen.add(worst_g1)
        ids = important.long()
        check_head(hidden, weight, targets, worst_group_coef(ids, 2, 0.7),
                   ref_worst_group(hidden, weight, targets, ids, 2, 0.7))
    assert seen == {True, False}


def test_weighted_nll_worst_group_tie_goes_to_the_lowest_id():
    # exact tie: integer-valued fp64 inputs, row 1 duplicates row 0 with the same target, one per group
    g = torch.Generator().manual_seed(5)
    hidden = torch.randint(-2, 3, (2, 4), generator=g).double().requires_grad_()
    weight = torch.randint(-2, 3, (9, 4), generator=g).double().requires_grad_()
    with torch.no_grad():
        hidden[1] = hidden[0]
    targets = torch.tensor([3, 3])
    ids = torch.tensor([1, 0])
    loss, _ = weighted_nll(hidden, weight, targets, worst_group_coef(ids, 2, 1.0), chunk_size=1)
    gh, _ = grads(loss, hidden, weight)
    # lam = 1: only the worst group (id 0 = row 1) gets a gradient
    assert bool((gh[0] == 0).all()) and bool((gh[1] != 0).any())
    check_head(hidden, weight, targets, worst_group_coef(ids, 2, 0.5),
               ref_worst_group(hidden, weight, targets, ids, 2, 0.5), chunk_size=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_nll_many_groups_with_an_empty_one(seed):
    # G = 4, group 3 empty; the largest group (the head's unit-coefficient pass) is not always group 0
    hidden, weight, targets = make(seed=seed)
    ids = torch.randint(0, 3, (N,), generator=torch.Generator().manual_seed(seed + 10))
    ref = ref_worst_group(hidden, weight, targets, ids, 4, 0.35)
    check_head(hidden, weight, targets, worst_group_coef(ids, 4, 0.35), ref, chunk_size=4)


def test_weighted_nll_all_ignored():
    hidden, weight, _ = make()
    targets = torch.full((N,), -100)
    coefs = [1.0, pointwise_coef("dft"), pointwise_coef("infosft"), torch.ones(N),
             worst_group_coef(imp_mask().long(), 2, 0.5)]
    for coef in coefs:
        loss, logp = weighted_nll(hidden, weight, targets, coef)
        assert loss.item() == 0.0 and bool((logp == 0).all())
        gh, gw = grads(loss, hidden, weight)
        assert bool((gh == 0).all()) and bool((gw == 0).all())


def test_weighted_nll_scales_by_upstream_grad_and_batched_shape():
    hidden, weight, targets = make(n=36)
    ids = imp_mask(n=36).long()
    for coef, ref in [
        (pointwise_coef("dft"), ref_weighted(hidden, weight, targets, REF_W["dft"])),
        (worst_group_coef(ids.reshape(4, 9), 2, 0.5), ref_worst_group(hidden, weight, targets, ids, 2, 0.5)),
    ]:
        loss, logp = weighted_nll(hidden.reshape(4, 9, H), weight, targets.reshape(4, 9), coef, chunk_size=7)
        assert logp.shape == (4, 9)
        assert_close(loss, ref)
        for a, b in zip(grads(3.0 * loss, hidden, weight), grads(3.0 * ref, hidden, weight)):
            assert_close(a, b)


def test_weighted_nll_backward_twice_is_a_clear_error():
    hidden, weight, targets = make()
    loss, _ = weighted_nll(hidden, weight, targets, 1.0)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        loss.backward()


def test_weighted_nll_frozen_weight_and_hidden_grads_accumulate():
    hidden, weight, targets = make()
    w = weight.detach()
    loss, _ = weighted_nll(hidden, w, targets, 1.0, chunk_size=4)
    loss.backward()
    (gh_ref,) = torch.autograd.grad(-naive_token_logp(hidden, w, targets).sum(), hidden)
    assert_close(hidden.grad, gh_ref)


# ---------------------------------------------------------------------------------------------------------
# chunked_loss (Target-SFT per chunk, activation-checkpointed) vs the same loss on the full logits at once.
# target_sft_chunk_loss itself is checked against a slow reference in test_objectives.py.
# ---------------------------------------------------------------------------------------------------------


def target_fn(gamma, residual, ref_weight=None, topk=5):
    """The head's per-chunk fn, as TargetSFT builds it: reference logits from the extra rows, never differentiated."""

    def fn(z, y, rh):
        ref = None
        if rh is not None:
            with torch.no_grad():
                ref = rh @ ref_weight.T
        return target_sft_chunk_loss(z, y, gamma=gamma, residual=residual, topk=topk, ref_logits=ref)

    return fn


def ref_inputs(n=N, shape=None):
    g = torch.Generator().manual_seed(9)
    rh, rw = torch.randn(n, 8, generator=g), torch.randn(V, 8, generator=g)
    return rh if shape is None else rh.reshape(*shape, 8), rw


@pytest.mark.parametrize("residual", ["uniform", "model", "topk", "reference"])
@pytest.mark.parametrize("gamma", [0.7, "p"])
@pytest.mark.parametrize("chunk_size", [6, 1024])
def test_chunked_target_sft(residual, gamma, chunk_size):
    hidden, weight, targets = make()
    sup = targets != -100
    rh, rw = ref_inputs() if residual == "reference" else (None, None)
    got = chunked_loss(hidden, weight, targets, target_fn(gamma, residual, rw), extra=rh, chunk_size=chunk_size)
    # the naive path: the full [N, V] logits of the supervised rows in one call
    ref = target_sft_chunk_loss((hidden @ weight.T)[sup], targets[sup], gamma=gamma, residual=residual, topk=5,
                                ref_logits=None if rh is None else rh[sup] @ rw.T)
    assert_close(got, ref)
    for a, b in zip(grads(got, hidden, weight), grads(ref, hidden, weight)):
        assert_close(a, b)


def test_chunked_loss_batched_shape_slices_extra_like_the_rows():
    hidden, weight, targets = make(n=36)
    rh, rw = ref_inputs(n=36)
    fn = target_fn(0.6, "reference", rw)
    flat = chunked_loss(hidden, weight, targets, fn, extra=rh, chunk_size=7)
    batched = chunked_loss(hidden.reshape(4, 9, H), weight, targets.reshape(4, 9), fn, extra=rh.reshape(4, 9, 8),
                           chunk_size=7)
    assert_close(batched, flat)
    # the reference rows matter: other rows give another loss
    assert (chunked_loss(hidden, weight, targets, fn, extra=rh.flip(0), chunk_size=7) - flat).abs() > 1e-3


def test_chunked_loss_all_ignored():
    hidden, weight, _ = make()
    loss = chunked_loss(hidden, weight, torch.full((N,), -100), target_fn(0.5, "uniform"))
    assert loss.item() == 0.0
    gh, gw = grads(loss, hidden, weight)
    assert bool((gh == 0).all()) and bool((gw == 0).all())


class _MaxProbCoef(Coef):
    """A coefficient kind written outside sftgo: ``c_n = 2 * max_v p_n(v)``, read from each chunk's logits row."""

    weighted = True

    def __init__(self):
        self.of_row = lambda z: torch.softmax(z, dim=-1).amax(dim=-1)

    def chunk(self, lp, s, e, row=None):
        return 2.0 * row, row


@pytest.mark.parametrize("chunk_size", [5, 512])
def test_weighted_nll_takes_any_coefficient_kind(chunk_size):
    """The kernels only ask a coefficient what the Coef protocol declares: a new kind (its own of_row and chunk) runs
    through the fused pass like the built-in ones, with its token weighting recorded."""
    from sftgo.token_head import RowCoef, weighted_nll_rows

    hidden, weight, targets = make(dtype=torch.float64, ignore_every=0)
    mine = _MaxProbCoef()
    stats, ref_stats = {}, {}
    loss, lp = weighted_nll_rows(hidden, weight, targets, mine, chunk_size, stats=stats)
    ref, ref_lp = weighted_nll_rows(hidden, weight, targets, RowCoef(mine.of_row, scale=2.0), chunk_size,
                                    stats=ref_stats)
    p = torch.softmax(hidden.detach() @ weight.detach().T, dim=-1)
    expected = -(2.0 * p.amax(dim=-1) * p.gather(1, targets[:, None]).squeeze(1).log()).sum()
    assert_close(loss, expected)
    assert torch.equal(loss, ref) and torch.equal(lp, ref_lp)
    assert torch.equal(stats["token_weight"], ref_stats["token_weight"]) and torch.equal(stats["coef"], ref_stats["coef"])
    for a, b in zip(grads(loss, hidden, weight), grads(ref, hidden, weight)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------
# bad input -> clear ValueError
# ---------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_error():
    hidden, weight, targets = make()
    with pytest.raises(ValueError, match="weight"):
        token_logp(hidden, weight.T, targets)
    with pytest.raises(ValueError, match="shape"):
        token_logp(hidden, weight, targets[:-1])
    bad = targets.clone()
    bad[1] = V
    with pytest.raises(ValueError, match="outside"):
        token_logp(hidden, weight, bad)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logp(hidden, weight, targets, chunk_size=0)
    with pytest.raises(ValueError, match="outside"):
        weighted_nll(hidden, weight, bad, 1.0)
    with pytest.raises(ValueError, match="coef must be"):
        weighted_nll(hidden, weight, targets, "dft")
    with pytest.raises(ValueError, match="coef must be"):
        weighted_nll(hidden, weight, targets, torch.ones(N - 1))
    with pytest.raises(ValueError, match="GroupCoef ids"):
        weighted_nll(hidden, weight, targets, worst_group_coef(torch.zeros(N - 1, dtype=torch.long), 2, 0.5))
    with pytest.raises(ValueError, match="backend"):
        weighted_nll(hidden, weight, targets, 1.0, backend="triton")
    with pytest.raises(ValueError, match="liger"):
        weighted_nll(hidden, weight, targets, 1.0, backend="liger")  # CPU tensors / not installed


# ---------------------------------------------------------------------------------------------------------
# memory: no [N, V] tensor is ever created by the chunked paths (forward + backward)
# ---------------------------------------------------------------------------------------------------------


def largest_tensor_created(fn):
    """Run fn() and return the largest numel among all tensors produced by aten ops (forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    sizes = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            sizes.extend(x.numel() for x in tree_leaves(out) if isinstance(x, torch.Tensor))
            return out

    with Record():
        fn()
    return max(sizes)


@pytest.mark.parametrize(
    "run",
    [
        lambda h, w, t: token_logp(h, w, t, chunk_size=8).sum().backward(),
        lambda h, w, t: weighted_nll(h, w, t, pointwise_coef("infosft"), chunk_size=8)[0].backward(),
        lambda h, w, t: weighted_nll(h, w, t, worst_group_coef(imp_mask().long(), 2, 0.5), chunk_size=8)[0].backward(),
        lambda h, w, t: chunked_loss(h, w, t, target_fn(0.5, "topk"), chunk_size=8).backward(),
    ],
    ids=["token_logp", "weighted_nll_infosft", "weighted_nll_worst_group", "chunked_target_sft"],
)
def test_no_full_logits_tensor(run):
    hidden, weight, targets = make()
    targets[targets == -100] = 1  # all supervised: the chunks cover all N rows
    biggest = largest_tensor_created(lambda: run(hidden, weight, targets))
    # the weight gradient [V, H] (1616) and one [8, V] tile (808) are allowed; [N, V] (3737) is not
    assert biggest <= max(V * H, 8 * V) < N * V
    naive = largest_tensor_created(lambda: naive_token_logp(hidden, weight, targets).sum().backward())
    assert naive >= N * V  # the probe does see the naive path's full logits


# ---------------------------------------------------------------------------------------------------------
# a coefficient with its own loss value (the power family): value sum scale_n f_n, gradient c_n's, on every head
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("window", ["none", "top", "bottom"])
@pytest.mark.parametrize("grouped", [False, True])
def test_power_value_and_gradient_on_the_fused_chunked_and_naive_heads(window, grouped):
    """``--token_weight power`` (alpha 0.5): the fused head (chunks 5 and 1024) and autograd through the chunked and
    the naive log p return ``sum scale_n f(p_n)``, ``f = (1 - p^0.5) / 0.5`` inside the window, and its gradient; as a
    GroupCoef's base, the group factors come from the groups' sums of ``scale_n f_n`` (held constant)."""
    from sftgo.objectives import TOKEN_WEIGHTS, ObjectiveArgs
    from sftgo.token_head import TokenCoef
    from sftgo.token_head.heads import _weighted_from_logp

    hidden, weight, targets = make(dtype=torch.float64, ignore_every=0)
    with torch.no_grad():
        ps = naive_token_logp(hidden, weight, targets).exp().sort().values
    q = float(ps[N // 2] + ps[N // 2 + 1]) / 2  # between two tokens: the window holds about half of them
    args = ObjectiveArgs(objective="sft", token_weight="power", power_alpha=0.5, power_window=window, power_q=q)
    scale = 0.5 + torch.rand(N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ids = imp_mask().long()
    resolve = lambda s, c: torch.tensor([1.0, 3.0], dtype=s.dtype) * s / c  # noqa: E731 -- factors from the sums

    def coef():
        base = TokenCoef(scale, **TOKEN_WEIGHTS["power"](args).fns())
        return GroupCoef(ids, 2, resolve, base=base) if grouped else base

    lp = naive_token_logp(hidden, weight, targets)
    p = lp.exp()
    inside = {"none": torch.ones_like(p), "top": (p >= q).double(), "bottom": (p <= q).double()}[window]
    assert window == "none" or 0 < int(inside.sum()) < N
    f = (1 - p ** 0.5) / 0.5 * inside
    if grouped:
        S = torch.zeros(2, dtype=torch.float64).index_add(0, ids, (scale * f).detach())
        C = torch.zeros(2, dtype=torch.float64).index_add(0, ids, scale)
        ref = (resolve(S, C)[ids] * scale * f).sum()
    else:
        ref = (scale * f).sum()
    want = grads(ref, hidden, weight)
    got = {f"fused-{cs}": weighted_nll(hidden, weight, targets, coef(), chunk_size=cs)[0] for cs in (5, 1024)}
    got["chunked"] = _weighted_from_logp(token_logp(hidden, weight, targets, chunk_size=5), coef())[0]
    got["naive"] = _weighted_from_logp(naive_token_logp(hidden, weight, targets), coef())[0]
    for name, loss in got.items():
        assert_close(loss, ref.detach())
        for a, b in zip(grads(loss, hidden, weight), want):
            assert_close(a, b)
