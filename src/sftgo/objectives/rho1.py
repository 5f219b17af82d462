"""Rho-1 (selective language modeling): mean CE over the step's tokens with the largest excess loss."""

from __future__ import annotations

import math

from .groups import Grouped


class Rho1(Grouped):
    """Rho-1 (selective language modeling): mean CE over the top ``(100 - eta)%`` of the step's tokens by excess loss
    (current CE minus the reference's), i.e. SFT-GO with ``lam = 1``, excess-loss groups over the whole step, and the
    kept group's weight fixed to 1: the loss is the kept tokens' sum divided by their exact count. At least one token
    is kept."""

    shared = ("percentile", "keep_ratio", "group_stats", "ref_model_name_or_path")
    uses_lam = False
    metrics = ("loss_important", "loss_unimportant", "frac_important", "frac_kept")
    needs_means = False

    @classmethod
    def columns(cls, args):
        return ("ref_logp",)

    @classmethod
    def check_args(cls, args):
        if args.group_stats == "lagged":
            raise ValueError("group_stats: rho1 selects tokens by the current excess loss; use exact or micro, not lagged")

    def batch_scope(self):
        return True

    def lam(self, lam):
        return 1.0

    def group_ids(self, values, segments):
        import torch

        from ..grouping import percentile_groups_flat

        keep = percentile_groups_flat(values, segments, self.args.percentile)
        if values.numel() and not bool(keep.any()):  # tiny steps: keep the top token rather than nothing
            keep[torch.argmax(torch.nan_to_num(values, nan=-math.inf))] = True
        return keep.long()

    def group_weights(self, means, counts, state):
        import torch

        return torch.tensor([0.0, 1.0], device=counts.device, dtype=counts.dtype)

    def important(self, tokens, logp, ids):
        return ids == 1

    def extra_metrics(self, sums, state):
        return {"frac_kept": sums["imp_n"] / max(sums["n"], 1.0)} if "imp_n" in sums else {}
