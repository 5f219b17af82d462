"""SFT-GO's Group-DRO variant: ``(1 - lam) * CE + lam * sum_g q_g CE_g`` with exponentiated-gradient group weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..scorers import SCORER_SETTINGS
from .declare import setting
from .groups import group_means
from .sft_go import SFTGo

if TYPE_CHECKING:
    import torch


@dataclass
class DROSettings:
    dro_eta: float = setting(0.01, help="sft-go-dro: step size of the exponentiated group-weight update.")


class SFTGoDRO(SFTGo):
    """Group-DRO variant: ``(1 - lam) * CE + lam * sum_g q_g CE_g``, with importance-quantile groups (``--num_groups``),
    q renormalized over the step's non-empty groups and updated once per optimizer step from the step's global group
    means: ``q_g <- q_g exp(dro_eta * CE_g)`` (Sagawa et al. 2020), empty groups keeping their weight. ``q`` (float64,
    uniform at the start) is trainer state. The "important" curve is the top quantile group."""

    Settings = DROSettings
    shared = ("scorer", "lam", "lam_min", "num_groups", "group_scope", "group_stats", *SCORER_SETTINGS,
              "ref_model_name_or_path")
    metrics = ("loss_important", "loss_unimportant", "frac_important", "dro_q{g}")
    needs_means = False
    eta_ablation = False

    @classmethod
    def percentile_split(cls, args):
        return False  # quantile groups, whatever num_groups

    def group_ids(self, values, segments):
        from ..grouping import quantile_groups_flat

        return quantile_groups_flat(values, segments, self.num_groups)

    def important(self, tokens, logp, ids):
        return ids == self.num_groups - 1

    def q(self, state: dict, device) -> torch.Tensor:
        import torch

        q = state.get("dro_q")
        if q is None:
            return torch.full((self.num_groups,), 1.0 / self.num_groups, dtype=torch.float64, device=device)
        return q.to(device)

    def group_weights(self, means, counts, state):
        import torch

        q = self.q(state, counts.device).to(counts.dtype) * (counts > 0).to(counts.dtype)
        return q / q.sum().clamp(min=torch.finfo(q.dtype).tiny)

    def next_state(self, state, sums, counts):
        """Exponentiated-gradient step in log space (a softmax over the active groups, so a large ``eta * CE`` cannot
        overflow); empty groups keep their weight exactly. No boolean indexing: runs on any device without a sync."""
        import torch

        q = self.q(state, sums.device)
        active = counts > 0
        means = group_means(sums, counts).to(torch.float64)
        logits = torch.where(active, q.log() + float(self.args.dro_eta) * means, torch.full_like(q, -math.inf))
        any_active = active.any()
        soft = torch.softmax(torch.where(any_active, logits, torch.zeros_like(logits)), dim=0)
        mass = (q * active.to(q.dtype)).sum()
        new = torch.where(active, soft * mass, q)
        new = torch.where(any_active, new / new.sum(), q)
        return {**state, "dro_q": new}, {}

    def extra_metrics(self, sums, state):
        q = state.get("dro_q")
        qs = q.tolist() if q is not None else [1.0 / self.num_groups] * self.num_groups
        return {f"dro_q{g}": v for g, v in enumerate(qs)}
