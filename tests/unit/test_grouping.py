import math

import numpy as np
import pytest
import torch

from sftgo.grouping import num_important, percentile_groups, percentile_groups_flat, quantile_groups_flat


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
        percentile_groups_flat(torch.zeros(3), torch.zeros(3, dtype=torch.long), bad)


def ref_flat(scores, segments, eta):
    """Slow and obvious: per segment, sort positions by (-score, position) with NaN last, mark the first k."""
    out = [False] * len(scores)
    for seg in set(segments):
        pos = [i for i in range(len(scores)) if segments[i] == seg]
        key = lambda i: (1, 0.0, i) if math.isnan(scores[i]) else (0, -scores[i], i)  # noqa: E731
        for i in sorted(pos, key=key)[: expected_k(len(pos), eta)]:
            out[i] = True
    return out


@pytest.mark.parametrize("eta", [0, 50, 90, 100, 12.5, 33.3])
def test_flat_matches_reference_interleaved_segments(eta):
    # segments interleaved and out of order (packing / padding-free layouts), many ties, NaN
    rng = np.random.default_rng(int(eta * 7) + 1)
    n = 157
    scores = rng.integers(0, 4, size=n).astype(np.float64)
    scores[rng.random(n) < 0.1] = np.nan
    segments = rng.integers(0, 9, size=n)
    out = percentile_groups_flat(torch.from_numpy(scores), torch.from_numpy(segments), eta)
    assert out.dtype == torch.bool
    assert out.tolist() == ref_flat(scores.tolist(), segments.tolist(), eta)


@pytest.mark.parametrize("n,eta,k", [(5, 90, 1), (15, 90, 2), (25, 90, 3), (45, 90, 5), (2, 75, 1), (6, 75, 2)])
def test_flat_k_is_half_up_at_every_tie_of_rounding(n, eta, k):
    # (100 - eta) * n / 100 lands exactly on x.5: half-up gives x + 1 (half-to-even would give 2 for 2.5, 4 for 4.5)
    scores = torch.arange(n, dtype=torch.float32)
    assert int(percentile_groups_flat(scores, torch.zeros(n, dtype=torch.long), eta).sum()) == k
    assert k == expected_k(n, eta)


def test_batch_scope_is_one_segment():
    rng = np.random.default_rng(3)
    flat = rng.integers(0, 5, size=101).astype(np.float64)
    out = percentile_groups_flat(torch.from_numpy(flat), torch.zeros(101, dtype=torch.long), 90)
    assert out.tolist() == ref_flat(flat.tolist(), [0] * 101, 90)


def test_quantile_groups_match_reference():
    rng = np.random.default_rng(5)
    n = 90
    scores = rng.normal(size=n)
    scores[::7] = scores[1]  # ties
    segments = rng.integers(0, 4, size=n)
    for G in (2, 3, 5):
        out = quantile_groups_flat(torch.from_numpy(scores), torch.from_numpy(segments), G).tolist()
        for seg in set(segments.tolist()):
            pos = [i for i in range(n) if segments[i] == seg]
            for r, i in enumerate(sorted(pos, key=lambda i: (scores[i], i))):
                assert out[i] == r * G // len(pos)


# ----------------------------------------------------------------------------------------- --group_scope dataset
@pytest.mark.parametrize("eta", [0.0, 40.0, 62.5, 90.0, 99.9, 100.0])
def test_dataset_threshold_is_the_global_percentile_of_distinct_scores(eta):
    """Distinct float32 scores over sequences of different lengths: the threshold is the k-th highest score of the
    whole set (numpy, k = round half up of (100 - eta) n / 100), exactly k tokens are at or above it, and it does not
    depend on how the scores are split into sequences or ordered."""
    from sftgo.grouping import dataset_threshold, threshold_groups

    rng = np.random.default_rng(5)
    seqs = [rng.normal(size=int(n)).astype(np.float32) for n in rng.integers(1, 30, size=17)]
    flat = np.concatenate(seqs).astype(np.float64)
    assert len(np.unique(flat)) == flat.size
    k = expected_k(flat.size, eta)
    t, kept, n = dataset_threshold(seqs, eta)
    assert (n, kept) == (flat.size, k)
    assert t == (np.sort(flat)[::-1][k - 1] if k else math.inf)
    assert int(threshold_groups(torch.from_numpy(np.concatenate(seqs)), t).sum()) == k  # float32 column vs t: exact
    shuffled = rng.permutation(flat)
    assert dataset_threshold([shuffled[:7], shuffled[7:]], eta) == (t, kept, n)


def test_dataset_threshold_ties_nan_and_per_sequence_split_differ():
    """Ties at the threshold are all kept; NaN is never kept; and the dataset split is not the per-sequence one when
    one sequence scores higher throughout (it takes every important token), which is where the two must differ."""
    from sftgo.grouping import dataset_threshold, threshold_groups

    t, kept, n = dataset_threshold([np.array([3.0, 2.0, 2.0, 2.0]), np.array([1.0, np.nan])], 50.0)
    assert (t, kept, n) == (2.0, 4, 6)  # k = 3: the 3rd highest is 2.0; its tie at position 3 counts too
    assert threshold_groups(torch.tensor([np.nan, 2.0, 1.9]), t).tolist() == [False, True, False]
    high, low = np.array([5.0, 6.0, 7.0, 8.0]), np.array([1.0, 2.0, 3.0, 4.0])
    t, kept, _ = dataset_threshold([high, low], 50.0)
    dataset = [threshold_groups(torch.from_numpy(s), t).numpy() for s in (high, low)]
    per_sequence = percentile_groups([high, low], 50.0)
    assert [d.tolist() for d in dataset] == [[True] * 4, [False] * 4]
    assert [p.tolist() for p in per_sequence] == [[False, False, True, True]] * 2
    with pytest.raises(ValueError, match="percentile"):
        dataset_threshold([high], 101.0)
