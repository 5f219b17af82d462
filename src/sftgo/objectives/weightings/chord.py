"""The token weighting ``chord``: ``t_n = sg(p_n (1 - p_n))``, CHORD's phi (Zhang et al. 2025, "On-Policy RL Meets
Off-Policy Experts", arXiv 2508.11408). The weight is largest at ``p = 1/2`` and vanishes for tokens the model already
predicts (``p -> 1``) and for those it finds very unlikely (``p -> 0``), so the expert data shapes the uncertain tokens
without pulling hard on either."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .none import NoWeighting

if TYPE_CHECKING:
    import torch


def chord_weights(logp: torch.Tensor) -> torch.Tensor:
    """CHORD's token weight ``w = sg(p (1 - p))`` with ``p = exp(logp)``.

    logp: ``[...]`` float log-probabilities of the target tokens. Returns ``[...]``, detached, in ``[0, 1/4]``.
    """
    p = logp.detach().exp()
    return p * (1.0 - p)


class CHORDWeighting(NoWeighting):
    """CHORD: ``t_n = sg(p_n (1 - p_n))`` (:func:`chord_weights`)."""

    def fns(self):
        return {"of_logp": chord_weights}
