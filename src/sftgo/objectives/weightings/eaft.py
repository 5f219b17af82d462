"""The token weighting ``eaft``: ``t_n = sg(H_k(z_n) / log k) ** alpha``, the normalized top-k entropy of the token's
logits row (EAFT, Diao et al. 2026, arXiv 2601.02151; paper vs peers: :class:`sftgo.objectives.sft.EAFT`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..declare import finite_nonnegative, setting
from .none import NoWeighting

if TYPE_CHECKING:
    import torch


def _k(v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        return f"{v!r} must be an integer >= 2 (the entropy of fewer than 2 logits is 0; 20 is the paper's)"
    return None


@dataclass
class EAFTSettings:
    eaft_alpha: float = setting(
        1.0, help="EAFT: exponent alpha of the token weight (H_k / ln k) ** alpha (0 = plain SFT; >= 0).",
        check=finite_nonnegative("1.0 is the paper's"), added=True)
    eaft_k: int = setting(
        20, help="EAFT: the entropy is over the softmax of each token's k largest logits (>= 2).", check=_k, added=True)
    eaft_normalize: bool = setting(
        True, help="EAFT: divide the top-k entropy by ln k (the paper's normalized entropy, in [0, 1]); false: the "
                   "raw entropy, as axolotl's eaft_loss.", added=True)


def eaft_weights(logits: torch.Tensor, k: int = 20, alpha: float = 1.0, normalize: bool = True) -> torch.Tensor:
    """EAFT token weight ``w = (H_k / log k) ** alpha`` (``normalize=False``: ``H_k ** alpha``), detached.

    ``H_k = -sum_j q_j log q_j`` is the entropy of ``q = softmax`` over the row's ``k`` largest logits (the top-k
    approximation of the full entropy, EAFT's choice for speed); ``log k`` is its largest value, so the normalized
    weight lies in ``[0, 1]`` and ``alpha = 0`` gives plain SFT (``0 ** 0 = 1``). ``k`` is capped at the vocabulary.
    The log-softmax over the top-k is exact (no epsilon inside the log).

    logits: ``[c, V]`` float (one chunk of rows; upcast to fp32 at least). Returns ``[c]``.
    """
    import torch

    z = logits.detach()
    z = z.to(torch.promote_types(z.dtype, torch.float32))
    k = min(int(k), z.shape[-1])
    logq = torch.log_softmax(z.topk(k, dim=-1).values, dim=-1)  # [c, k]
    H = (-(logq.exp() * logq).sum(dim=-1)).clamp(min=0.0)  # rounding can leave a -1e-8 for a one-hot row
    if normalize:
        H = H / math.log(k) if k > 1 else torch.zeros_like(H)  # one class: no uncertainty to measure
    return H.pow(float(alpha))


class EAFTWeighting(NoWeighting):
    """EAFT: ``t_n = sg(H_k(z_n) / log k) ** alpha`` from the token's logits row (:func:`eaft_weights`; top-k per chunk
    in the head, no ``[N, V]`` tensor)."""

    Settings = EAFTSettings

    def fns(self):
        a = self.args
        k, alpha, norm = int(a.eaft_k), float(a.eaft_alpha), bool(a.eaft_normalize)
        return {"of_row": lambda z: eaft_weights(z, k, alpha, norm)}
