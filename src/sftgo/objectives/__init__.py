"""Training objectives, each written once: a declaration (the settings it reads, the token columns it needs, whether
it needs a reference, whether lambda applies, what it logs) and pure tensor functions.

An objective never calls a model, never talks to other processes and holds no state that changes during training.
Given flat token columns (:class:`sftgo.tokens.TokenBatch`: targets, example index, importance / reference log-probs)
and additive step statistics (group CE sums and token counts: ``+`` over micro-batches, all-reduce SUM over
processes), it returns a per-token coefficient ``c_n`` on ``-log p_n`` (or, for Target-SFT and ASFT, a per-chunk
loss), the group ids it used, and its metrics. The trainer (:mod:`sftgo.trainer`, and :mod:`sftgo.integrations.trl`
over TRL's SFTTrainer) runs the forwards, gathers and all-reduces the statistics and owns what lives across optimizer
steps (Group-DRO's ``q``, the lagged group means) as a dict of tensors on the training device, saved in every
checkpoint.

The one formula (README, "Token weights compose"). For every supervised token n of an optimizer step (all
micro-batches, all processes):

    w_n   data weight (the batch's ``loss_weight`` column; 1 without data weights)
    t_n   token weighting (``--token_weight``, detached; :data:`TOKEN_WEIGHTS`): none 1 | dft p_n |
          infosft sg(p) relu(1 - logit(p) / logit(P)) | eaft (H_k / log k) ** alpha | power p^alpha 1[window]
          (power's token loss t_n CE_n below is the paper's f(p_n), same gradient: :mod:`.weightings.power`)
    CE_n  -log p_n
    W     = sum_n w_n        (the step's weight; K, the supervised-token count, without data weights)
    groups g (sft-go with 2 or k groups, sft-go-dro, rho1) are cut over the supervised tokens, and
    S_g   = sum_{n in g} w_n t_n CE_n,    C_g = sum_{n in g} w_n                         (:func:`group_stats`)

    loss  = (1 - lam) * sum_n w_n t_n CE_n / W  +  lam * sum_g a_g S_g / C_g
    i.e.  c_n = w_n t_n f_g,   f_g = (1 - lam) + lam a_g W / C_g,   loss = sum_n c_n CE_n / W

``sft``: lam = 0. ``a_g``: sft-go the one-hot of the argmax of ``S_g / C_g`` (the worst group by the weighted loss),
sft-go-dro its ``q`` (updated from ``S_g / C_g``), rho1 ``[0, 1]`` (the kept set) with lam = 1. ``--objective dft``,
``infosft`` and ``eaft`` are ``sft`` with that token weighting (declarations of :class:`SFT` subclasses, not other code
paths). ``t_n`` is computed inside the per-token head (:class:`sftgo.token_head.TokenCoef`), from the token's own log p
or its logits row; the objective gives the head ``w_n`` times the group factors ``f_g``. The trainer divides
``sum_n c_n CE_n`` by ``W`` once.

Under ``--group_stats exact`` the statistics are the optimizer step's (a no-grad pre-pass, computing ``t_n`` too, when
the step has several micro-batches or processes), so ``c_n`` is fixed before any backward and each micro-batch's
backward is a weighted NLL: the gradient is exactly that of the step's objective, however the step is split. Under
``micro`` each micro-batch uses its own statistics; under ``lagged`` ``a_g`` comes from the previous step's group means
(no extra forward) and ``C_g`` from the current step. Target-SFT and ASFT are losses over whole logits rows: the data
weights multiply each row's loss (``row_weights``), no token weighting applies.

Adding an objective: one module in this package (its class: the declaration, its ``Settings`` dataclass of
:func:`sftgo.objectives.declare.setting` fields, and its functions) and one row in :data:`OBJECTIVES`; a token
weighting: one module in :mod:`sftgo.objectives.weightings` and one row in its :data:`TOKEN_WEIGHTS`. Nothing else in
sftgo tests an objective's name or lists its settings: :class:`ObjectiveArgs` (``sftgo train``'s flags and the TRL
config's fields), config validation, the pipeline, sweep run names, report labels and the report's defaults for
settings older runs lack are read from the declarations. Importing this package imports neither torch nor
transformers (tensor code imports torch when it runs). Slow, obvious references of every objective live in
``tests/reference_objectives.py``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields

from ..errors import ConfigError
from .args import missing_reference, objective_args
from .asft import ASFT, ASFT_KL, ASFTSettings, asft_chunk_loss
from .base import Objective, lambda_schedule
from .common import GROUP_SCOPES, GROUP_STATS, METRIC_SETTINGS, TOKEN_HEADS, RunSettings, SharedSettings, scorer_settings
from .declare import Setting, declared, setting
from .groups import Grouped, group_means, group_stats, worst_onehot
from .loss_func import make_loss_func
from .rho1 import Rho1
from .sft import DFT, EAFT, SFT, InfoSFT
from .sft_go import SFTGo
from .sft_go_dro import DROSettings, SFTGoDRO
from .target_sft import TARGET_RESIDUALS, TargetSFT, TargetSFTSettings, target_sft_chunk_loss
from .weightings import (TOKEN_WEIGHTS, DFTWeighting, EAFTWeighting, InfoSFTWeighting, NoWeighting, dft_weights,
                         eaft_weights, infosft_weights)

OBJECTIVES = {
    "sft": SFT,
    "sft-go": SFTGo,
    "rho1": Rho1,
    "dft": DFT,
    "infosft": InfoSFT,
    "target-sft": TargetSFT,
    "sft-go-dro": SFTGoDRO,
    "eaft": EAFT,
    "asft": ASFT,
}


@dataclass
class Choices:
    """The two settings that pick a row of the tables above."""

    objective: str = setting("sft-go", help=f"Training objective: one of {', '.join(OBJECTIVES)}.")
    token_weight: str = setting(
        "none", added=True,
        help=f"Token weighting t_n ({', '.join(TOKEN_WEIGHTS)}, or module:function for your own) multiplying each "
             "token's loss inside sft, sft-go (2 or k groups), sft-go-dro and rho1: dft sg(p), infosft InfoSFT's "
             "weight (--infosft_p), eaft the normalized top-k entropy ** alpha (--eaft_*). --objective "
             "dft|infosft|eaft is sft with that weighting. The formula: README, 'Token weights compose'; your own "
             "function: README, 'Your own token weighting'.")


# The order config.yaml has always listed these settings in (a run's file stays the same); a setting declared later
# follows them in declaration order.
_FIELD_ORDER = ("objective", "lam", "lam_min", "keep_ratio", "token_weight", "infosft_p", "eaft_alpha", "eaft_k",
                "eaft_normalize", "asft_alpha", "asft_kl", "target_gamma", "target_residual", "target_topk",
                "num_groups", "dro_eta", "scorer", "percentile", "group_scope", "group_stats", "ref_model_name_or_path",
                "llmlingua2_model", "score_cache_dir", "token_head", "head_chunk_size")


def _declared_settings() -> dict[str, Setting]:
    parts = [Choices, SharedSettings, *(w.Settings for w in TOKEN_WEIGHTS.values()),
             *(o.Settings for o in OBJECTIVES.values()), RunSettings]
    found: dict[str, Setting] = {}
    for s in [*(s for part in parts for s in declared(part)), *scorer_settings()]:
        found.setdefault(s.name, s)
    rank = {n: i for i, n in enumerate(_FIELD_ORDER)}
    return {n: found[n] for n in sorted(found, key=lambda n: rank.get(n, len(rank)))}


SETTINGS: dict[str, Setting] = _declared_settings()
"""Every declared setting (name -> :class:`~sftgo.objectives.declare.Setting`), in ObjectiveArgs' field order."""

