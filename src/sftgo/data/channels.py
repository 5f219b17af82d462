"""Channels: each example's source name (``channel`` field) as a per-token ``channel`` column of ids, from one
vocabulary built on the training data (:func:`add_channels`).
"""

from __future__ import annotations

import logging

import numpy as np

from .templates import TokenizedData

logger = logging.getLogger(__package__)  # "sftgo.data", as before the package

OTHER_CHANNEL = "other"
"""Where channels beyond ``--max_channels`` (the smallest by supervised tokens) are merged."""


def channel_tokens(data: TokenizedData) -> dict[str, int]:
    """Supervised tokens per channel of ``data`` (empty when it has no channels)."""
    counts: dict[str, int] = {}
    for name, n in zip(data.channels or [], data.supervised_lengths()):
        counts[name] = counts.get(name, 0) + n
    return counts


def channel_vocabulary(counts: dict[str, int], max_channels: int = 32, base: list[str] | None = None,
                       what: str = "the training data") -> list[str]:
    """The channel names, in id order: built once from the training data (``counts``: supervised tokens per channel)
    and identical on every process (it depends on the data alone) and for train and eval.

    Channels are ordered by supervised tokens, descending, ties by name. With more than ``max_channels``, the largest
    ``max_channels - 1`` keep their own id and the rest are merged into ``other`` (a warning says how many). ``base``
    (the training vocabulary, for held-out data): its ids stay as they are; channels only the held-out data has are
    appended in the same order while there is room under ``max_channels``, the rest merged into ``other``.
    """
    base = list(base or [])
    order = sorted((c for c in counts if c not in base), key=lambda c: (-counts[c], c))
    room = max_channels - len(base)
    if len(order) <= room:
        return base + order
    keep = [c for c in order if c != OTHER_CHANNEL][:max(room - (OTHER_CHANNEL not in base), 0)]
    merged = [c for c in order if c not in keep]  # a channel really called 'other' counts among them
    logger.warning("%s brings the channels to %d, more than --max_channels %d: %d channel(s) with the fewest supervised "
                   "tokens (%d tokens in all) are merged into %r", what, len(base) + len(order), max_channels,
                   len(merged), sum(counts[c] for c in merged), OTHER_CHANNEL)
    return base + keep + ([] if OTHER_CHANNEL in base else [OTHER_CHANNEL])


def set_channel_column(data: TokenizedData, names: list[str]) -> None:
    """``data.columns["channel"]``: each supervised token's channel id in ``names`` (a name not in it: ``other``)."""
    ids = {c: float(i) for i, c in enumerate(names)}
    other = ids.get(OTHER_CHANNEL)
    col = []
    for name, n in zip(data.channels, data.supervised_lengths()):
        i = ids.get(name, other)
        if i is None:
            raise ValueError(f"channel {name!r} is not in the vocabulary {names} (which has no {OTHER_CHANNEL!r})")
        col.append(np.full(n, i, dtype=np.float32))
    data.columns["channel"] = col


def add_channels(train: TokenizedData | None, eval_data: TokenizedData | None = None, max_channels: int = 32) -> list[str]:
    """Give ``train`` and ``eval_data`` (either may be None or have no channels) their ``channel`` column, from one
    vocabulary: the training data's (:func:`channel_vocabulary`), extended by channels only the held-out data has.
    Returns the names in id order ([] when neither has channels)."""
    names: list[str] = []
    if train is not None and train.channels is not None:
        names = channel_vocabulary(channel_tokens(train), max_channels)
        set_channel_column(train, names)
    if eval_data is not None and eval_data.channels is not None:
        names = channel_vocabulary(channel_tokens(eval_data), max_channels, base=names, what="the held-out data")
        set_channel_column(eval_data, names)
    return names

