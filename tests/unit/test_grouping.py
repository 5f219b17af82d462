import math

import numpy as np
import pytest
import torch

from sftgo.grouping import batch_groups, num_important, percentile_groups, percentile_groups_torch


def expected_k(n, eta):
    # slow and obvious: round half up of (100 - eta) * n / 100 with exact rational arithmetic
    from fractions import Fraction

    return math.floor((Fraction(100) - Fraction(str(eta))) * n / 100 + Fraction(1, 2))


def random_sequences(rng, count):
    seqs = []
    for _ in range(count):
        n = int(rng.integers(0, 40))
        kind = rng.integers(0, 3)
        if kind == 0:
            s = rng.normal(size=n)
        elif kind == 1:
            s = rng.integers(0, 3, size=n).astype(np.float64)  # many ties
        else:
            s = np.full(n, 1.5)  # all tied
        seqs.append(s)
    seqs += [np.zeros(0), np.array([2.0]), np.array([-1.0, -1.0])]
    return seqs


@pytest.mark.parametrize("eta", [0, 50, 90, 100, 33.3, 75])
def test_percentile_groups_exact_k_and_order(eta):
    rng = np.random.default_rng(int(eta * 10))
    seqs = random_sequences(rng, 200)
    groups = percentile_groups(seqs, eta)
    assert len(groups) == len(seqs)
    for s, g in zip(seqs, groups):
        assert g.dtype == bool and g.shape == s.shape
        assert int(g.sum()) == expected_k(len(s), eta)
        if g.any() and (~g).any():
            assert s[g].min() >= s[~g].max()
        # ties broken by position: among equal scores, important ones come first
        for v in np.unique(s):
            pos = np.flatnonzero(s == v)
            flags = g[pos]
            assert not np.any(np.diff(flags.astype(int)) > 0), "a later tied token is important before an earlier one"


def test_k_rounding_is_half_up_and_exact():
    assert int(num_important(5, 90)) == 1  # 0.5 -> 1 (banker's rounding would give 0)
    assert int(num_important(15, 90)) == 2  # 1.5 -> 2
    assert int(num_important(25, 90)) == 3  # 2.5 -> 3 (banker's: 2)
    assert int(num_important(10, 90)) == 1
    assert int(num_important(0, 90)) == 0
    assert int(num_important(7, 0)) == 7
    assert int(num_important(7, 100)) == 0


def test_hand_example():
    s = [np.array([0.1, 0.9, 0.5, 0.9, 0.2])]
    # eta = 60: k = round(0.4 * 5) = 2; the two 0.9s
    assert percentile_groups(s, 60)[0].tolist() == [False, True, False, True, False]
    # eta = 80: k = 1; tie between positions 1 and 3 -> earlier one
    assert percentile_groups(s, 80)[0].tolist() == [False, True, False, False, False]


def test_nan_ranks_lowest():
    s = [np.array([np.nan, 1.0, 0.0, np.nan])]
    assert percentile_groups(s, 50)[0].tolist() == [False, True, True, False]


@pytest.mark.parametrize("bad", [-1, 100.5, float("nan")])
def test_bad_percentile(bad):
    with pytest.raises(ValueError, match="percentile"):
        percentile_groups([np.zeros(3)], bad)
    with pytest.raises(ValueError, match="percentile"):
        percentile_groups_torch(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), bad)


@pytest.mark.parametrize("eta", [0, 50, 90, 100])
def test_batch_groups(eta):
    rng = np.random.default_rng(1)
    flat = rng.integers(0, 5, size=101).astype(np.float64)
    g = batch_groups(flat, eta)
    assert int(g.sum()) == expected_k(101, eta)
    if g.any() and (~g).any():
        assert flat[g].min() >= flat[~g].max()


def to_padded(seqs, T):
    scores = torch.full((len(seqs), T), 123.0, dtype=torch.float64)  # padding carries a high score on purpose
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for b, s in enumerate(seqs):
        scores[b, : len(s)] = torch.from_numpy(s)
        mask[b, : len(s)] = True
    return scores, mask


@pytest.mark.parametrize("eta", [0, 50, 90, 100, 12.5])
def test_torch_sequence_equals_numpy(eta):
    rng = np.random.default_rng(7)
    seqs = random_sequences(rng, 64) + [np.array([np.nan, 3.0, np.nan])]
    T = max(len(s) for s in seqs) + 3
    scores, mask = to_padded(seqs, T)
    out = percentile_groups_torch(scores, mask, eta, scope="sequence")
    ref = percentile_groups(seqs, eta)
    assert out.dtype == torch.bool and out.shape == (len(seqs), T)
    assert not out[~mask].any()
    for b, g in enumerate(ref):
        assert out[b, : len(g)].numpy().tolist() == g.tolist()


def test_torch_mask_in_middle_and_float32():
    # supervised tokens need not be a prefix (multi-turn): mask holes are never important
    scores = torch.tensor([[9.0, 1.0, 8.0, 2.0, 7.0, 3.0]], dtype=torch.float32)
    mask = torch.tensor([[False, True, False, True, False, True]])
    out = percentile_groups_torch(scores, mask, 50)  # n = 3 -> k = 2: scores 3 and 2
    assert out.tolist() == [[False, False, False, True, False, True]]


@pytest.mark.parametrize("eta", [0, 50, 90, 100])
def test_torch_batch_scope_equals_numpy(eta):
    rng = np.random.default_rng(3)
    seqs = random_sequences(rng, 20)
    T = max(len(s) for s in seqs)
    scores, mask = to_padded(seqs, T)
    out = percentile_groups_torch(scores, mask, eta, scope="batch")
    # flatten row-major over supervised positions: ties broken by (row, position)
    flat = scores[mask].numpy()
    ref = batch_groups(flat, eta)
    assert out[mask].numpy().tolist() == ref.tolist()
    assert not out[~mask].any()


def test_torch_bad_scope_and_shapes():
    with pytest.raises(ValueError, match="scope"):
        percentile_groups_torch(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), 90, scope="token")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        percentile_groups_torch(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool), 90)
