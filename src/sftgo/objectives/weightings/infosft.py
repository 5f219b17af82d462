"""The token weighting ``infosft``: ``t_n = sg(p) relu(1 - sg(logit p) / logit P)``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..declare import setting
from .none import NoWeighting

if TYPE_CHECKING:
    import torch

# Logit clamp for InfoSFT: sigmoid(-80) ~ 1.8e-35, so anything beyond is "p = 0" or "p = 1" for all
# practical purposes, and a finite clamp keeps 0 * inf = NaN out of the weight.
_LOGIT_CLAMP = 80.0


@dataclass
class InfoSFTSettings:
    infosft_p: float = setting(
        0.93, help="InfoSFT P: tokens with p >= P get zero weight; C = log(P/(1-P)).",
        check=lambda v: None if 0.5 < v < 1.0 else f"{v} must be in (0.5, 1) so that C = log(P/(1-P)) > 0")


def infosft_weights(logp: torch.Tensor, P: float = 0.93) -> torch.Tensor:
    """InfoSFT token weight ``w = sg(p) * relu(1 - sg(logit(p)) / logit(P))``, detached.

    ``logit(p) = log(p / (1 - p))``. The weight vanishes for confident tokens (``p >= P``), peaks at
    medium ``p`` and tends to 0 as ``p -> 0`` (``p * |log p|`` -> 0).

    Numerics: ``logit(p)`` is computed as ``logp - log1p(-p)`` (no division, accurate for small p)
    with ``p`` clamped below 1 so ``log1p(-p)`` stays finite when ``logp == 0``, and the logit is
    clamped to ``[-80, 80]`` so ``logp = -inf`` gives ``p = 0`` times a finite factor, not ``0 * inf``.

    logp: ``[...]`` float. P: confidence threshold in (0.5, 1). Returns ``[...]``, detached.
    """
    import torch

    if not (isinstance(P, (int, float)) and 0.5 < float(P) < 1.0):
        raise ValueError(f"infosft P must be a float in (0.5, 1) (default 0.93); got {P!r}")
    lp = logp.detach()
    p = lp.exp()
    # Largest float below 1 in this dtype: keeps log1p(-p) finite for p == 1.
    one_minus = 1.0 - torch.finfo(lp.dtype).eps
    logit = lp - torch.log1p(-p.clamp(max=one_minus))
    logit = logit.clamp(-_LOGIT_CLAMP, _LOGIT_CLAMP)
    logit_P = math.log(P / (1.0 - P))
    return p * torch.relu(1.0 - logit / logit_P)


class InfoSFTWeighting(NoWeighting):
    """InfoSFT: ``t_n = sg(p) relu(1 - sg(logit p) / logit P)`` (:func:`infosft_weights`)."""

    Settings = InfoSFTSettings

    def fns(self):
        P = self.args.infosft_p
        return {"of_logp": lambda lp: infosft_weights(lp, P)}