# Every setting that changes some objective's loss: what tells two methods apart (sweep names, report labels).
METHOD_SETTINGS = tuple(sorted({s for o in OBJECTIVES.values() for s in o.settings}
                               | {s for w in TOKEN_WEIGHTS.values() for s in w.settings} | {"token_weight"}))
# Settings newer than some runs, with the default that is what those runs did (sftgo.report.runs.SETTINGS_ADDED).
SETTINGS_ADDED = {n: s.default for n, s in SETTINGS.items() if s.added}
# Short labels of settings in report tables (sftgo.report.runs.SHORT).
SHORT = {n: s.short for n, s in SETTINGS.items() if s.short}


def settings_of(name, config=None) -> set[str] | None:
    """The settings objective ``name`` reads (None for a name this version does not know: an old run, say).

    ``config`` (a mapping or a config object; None: defaults): an aggregator (an objective that takes
    ``--token_weight``) reads ``token_weight``, and the settings of the token weighting it names."""
    obj = OBJECTIVES.get(str(name))
    if obj is None:
        return None
    read = set(obj.settings)
    read |= set(obj.extra_settings(config if not isinstance(config, dict) else _Mapping(config)))
    if obj.token_weight is None and not obj.chunk_loss:
        read.add("token_weight")
        tw = config.get("token_weight") if isinstance(config, dict) else getattr(config, "token_weight", None)
        read |= set(getattr(TOKEN_WEIGHTS.get(str(tw)), "settings", ()))
    return read


