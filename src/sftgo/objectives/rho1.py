"""Rho-1 (selective language modeling): mean CE over the step's tokens with the largest excess loss."""

from __future__ import annotations

import math

from .groups import Grouped


class Rho1(Grouped):
    """Rho-1 (selective language modeling): mean CE over the top ``(100 - eta)%`` of the step's tokens by excess loss
    (current CE minus the reference's), i.e. SFT-GO with ``lam = 1``, excess-loss groups over the whole step, and the
    kept group's weight fixed to 1: the loss is the kept tokens' sum divided by their exact count. At least one token
    is kept.

    ``--group_scope dataset``: the kept tokens are those whose static ``--scorer`` importance is at or above the
    training set's threshold (fixed before training); with ``--scorer influence`` this is Token Cleaning's fixed-model
    cleaning (arXiv 2502.01968). A step may then keep no token (its loss is 0)."""

    shared = ("percentile", "keep_ratio", "group_stats", "ref_model_name_or_path")
    uses_lam = False
    metrics = ("loss_important", "loss_unimportant", "frac_important", "frac_kept")
    needs_means = False

    @classmethod
    def columns(cls, args):
        return ("importance",) if cls.dataset_scope(args) else ("ref_logp",)

    @classmethod
    def extra_settings(cls, config):
        from ..scorers import SCORER_SETTINGS

        # over the step unless --group_scope dataset (then also the scorer it ranks by): sequence / batch are ignored
        return ("group_scope", "scorer", *SCORER_SETTINGS) if cls.dataset_scope(config) else ()

    @classmethod
    def check_args(cls, args):
        if cls.dataset_scope(args):  # Token Cleaning: keep the tokens above a threshold fixed before training
            from ..scorers import scorer_needs_reference

            cls.check_dataset_scope(args, scorer_needs_reference(args.scorer))
        elif args.group_stats == "lagged":
            raise ValueError("group_stats: rho1 selects tokens by the current excess loss; use exact or micro, not lagged")

    def batch_scope(self):
        return not self.dataset_scope(self.args)  # the step's tokens, unless a dataset threshold cuts them

    def lam(self, lam):
        return 1.0

    def group_ids(self, values, segments):
        import torch

        from ..grouping import percentile_groups_flat

        if self.dataset_scope(self.args):  # the tokens above the dataset's threshold, however few a step holds
            return super().group_ids(values, segments)

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
