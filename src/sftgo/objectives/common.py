"""Settings several objectives read (lam, the grouping, the reference model, ...) and the per-token head's, declared
once (:mod:`sftgo.objectives.declare`). An objective names the shared settings it reads in its ``shared`` tuple."""

from __future__ import annotations

from dataclasses import dataclass

from ..scorers import SCORER_SETTINGS
from .declare import Setting, one_of, optional, setting, unit_interval

TOKEN_HEADS = ("auto", "fused", "chunked", "naive")
GROUP_SCOPES = ("sequence", "batch", "dataset")
GROUP_STATS = ("exact", "lagged", "micro")


def _keep_ratio(v):
    return None if 0.0 < v <= 1.0 else f"{v} must be in (0, 1]"


def _percentile(v):
    return None if 0.0 <= v <= 100.0 else f"{v} must be in [0, 100] (90 marks the top 10% important)"


def _threshold(v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    return None if ok else f"{v!r} must be a number (a score)"


@dataclass
class SharedSettings:
    """Method settings of more than one objective."""

    lam: float = setting(0.9, help="SFT-GO lambda (Eq. 4): weight of the worst-group loss; lam_max under decay.",
                         check=unit_interval)
    lam_min: float | None = setting(
        None, help="If set below --lam, lambda decays linearly over optimizer steps to this floor (Eq. 5).",
        check=optional(unit_interval), short="lam_min")
    keep_ratio: float | None = setting(
        None, help="Alias that sets eta: --keep_ratio r is --percentile 100*(1-r) (Rho-1's habit: the fraction of "
                   "tokens kept). Give one of the two.", check=optional(_keep_ratio))
    num_groups: int = setting(2, help="sft-go / sft-go-dro: number of score-quantile groups (2 = the paper's split).",
                              check=lambda v: None if v >= 2 else f"{v} must be at least 2")
    scorer: str = setting(
        "tfidf", help="Importance function g: tfidf, frequency, random, llmlingua2, reference (Rho-1 excess loss), "
                      "influence (Token Cleaning: the reference's log p minus the initial model's, fixed before "
                      "training), or module:function for your own.")
    percentile: float = setting(
        90.0, help="eta: tokens above this percentile are important (90 = top 10 percent), per sequence for the "
                   "static scorers, over the optimizer step's tokens by excess loss for rho1 (which trains on them).",
        check=_percentile, short="eta")
    group_scope: str = setting(
        "sequence", help="Rank scores per sequence, across the whole batch (as Rho-1 does), or across the whole "
                         "training set (dataset: one threshold fixed before training, as Token Cleaning does; static "
                         "scorers only; sft-go with 2 groups and rho1, which then keeps the tokens above it).",
        check=one_of(GROUP_SCOPES))
    group_threshold: float | None = setting(
        None, added=True,
        help="--group_scope dataset: tokens scoring at or above it are important. Leave unset: sftgo train sets it "
             "once before training to the lowest score of the top (100 - eta) percent of the training set's tokens "
             "and records it in config.yaml (a resume keeps it).", check=optional(_threshold))
    group_stats: str = setting(
        "exact", help="Group statistics of sft-go / sft-go-dro / rho1 / --group_scope batch: exact (over the whole "
                      "optimizer step, all micro-batches and processes; one extra no-grad forward per step when the "
                      "step has several micro-batches or processes), lagged (the previous step's group means pick the "
                      "worst group; no extra forward), micro (each micro-batch on its own).",
        check=one_of(GROUP_STATS))
    ref_model_name_or_path: str | None = setting(
        None, help="Reference model for objective=rho1 / scorer=reference (required: a model trained on in-domain data, "
                   "e.g. runs/ref/final from `sftgo train --objective sft --output_dir runs/ref`; 'initial' uses the "
                   "initial model), for objective=asft (required; 'initial' = the model before training) and for "
                   "target_residual=reference (default: the initial model).", short="ref")


@dataclass
class RunSettings:
    """How the loss is computed and where scores are kept: not part of any method."""

    score_cache_dir: str | None = setting(None, help="Where static scores are cached (default ~/.cache/sftgo/scores).")
    token_head: str = setting(
        "auto", help="How per-token log-probs are computed: fused (gradient in the forward, no [N, V] logits), chunked "
                     "(recompute in backward), naive (full logits), auto (fused where the objective allows).",
        check=one_of(TOKEN_HEADS))
    head_chunk_size: int = setting(512, help="Tokens per chunk in the per-token head.",
                                   check=lambda v: None if v >= 1 else f"{v} must be positive")


# Settings that choose the *logged* grouping of every objective (the important / unimportant curves of Figure 2, also
# for plain SFT), beside the settings that change an objective's loss (``settings`` of each class).
# The scorers' own config fields (llmlingua2_model) come from their declarations (sftgo.scorers, torch-free).
METRIC_SETTINGS = ("scorer", "percentile", "keep_ratio", *SCORER_SETTINGS)


def scorer_settings() -> list[Setting]:
    """The config fields the scorers declare themselves (:data:`sftgo.scorers.SCORER_SETTINGS`), as settings."""
    return [Setting(s.name, s.type.__name__, s.default, s.help, short=s.short) for s in SCORER_SETTINGS.values()]
