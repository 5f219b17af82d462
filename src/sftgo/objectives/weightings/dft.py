"""The token weighting ``dft``: ``t_n = sg(p_n)`` (Dynamic Fine-Tuning)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .none import NoWeighting

if TYPE_CHECKING:
    import torch


def dft_weights(logp: torch.Tensor) -> torch.Tensor:
    """DFT token weight ``w = sg(p)`` with ``p = exp(logp)`` (Dynamic Fine-Tuning).

    logp: ``[...]`` float log-probabilities of the target tokens. Returns ``[...]``, detached.
    """
    return logp.detach().exp()


class DFTWeighting(NoWeighting):
    """DFT: ``t_n = sg(p_n)`` (:func:`dft_weights`)."""

    def fns(self):
        return {"of_logp": dft_weights}