class _Mapping:
    """A run's config mapping read as attributes (what :meth:`Objective.extra_settings` reads)."""

    def __init__(self, values: dict):
        self._values = values

    def __getattr__(self, name):
        return self._values.get(name)


def objective_class(name: str) -> type[Objective]:
    """The declaration of objective ``name`` (a clear error naming the choices otherwise)."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"objective {name!r} is not one of {', '.join(OBJECTIVES)}") from None


def ignored_settings(args, defaults) -> list[str]:
    """Method settings ``args`` sets away from their defaults that its objective does not read."""
    objective_class(args.objective)  # a clear error for a name it does not know
    read = settings_of(args.objective, args) | set(METRIC_SETTINGS)
    return [k for k in METHOD_SETTINGS if k not in read and getattr(args, k, None) != defaults.get(k)]


ObjectiveArgs = objective_args(SETTINGS, OBJECTIVES, ignored_settings, __name__)


def compute_loss_func(name: str, **settings):
    """The objective ``name`` (a key of :data:`OBJECTIVES`) as ``fn(outputs, labels, num_items_in_batch=None) ->
    loss`` (:mod:`sftgo.objectives.loss_func`). ``settings`` use the names of ``sftgo train``'s flags (``infosft_p``,
    ``target_gamma``, ``target_residual``, ``target_topk``, ...) and are checked as the config checks them.

    outputs: anything with ``.logits`` ``[B, T, V]`` (or ``outputs["logits"]``); labels: ``[B, T]`` long, -100 where no
    loss is taken, not shifted (position t's logits predict ``labels[:, t + 1]``, as transformers' causal-LM loss).
    Without ``num_items_in_batch`` the loss is the mean over this batch's supervised tokens."""
    valid = {f.name for f in fields(ObjectiveArgs)} - {"objective"}
    for k in settings:
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=3)
            raise ConfigError(f"compute_loss_func: unknown setting {k!r}"
                              + (f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(sorted(valid))}"))
    args = ObjectiveArgs(objective=name, **settings)
    static = TOKEN_WEIGHTS.get(OBJECTIVES[name].weighting_name(args)) if name in OBJECTIVES else None
    if static is not None and static.columns:  # before the config's checks: a reference would not help here
        raise ConfigError(f"compute_loss_func: token_weight {args.token_weight!r} reads {', '.join(static.columns)}, "
                          "per-token columns a reference model computes before training, which a compute_loss_func "
                          "does not receive; use sftgo.integrations.trl.SFTGoSFTTrainer (TRL) or `sftgo train` with "
                          "ref_model_name_or_path")
    args.check_objective()
    objective = OBJECTIVES[name](args)
    if objective.token_columns(args) or objective.step_stats:
        cols = ", ".join(objective.token_columns(args)) or "the optimizer step's group statistics"
        raise ConfigError(f"compute_loss_func: objective {name!r} needs {cols}, which a compute_loss_func does not "
                          "receive; use sftgo.integrations.trl.SFTGoSFTTrainer (TRL) or sftgo.trainer.SFTGoTrainer")
    if objective.needs_ref_model(args):
        raise ConfigError(f"compute_loss_func: objective {name!r} with these settings runs a reference model beside "
                          "the trained one (asft, target_residual='reference'), which a compute_loss_func does not have; "
                          "use SFTGoSFTTrainer or SFTGoTrainer with ref_model_name_or_path (target-sft: or a uniform, "
                          "model or topk residual here)")
    return make_loss_func(name, objective)


__all__ = [
    "ASFT_KL",
    "OBJECTIVES",
    "METHOD_SETTINGS",
    "METRIC_SETTINGS",
    "TARGET_RESIDUALS",
    "TOKEN_WEIGHTS",
    "Objective",
    "ObjectiveArgs",
    "asft_chunk_loss",
    "compute_loss_func",
    "dft_weights",
    "eaft_weights",
    "group_means",
    "infosft_weights",
    "lambda_schedule",
    "objective_class",
    "settings_of",
    "target_sft_chunk_loss",
    "worst_onehot",
]
