"""StepStats without a Trainer: sums added over micro-batches and summed over processes give the metrics of the whole
step, under the names the trainer logs."""

from __future__ import annotations

import math

import pytest
import torch

from sftgo.step_stats import StepStats
from sftgo.tokens import TokenBatch

N = 37
CHANNELS = ["math", "code", "chat"]


def _step(seed=0, weights=True, important=True, channels=True):
    """One optimizer step's supervised tokens: (TokenBatch, log p, head stats, important mask, token weighting)."""
    g = torch.Generator().manual_seed(seed)
    cols = {}
    if weights:
        cols["loss_weight"] = torch.rand(N, generator=g) * 2
    if channels:  # channel 2 ("chat") only in the second half: a micro-batch without it
        cols["channel"] = torch.cat([torch.randint(0, 2, (N // 2,), generator=g),
                                     torch.randint(0, 3, (N - N // 2,), generator=g)]).float()
    tokens = TokenBatch(torch.randint(0, 50, (N,), generator=g), torch.zeros(N, dtype=torch.long),
                        torch.arange(N), cols)
    logp = -torch.rand(N, generator=g) * 6
    stats = {"entropy": torch.rand(N, generator=g) * 4, "correct": torch.rand(N, generator=g) < 0.3,
             "kl": torch.rand(N, generator=g)}
    imp = torch.rand(N, generator=g) < 0.3 if important else None
    return tokens, logp, stats, imp, logp.exp()


def _part(step, sl):
    tokens, logp, stats, imp, weight = step
    cols = {k: v[sl] for k, v in tokens.columns.items()}
    part = TokenBatch(tokens.targets[sl], tokens.example[sl], tokens.rows[sl], cols)
    return part, logp[sl], {k: v[sl] for k, v in stats.items()}, None if imp is None else imp[sl], weight[sl]


def _of(tokens, logp, stats, imp, weight, channels=CHANNELS):
    return StepStats.of(tokens, logp, stats, imp, weight, row_metrics=("kl",), num_channels=len(channels))


def _halves(step):
    return [_of(*_part(step, slice(0, 15))), _of(*_part(step, slice(15, N)))]


def _approx(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6, nan_ok=True), k


def test_two_micro_batches_sum_to_the_step():
    step = _step()
    acc = StepStats()
    for part in _halves(step):
        acc.add(part)
    got, want = acc.all_reduce(), _of(*step).all_reduce()
    assert sorted(got) == sorted(want) and len(want) == 24  # every sum: 23 fields and the row metric
    _approx({k: got[k] for k in sorted(want)}, {k: want[k] for k in sorted(want)})
    _approx(got.train_logs(CHANNELS, ("kl",)), want.train_logs(CHANNELS, ("kl",)))
    _approx(got.eval_logs(CHANNELS, ("kl",)), want.eval_logs(CHANNELS, ("kl",)))


def test_empty_window_logs_nothing():
    assert StepStats().all_reduce() is None
    assert StepStats().all_reduce(lambda v: v + 1) is None  # no collective on an empty window either


def test_fake_two_process_all_reduce_equals_one_process():
    """Process 0 holds the first micro-batch, process 1 the second; the all-reduce is the sum of their packed vectors
    (as accelerate's SUM reduce; the weights' extremes: the max of theirs), and gives the sums of one process that saw both."""
    step = _step(seed=1)
    rank0, rank1 = _halves(step)
    other, other_ext = rank1.packed(), rank1.extremes()
    got = rank0.all_reduce(lambda v: v + other, reduce_max=lambda v: torch.maximum(v, other_ext))
    want = _of(*step).all_reduce()
    _approx({k: got[k] for k in sorted(want)}, {k: want[k] for k in sorted(want)})
    _approx(got.train_logs(CHANNELS, ("kl",), {"lam": 0.5}), want.train_logs(CHANNELS, ("kl",), {"lam": 0.5}))
    _approx(got.eval_logs(CHANNELS, ("kl",)), want.eval_logs(CHANNELS, ("kl",)))


def test_entropy_written_after_add_is_counted():
    """The chunked head writes the entropies in its backward, after the micro-batch's sums were taken."""
    tokens, logp, stats, imp, weight = _step(seed=2)
    ent = stats["entropy"].clone()
    stats["entropy"] = torch.zeros(N)
    s = StepStats()
    s.add(_of(tokens, logp, stats, imp, weight))
    stats["entropy"].copy_(ent)  # the backward
    r = s.all_reduce()
    assert r["ent_sum"] == pytest.approx(float(ent.sum()), rel=1e-6)
    assert r["ent_imp_sum"] == pytest.approx(float(ent[imp].sum()), rel=1e-6)


def test_logged_means_equal_a_direct_computation():
    tokens, logp, stats, imp, weight = step = _step(seed=3)
    logs = _of(*step).all_reduce().train_logs(CHANNELS, ("kl",), {"lam": 0.9})
    w, ce, ch = tokens.columns["loss_weight"].double(), -logp.double(), tokens.columns["channel"].long()
    wmean = lambda sel: float((w * ce)[sel].sum() / w[sel].sum())  # noqa: E731
    mean = lambda x, sel: float(x.double()[sel].mean())  # noqa: E731
    every = torch.ones(N, dtype=torch.bool)
    want = {"loss_ce": wmean(every), "mean_p": mean(logp.exp(), every), "loss_important": wmean(imp),
            "loss_unimportant": wmean(~imp), "frac_important": float(imp.double().mean()),
            "mean_weight": mean(weight, every), "min_weight": min(weight.tolist()),
            "max_weight": max(weight.tolist()), "kl": mean(stats["kl"], every),
            "entropy": mean(stats["entropy"], every), "token_accuracy": mean(stats["correct"], every),
            "entropy_important": mean(stats["entropy"], imp), "entropy_unimportant": mean(stats["entropy"], ~imp),
            "token_accuracy_important": mean(stats["correct"], imp),
            "token_accuracy_unimportant": mean(stats["correct"], ~imp)}
    for name, sel in (("loss", every), ("loss_important", imp), ("loss_unimportant", ~imp)):
        for c, cname in enumerate(CHANNELS):
            if bool((sel & (ch == c)).any()):
                want[f"{name}/{cname}"] = wmean(sel & (ch == c))
    want.update(lam=0.9, tokens=N)
    _approx(logs, want)
    ev = _of(*step).all_reduce().eval_logs(CHANNELS, ("kl",))
    assert ev["eval_loss_worst"] == max(ev["eval_loss_important"], ev["eval_loss_unimportant"])
    assert ev["eval_loss_important"] == pytest.approx(wmean(imp), rel=1e-6)
    assert ev["eval_tokens_important"] == int(imp.sum()) and ev["eval_tokens"] == N


# The names (and order) main's SFTGoTrainer logged in metrics.jsonl for `sftgo train --objective sft-go` on the channels
# of tests/integration/test_channels.py with an eval set (step 1), less the Trainer's own keys (loss, grad_norm,
# learning_rate, epoch, eval_loss, eval_runtime, ...) and the step's info (worst_group, worst_group_step).
TRAIN_NAMES = ["loss_ce", "mean_p", "loss_important", "loss_unimportant", "frac_important", "entropy", "token_accuracy",
               "entropy_important", "entropy_unimportant", "token_accuracy_important", "token_accuracy_unimportant",
               "loss/math", "loss/code", "loss/chat", "loss_important/math", "loss_important/code",
               "loss_important/chat", "loss_unimportant/math", "loss_unimportant/code", "loss_unimportant/chat",
               "lam", "tokens"]
EVAL_NAMES = ["eval_loss_ce", "eval_loss_important", "eval_loss_unimportant", "eval_loss_worst",
              "eval_tokens_important", "eval_entropy", "eval_token_accuracy", "eval_entropy_important",
              "eval_entropy_unimportant", "eval_token_accuracy_important", "eval_token_accuracy_unimportant",
              "eval_loss/math", "eval_loss/code", "eval_loss/chat", "eval_loss_important/math",
              "eval_loss_important/code", "eval_loss_important/chat", "eval_loss_unimportant/math",
              "eval_loss_unimportant/code", "eval_loss_unimportant/chat", "eval_tokens"]


def test_logged_names_are_the_trainers():
    tokens, logp, stats, imp, _ = _step(seed=4)
    s = StepStats.of(tokens, logp, stats, imp, None, num_channels=3).all_reduce()  # sft-go: no token weighting
    assert list(s.train_logs(CHANNELS, (), {"lam": 0.9})) == TRAIN_NAMES
    assert list(s.eval_logs(CHANNELS, ())) == EVAL_NAMES
    # a run without groups, data weights, channels or recorded entropies logs the plain means only
    tokens, logp, _, _, _ = _step(seed=4, weights=False, important=False, channels=False)
    s = StepStats.of(tokens, logp, {}, None, None, num_channels=3).all_reduce()
    assert sorted(s) == ["ce_sum", "n", "p_sum"]
    assert list(s.train_logs(CHANNELS, ("kl",))) == ["loss_ce", "mean_p", "tokens"]
    assert list(s.eval_logs(CHANNELS, ("kl",))) == ["eval_loss_ce", "eval_tokens"]
    assert s.train_logs()["loss_ce"] == pytest.approx(float(-logp.double().mean()), rel=1e-6)


def test_objectives_read_the_sums_as_a_mapping():
    """``extra_metrics(sums, state)`` reads ``sums["imp_n"]`` / ``"imp_n" in sums`` (Rho-1's frac_kept)."""
    from sftgo.objectives import OBJECTIVES

    step = _step(seed=5)
    s = _of(*step).all_reduce()
    assert "imp_n" in s and "row_kl_sum" in s and "row_other_sum" not in s
    assert s["imp_n"] == int(step[3].sum()) and s["row_kl_sum"] == pytest.approx(float(step[2]["kl"].sum()), rel=1e-6)
    with pytest.raises(KeyError):
        s["nothing"]
    rho1 = OBJECTIVES["rho1"].__new__(OBJECTIVES["rho1"])  # extra_metrics reads no setting
    assert rho1.extra_metrics(s, {}) == {"frac_kept": pytest.approx(float(step[3].double().mean()), rel=1e-6)}
    plain = StepStats.of(*_part(_step(seed=5, important=False), slice(0, N))[:3]).all_reduce()
    assert "imp_n" not in plain and rho1.extra_metrics(plain, {}) == {}


def test_weight_extremes_over_micro_batches_and_processes():
    """``min_weight`` / ``max_weight`` are the smallest and largest t_n of the whole step, token by token, whatever the
    split: over micro-batches (an empty one included) and over processes (a MAX all-reduce of ``[max, -min]``)."""
    tokens, logp, stats, imp, _ = _step(seed=6)
    weight = (torch.randperm(N, generator=torch.Generator().manual_seed(6)).float() + 1) / (N + 1)  # distinct
    weight[3], weight[30] = 0.001, 0.999  # the min in the first micro-batch, the max in the second
    step = (tokens, logp, stats, imp, weight)
    want_min, want_max = min(weight.tolist()), max(weight.tolist())
    parts = [_of(*_part(step, sl)) for sl in (slice(0, 15), slice(15, 15), slice(15, N))]
    acc = StepStats()
    for part in parts:
        acc.add(part)
    one = acc.all_reduce().train_logs(CHANNELS, ("kl",))
    assert (one["min_weight"], one["max_weight"]) == (want_min, want_max)
    assert one["mean_weight"] == pytest.approx(float(weight.double().mean()), rel=1e-6)
    rank0, rank1 = StepStats(), StepStats()  # process 0: the first micro-batch and the empty one; process 1: the second
    rank0.add(parts[0]), rank0.add(parts[1]), rank1.add(parts[2])
    other, other_ext = rank1.packed(), rank1.extremes()
    two = rank0.all_reduce(lambda v: v + other, reduce_max=lambda v: torch.maximum(v, other_ext))
    assert two.train_logs(CHANNELS, ("kl",)) == one
    empty = StepStats.of(*_part(step, slice(0, 0))).all_reduce().train_logs()
    assert empty["mean_weight"] == 0.0 and math.isnan(empty["min_weight"]) and math.isnan(empty["max_weight"])
    plain = StepStats.of(*_part(step, slice(0, N))[:4], None).all_reduce()  # no token weighting: nothing logged
    assert plain.extremes() is None and "min_weight" not in plain.train_logs()
