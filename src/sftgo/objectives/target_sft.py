"""Target-SFT: cross-entropy toward ``Q = gamma onehot(y) + (1 - gamma) residual``, a loss over whole logits rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Objective
from .declare import one_of, setting

if TYPE_CHECKING:
    import torch

TARGET_RESIDUALS = ("uniform", "model", "topk", "reference")


def _gamma(v):
    if v == "p":
        return None
    try:
        g = float(v)
    except ValueError:
        return f"{v!r} must be a float in [0, 1] or 'p'"
    return None if 0.0 <= g <= 1.0 else f"{g} must be in [0, 1]"


@dataclass
class TargetSFTSettings:
    target_gamma: str = setting("0.9", help="Target-SFT gamma: a float in [0, 1] or 'p' for sg(p_y).", check=_gamma)
    target_residual: str = setting("uniform", help="Target-SFT residual: uniform, model, topk or reference.",
                                   check=one_of(TARGET_RESIDUALS))
    target_topk: int = setting(10, help="Target-SFT: k for residual=topk.")


def target_sft_chunk_loss(z: torch.Tensor, y: torch.Tensor, *, gamma, residual: str, topk: int = 10,
                          ref_logits: torch.Tensor | None = None, row_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Target-SFT over rows of logits: ``sum_rows w_row * -sum_k sg(Q_k) log_softmax(z)_k`` with
    ``Q = gamma * onehot(y) + (1 - gamma) * pi`` (an unnormalized sum; the trainer divides by the step's weight W).
    ``row_weight`` ``[c]``: the rows' data weights ``w`` (None: 1).

    z: ``[c, V]`` logits (upcast from half precision for a stable log-softmax); y: ``[c]`` long; ref_logits: ``[c, V]``
    (``residual="reference"`` only). gamma: float in [0, 1], or ``"p"`` for ``sg(p_y)`` per token. The residual ``pi``
    (detached): ``uniform`` 1/V over all V classes (= label smoothing ``1 - gamma``); ``model`` ``sg(softmax(z))`` (with
    ``gamma="p"`` the DFT gradient ``p_y (p - e_y)``); ``topk`` the model's ``topk`` largest probabilities among the
    classes other than ``y``, renormalized (so exactly ``gamma`` of the mass stays on ``y``); ``reference``
    ``sg(softmax(ref_logits))``. ``gamma = 1``: plain CE. Called per chunk by the token head (no ``[N, V]`` tensor).
    """
    import torch

    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    V = z.shape[-1]
    logq = torch.log_softmax(z, dim=-1)  # [c, V]: one chunk at a time
    logq_y = logq.gather(1, y[:, None]).squeeze(1)
    g = logq_y.detach().exp() if gamma == "p" else float(gamma)
    if residual == "uniform":
        res = logq.mean(dim=-1)
    elif residual == "model":
        res = (logq.detach().exp() * logq).sum(dim=-1)
    elif residual == "reference":
        res = (torch.softmax(ref_logits.detach().to(logq.dtype), dim=-1) * logq).sum(dim=-1)
    elif residual == "topk":
        k = min(int(topk), V - 1)
        if k < 1:  # V == 1: the residual is empty, Q = onehot
            res = logq_y
        else:
            ranked = logq.detach().exp().scatter(1, y[:, None], -1.0)  # the observed token is not in the ranking
            top_p, top_i = ranked.topk(k, dim=-1)
            pi = top_p / top_p.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(top_p.dtype).tiny)
            res = (pi * logq.gather(1, top_i)).sum(dim=-1)
    else:
        raise ValueError(f"residual must be one of {TARGET_RESIDUALS}; got {residual!r}")
    per_row = g * logq_y + (1 - g) * res
    return -(per_row if row_weight is None else per_row * row_weight.to(per_row.dtype)).sum()


class TargetSFT(Objective):
    """Target-SFT: CE toward ``Q = gamma onehot(y) + (1 - gamma) residual`` (a per-chunk loss over whole rows)."""

    Settings = TargetSFTSettings
    shared = ("ref_model_name_or_path",)
    chunk_loss = True
    row_weights = True

    @classmethod
    def needs_ref_model(cls, args):
        return args.target_residual == "reference"

    def chunk_fn(self, ref_weight: torch.Tensor | None):
        """``fn(logits [c, V], targets [c], reference hidden states [c, H_ref] | None) -> chunk loss`` for the head."""
        import torch

        a = self.args
        gamma = "p" if str(a.target_gamma) == "p" else float(a.target_gamma)

        def fn(z, y, rh, w=None):
            ref = None
            if rh is not None:
                with torch.no_grad():
                    ref = rh.to(ref_weight.dtype) @ ref_weight.T  # [c, V] reference logits, never differentiated
            return target_sft_chunk_loss(z, y, gamma=gamma, residual=a.target_residual, topk=a.target_topk,
                                         ref_logits=ref, row_weight=w)

        return fn
