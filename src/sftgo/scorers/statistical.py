"""Corpus-statistics importance scorers: TF-IDF, inverse frequency, and a random control.

Every function takes ``token_ids``: one sequence of supervised (response) token ids per example,
and returns one float array per example with the same length, aligned token for token.
All three are vectorized over the whole corpus: the sequences are concatenated once into a flat
array and the per-example results are views cut out of one flat result (no Python loop per token).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from sftgo.scorers.spec import Scorer, ScorerSetting

__all__ = ["tfidf", "frequency", "random", "flatten", "TFIDF", "FREQUENCY", "RANDOM"]


def flatten(token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ragged sequences.

    Returns ``(flat [sum n_i] int64, lengths [N] int64)``. Raises ValueError on negative ids.
    """
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64), lengths
    if all(isinstance(t, np.ndarray) for t in token_ids):
        flat = np.concatenate([t.reshape(-1) for t in token_ids]).astype(np.int64, copy=False)
    else:
        # Python lists: one C-level pass over all ints (5x faster than an array per example + concatenate)
        flat = np.fromiter(itertools.chain.from_iterable(token_ids), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and flat.min() < 0:
        raise ValueError(
            "token_ids contain a negative id; pass only the supervised token ids "
            "(drop the -100 label positions before scoring)"
        )
    return flat, lengths


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    # Views of `flat` (no copy); plain slicing is ~20x faster than np.split for thousands of pieces.
    ends = np.cumsum(lengths).tolist()
    return [flat[a:b] for a, b in zip([0] + ends[:-1], ends)]


def tfidf(token_ids: Sequence[Sequence[int]], **_) -> list[np.ndarray]:
    """Unigram TF-IDF over token ids; documents = examples' supervised token sequences.

    ``score[i][t] = tf(i, x) * idf(x)`` with ``x = token_ids[i][t]``, ``tf(i, x)`` = raw count of ``x``
    in example ``i`` and ``idf(x) = ln((1 + N) / (1 + df(x))) + 1`` (N examples, df = number of examples
    containing ``x``): scikit-learn's ``smooth_idf=True, norm=None, sublinear_tf=False`` convention.

    Shapes: ``token_ids[i]`` has n_i ids -> ``out[i]`` float64 [n_i].
    Cost: one sort of the (example, id) pair keys, O(total log total); ~30 ms for 5,000 Alpaca responses
    (290K tokens) on one CPU core.
    """
    flat, lengths = flatten(token_ids)
    n_docs = len(lengths)
    if flat.size == 0:
        return [np.zeros(int(n), dtype=np.float64) for n in lengths]
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)  # example index of every token
    vocab = int(flat.max()) + 1
    # One key per (document, id) pair. int32 when it fits (5,000 docs x 49K vocab does): the sort inside
    # np.unique is the main cost and runs ~2x faster on 4-byte keys.
    keys = doc * vocab + flat
    if n_docs * vocab < 2**31:
        keys = keys.astype(np.int32)
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    df = np.bincount(uniq % vocab, minlength=vocab)  # each unique pair = one document containing the id
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    scores = counts[inverse].astype(np.float64) * idf[flat]
    return _split(scores, lengths)


def frequency(token_ids: Sequence[Sequence[int]], **_) -> list[np.ndarray]:
    """Inverse frequency: ``score = -ln(count(x) / total)`` over all supervised tokens of the training set.

    Rare ids score high, common ones (punctuation, "the") low. Shapes as in :func:`tfidf`; float64.
    """
    flat, lengths = flatten(token_ids)
    if flat.size == 0:
        return [np.zeros(int(n), dtype=np.float64) for n in lengths]
    counts = np.bincount(flat)
    scores = -np.log(counts[flat] / float(flat.size))
    return _split(scores, lengths)


def random(token_ids: Sequence[Sequence[int]], seed: int = 0, **_) -> list[np.ndarray]:
    """Uniform [0, 1) random scores (numpy PCG64 seeded by ``seed``): the control scorer.

    Under percentile grouping it yields the same group sizes as any other scorer, so it separates the
    effect of *which* tokens are grouped from the effect of having groups at all. Float64.
    """
    _, lengths = flatten(token_ids)
    rng = np.random.default_rng(seed)
    return _split(rng.random(int(lengths.sum())), lengths)


TFIDF = Scorer("tfidf", tfidf)
FREQUENCY = Scorer("frequency", frequency)
RANDOM = Scorer("random", random, settings=(ScorerSetting("seed", 0, "Seed of the random scorer.", int, field=False),))
