"""SFT-GO: ``(1 - lam) * CE + lam * max over groups of the group's mean CE``."""

from __future__ import annotations

from ..scorers import SCORER_SETTINGS, scorer_needs_reference
from .groups import Grouped


class SFTGo(Grouped):
    """SFT-GO (Eq. 3-4): ``(1 - lam) * CE + lam * max over groups of the group's mean CE``.

    Two groups (the paper): the top ``(100 - eta)%`` of each example by importance (or of the step, ``--group_scope
    batch``; of the training set by a threshold fixed before training, ``--group_scope dataset``) vs the rest.
    ``--num_groups G > 2``: importance quantiles. ``--scorer reference``: groups by the current
    excess loss (Rho-1's grouping).
    """

    shared = ("scorer", "percentile", "keep_ratio", "lam", "lam_min", "num_groups", "group_scope", "group_stats",
              *SCORER_SETTINGS, "ref_model_name_or_path")  # SCORER_SETTINGS: the scorers' own (llmlingua2_model)
    metrics = ("loss_important", "loss_unimportant", "frac_important", "worst_group", "worst_group_step")
    eta_ablation = True

    def __init__(self, args):
        super().__init__(args)
        self.num_groups = int(args.num_groups)

    @classmethod
    def columns(cls, args):
        return ("ref_logp",) if scorer_needs_reference(args.scorer) else ("importance",)

    @classmethod
    def check_args(cls, args):
        if scorer_needs_reference(args.scorer) and args.group_stats == "lagged":
            raise ValueError("group_stats: lagged needs groups known before the forward; with --scorer reference "
                             "(groups from the current loss) use exact or micro")
        if not args.scorer:
            raise ValueError("scorer: sft-go needs a grouping function; set --scorer (e.g. tfidf)")
        cls.check_dataset_scope(args, scorer_needs_reference(args.scorer))
        if cls.dataset_scope(args) and not cls.percentile_split(args):
            raise ValueError(f"group_scope: dataset cuts one threshold (2 groups); objective {args.objective} with "
                             f"num_groups {args.num_groups} cuts score quantiles per sequence or batch: use "
                             "--group_scope sequence|batch, or sft-go with --num_groups 2")

    @classmethod
    def percentile_split(cls, args) -> bool:
        """Whether its groups are the eta split (important vs the rest), which ``--group_scope dataset`` can cut."""
        return int(args.num_groups) == 2

    def group_ids(self, values, segments):
        if self.num_groups == 2:
            return super().group_ids(values, segments)
        from ..grouping import quantile_groups_flat

        return quantile_groups_flat(values, segments, self.num_groups)

    def important(self, tokens, logp, ids):
        return ids == 1 if self.num_groups == 2 else super().important(tokens, logp, ids)
