"""Importance scores -> important / unimportant token groups (SFT-GO's percentile split).

eta (``percentile``) follows the paper: of a sequence's n supervised tokens, the top ``(100 - eta)%`` are
important. Exactly

    k = floor((100 - eta) * n / 100 + 1/2)          (round half up, computed in float64)

tokens are important: the k highest scores. We round half *up* on purpose (Python's ``round`` is banker's
rounding and would make k jump between even and odd n), and we write the product as ``(100 - eta) * n / 100``
rather than ``(1 - eta/100) * n`` so that e.g. eta = 90, n = 5 gives exactly 0.5 -> k = 1, not 0.4999... -> 0.

Ties are broken by position: among equal scores the earlier token is ranked higher (a stable sort of the
descending scores). NaN scores rank lowest (treated as -inf, ties again by position).

One implementation, :func:`percentile_groups_flat`, on flat token columns with a segment id per token: the example
(SFT-GO's per-sequence split) or one id for every token (``--group_scope batch``, Rho-1's top-k over the step).
Training, held-out evaluation and ``sftgo score`` all call it (:func:`percentile_groups` only reshapes lists of
arrays into flat columns and back).

``--group_scope dataset`` (Token Cleaning's global selection) ranks every supervised token of the training set at once:
:func:`dataset_threshold` gives the score of the ``k``-th highest token (same k and NaN rule, ``n`` = all tokens), fixed
once before training, and :func:`threshold_groups` marks the tokens at or above it (ties at the threshold all count as
important, so whatever the batching, a token's group depends on its score alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["dataset_threshold", "num_important", "percentile_groups", "percentile_groups_flat", "quantile_groups_flat",
           "threshold_groups"]


def _check_percentile(percentile: float) -> float:
    p = float(percentile)
    if not (0.0 <= p <= 100.0):  # also rejects NaN
        raise ValueError(f"percentile (eta) must be in [0, 100], got {percentile!r}; eta=90 marks the top 10%")
    return p


def num_important(n, percentile: float) -> torch.Tensor:
    """``k = floor((100 - eta) * n / 100 + 1/2)`` (round half up, float64) for an int or an integer tensor ``n``."""
    p = _check_percentile(percentile)
    return torch.floor((100.0 - p) * torch.as_tensor(n, dtype=torch.float64) / 100.0 + 0.5).long()


def _segment_ranks(values, segments, descending: bool):
    """Rank of each element within its segment (0 = first), and its segment's size. values, segments: [N].


    Order within a segment: by value (descending or ascending), ties by position (stable sorts); NaN ranks last when
    descending (as -inf), and as 0 when ascending (see :func:`quantile_groups_flat`). Segments need not be
    contiguous: any integer id (an example index, or one id for a whole batch)."""

    n = values.shape[0]
    key = values.detach()
    if not key.is_floating_point() or key.dtype in (torch.float16, torch.bfloat16):
        key = key.float()
    key = torch.nan_to_num(key, nan=float("-inf") if descending else 0.0, posinf=float("inf"), neginf=float("-inf"))
    o1 = torch.sort(key, descending=descending, stable=True).indices
    o2 = torch.sort(segments[o1], stable=True).indices
    order = o1[o2]  # grouped by segment, then by value, then by position
    seg = segments[order]
    pos = torch.arange(n, device=values.device)
    first = torch.ones(n, dtype=torch.bool, device=values.device)
    first[1:] = seg[1:] != seg[:-1]
    start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), dim=0).values
    _, sizes = torch.unique_consecutive(seg, return_counts=True)
    size_sorted = torch.repeat_interleave(sizes, sizes)
    rank = torch.empty_like(pos)
    size = torch.empty_like(pos)
    rank[order] = pos - start
    size[order] = size_sorted
    return rank, size


def percentile_groups_flat(scores, segments, percentile: float):
    """:func:`percentile_groups_torch` on flat token columns: scores [N], segments [N] long (the example each token
    belongs to; one id for all tokens = batch scope). Returns bool [N]: the top ``k`` of each segment, same k, tie and
    NaN rules. Works whatever the layout of the tokens (padding, packing, padding-free)."""
    _check_percentile(percentile)
    if scores.numel() == 0:
        return scores.new_zeros(scores.shape, dtype=bool)
    rank, size = _segment_ranks(scores, segments, descending=True)
    return rank < num_important(size, percentile).to(size.device)


def quantile_groups_flat(scores, segments, num_groups: int):
    """Quantile group ids on flat token columns: within each segment the token of ascending-score rank ``r`` among
    ``n`` gets ``floor(r * G / n)`` (group G-1 holds the highest scores; NaN scores rank as 0). scores, segments: [N]
    -> long [N]."""
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int; got {num_groups!r}")
    if scores.numel() == 0:
        return segments.new_zeros(segments.shape)

    rank, size = _segment_ranks(scores, segments, descending=False)
    return torch.div(rank * num_groups, size.clamp(min=1), rounding_mode="floor")


def percentile_groups(scores: Sequence[np.ndarray], percentile: float) -> list[np.ndarray]:
    """Per-sequence split of a list of score arrays ``[n_i]`` -> bool arrays ``[n_i]`` (True = important): the
    sequences as one flat column with a segment per sequence through :func:`percentile_groups_flat`."""
    _check_percentile(percentile)
    lengths = [len(s) for s in scores]
    if sum(lengths) == 0:
        return [np.zeros(n, dtype=bool) for n in lengths]
    flat = torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]))
    seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    out = percentile_groups_flat(flat, seg, percentile).numpy()
    ends = np.cumsum(lengths)
    return [out[e - n:e] for n, e in zip(lengths, ends)]


def dataset_threshold(scores: Sequence[np.ndarray], percentile: float) -> tuple[float, int, int]:
    """One threshold over every token of a dataset: ``(t, kept, n)`` with ``n`` the number of scores, ``k =``
    :func:`num_important` ``(n, percentile)`` and ``t`` the ``k``-th highest score (float64 of the float32 score, exact;
    NaN ranks lowest); ``kept`` = the tokens with score ``>= t`` (``k``, or more where scores tie at ``t``). ``k = 0``:
    ``t = inf``, nothing kept. Depends on the scores only, not on their order or batching."""
    _check_percentile(percentile)
    flat = np.concatenate([np.asarray(s).reshape(-1) for s in scores]) if len(scores) else np.zeros(0)
    flat = flat.astype(np.float64)
    n = int(flat.size)
    k = int(num_important(n, percentile))
    if k == 0:
        return float("inf"), 0, n
    key = np.where(np.isnan(flat), -np.inf, flat)
    t = float(-np.partition(-key, k - 1)[k - 1])  # the k-th highest
    return t, int(np.count_nonzero(flat >= t)), n


def threshold_groups(scores, threshold: float):
    """bool ``[N]``: the scores at or above ``threshold`` (NaN never)."""
    return scores >= threshold
