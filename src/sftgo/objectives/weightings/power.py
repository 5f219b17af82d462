"""The token weighting ``power``: the probability-power family of "Beyond Log Likelihood" (Li et al. 2025, arXiv
2510.00526; code GaotangLi/Beyond-Log-Likelihood, ``--trainer_objective_trans``).

The paper trains on ``f(p)`` per token instead of ``-log p``: ``f_alpha(p) = (1 - p^alpha) / alpha`` (``alpha = 0``:
``-log p``, the limit; ``alpha = 1``: ``1 - p``), optionally only inside a probability window (``1[p >= q]``: their
``OnlyTop*``, ``1[p <= q]``: their ``OnlyBottom*``). Its gradient is ``p^alpha`` times that of ``-log p`` (``d f / d
log p = -p^alpha``), so each member is the token weighting ``t_n = sg(p_n^alpha) 1[p_n in window]`` (``alpha = 1``:
DFT's gradient) and composes with every aggregator and data weights like any other weighting. What differs: the
weighting declares its token's loss value ``f(p_n) 1[window]`` (``value_of_logp``), so the loss the head returns, and
the run logs, is ``sum_n scale_n f(p_n) / W`` (the paper's objective), not ``sum_n scale_n t_n CE_n / W``, while the
gradient stays ``sum_n scale_n t_n grad CE_n / W`` (``scale_n``: data weights times group factors).

Composed with a grouping (sft-go, sft-go-dro, rho1), a token's loss in the group statistics is the same ``f(p_n)``:
``S_g = sum_{n in g} w_n f(p_n) 1[window]`` (for every other weighting ``w_n t_n CE_n``), so sft-go's worst group is the
one with the largest mean ``f`` and the step's objective is ``(1 - lam) sum_n w_n f_n / W + lam max_g S_g / C_g``, the
value logged, whose gradient (the worst group held fixed) is what the head applies.

Their names as settings (README's method table): ``original`` / ``logp`` = ``--power_alpha 0`` (plain SFT's loss and
gradient), ``p`` = ``--power_alpha 1``, ``GeneralFamily-A`` = ``--power_alpha A``, ``OnlyTopP-q`` = ``--power_alpha 1
--power_window top --power_q q``, ``OnlyBottomP-q`` = ``--power_alpha 1 --power_window bottom --power_q q``,
``OnlyTopLogP-q`` / ``OnlyBottomLogP-q`` = ``--power_alpha 0`` with that window. One difference, by choice: their
windowed objectives divide by the micro-batch's count of tokens *inside* the window (their ``loss_mask`` is narrowed
before ``valid_token_this_rank = sum(loss_mask)``), sftgo by all the step's supervised tokens ``W`` (the window is a
weight of 0, as in every weighting: exact over accumulation and processes, composable); the two differ by the factor
``W / (window's count)`` of each micro-batch (dev/power_peer_check.py measures and divides it out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..declare import finite_nonnegative, one_of, setting, unit_interval
from .none import NoWeighting

if TYPE_CHECKING:
    import torch

POWER_WINDOWS = ("none", "top", "bottom")


@dataclass
class PowerSettings:
    power_alpha: float = setting(
        1.0, help="power: alpha of the objective (1 - p^alpha) / alpha per token (0 = -log p, plain SFT; 1 = 1 - p; "
                  "the gradient is sg(p^alpha) times SFT's; >= 0).",
        check=finite_nonnegative("0 = -log p, 1 = 1 - p"), added=True)
    power_window: str = setting(
        "none", help="power: train only tokens with p >= power_q (top) or p <= power_q (bottom); none: every token.",
        check=one_of(POWER_WINDOWS), added=True)
    power_q: float = setting(0.5, help="power: the probability threshold of --power_window top|bottom.",
                             check=unit_interval, added=True)


def _window(p: torch.Tensor, window: str, q: float) -> torch.Tensor | None:
    """``1[p >= q]`` (top), ``1[p <= q]`` (bottom) as ``p``'s dtype, None without a window (their comparisons)."""
    if window == "top":
        return (p >= q).to(p.dtype)
    if window == "bottom":
        return (p <= q).to(p.dtype)
    return None


def power_weights(logp: torch.Tensor, alpha: float = 1.0, window: str = "none", q: float = 0.5) -> torch.Tensor:
    """The power family's token weight ``t = sg(p^alpha) 1[p in window]`` (``alpha = 0``: 1 in the window), detached.

    logp: ``[...]`` float log-probabilities of the target tokens. Returns ``[...]`` in ``[0, 1]``."""
    import torch

    lp = logp.detach()
    t = torch.exp(float(alpha) * lp) if alpha != 0 else torch.ones_like(lp)
    m = _window(lp.exp(), window, q)
    return t if m is None else t * m


def power_values(logp: torch.Tensor, alpha: float = 1.0, window: str = "none", q: float = 0.5) -> torch.Tensor:
    """The token's loss value ``f(p) 1[p in window]``: ``f = (1 - p^alpha) / alpha`` (``-expm1(alpha log p) / alpha``,
    exact near ``p = 1``), ``-log p`` at ``alpha = 0``. Detached; ``[...]``, ``>= 0``."""
    import torch

    lp = logp.detach()
    f = -torch.expm1(float(alpha) * lp) / float(alpha) if alpha != 0 else -lp
    m = _window(lp.exp(), window, q)
    return f if m is None else f * m


class PowerWeighting(NoWeighting):
    """The probability-power family: ``t_n = sg(p_n^alpha) 1[p_n in window]`` (:func:`power_weights`), the token's
    loss value ``f_alpha(p_n) 1[window]`` (:func:`power_values`; logged instead of ``t_n CE_n``)."""

    Settings = PowerSettings

    def fns(self):
        a = self.args
        alpha, window, q = float(a.power_alpha), str(a.power_window), float(a.power_q)
        return {"of_logp": lambda lp: power_weights(lp, alpha, window, q),
                "value_of_logp": lambda lp: power_values(lp, alpha, window, q)}
