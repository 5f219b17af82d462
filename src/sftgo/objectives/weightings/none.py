"""The token weighting ``none`` (``t_n = 1``) and the base every token weighting extends."""

from __future__ import annotations

from ..declare import names


class NoWeighting:
    """``t_n = 1``.

    A token weighting (``--token_weight``): a declaration (``Settings``, a torch-free dataclass of the settings it
    reads) and the functions the head computes ``t_n`` with, inside its chunk loop, from the token's own detached log p
    (``of_logp``) or its logits row (``of_row``); or (``of_token``) from the per-token ``columns`` computed once before
    training (a static weighting's, PriFT's) and the token's log p and row; and optionally the token's loss value
    ``value_of_logp(lp) -> f`` when that is not ``t_n CE_n`` (the power family: the head's loss value, the run's logged
    loss and the group statistics use ``f``, the gradient stays ``t_n`` times CE's)."""

    Settings = None  # a dataclass of sftgo.objectives.declare.setting fields (None: no settings)
    shared: tuple[str, ...] = ()  # the shared settings it reads (sftgo.objectives.common.SharedSettings)
    settings: tuple[str, ...] = ()  # config fields that change the weighting (run names, report labels): ``shared``
    # and its Settings' fields
    columns: tuple[str, ...] = ()  # the batch's per-token columns it reads (computed once before training: PriFT's
    # static t_n from sftgo.pipeline.REFERENCE_COLUMNS, a module:function weighting's ref_logp)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.settings = (*cls.shared, *names(cls.Settings))

    def __init__(self, args):
        self.args = args

    @classmethod
    def check(cls, args, name: str) -> None:
        """Raise ValueError (a ConfigError) when ``--token_weight name`` cannot run (a function that does not import)."""

    @classmethod
    def columns_of(cls, name: str) -> tuple[str, ...]:
        """The per-token columns ``--token_weight name`` reads (``ref_logp``: the reference pass runs)."""
        return cls.columns

    def fns(self) -> dict:
        """``of_logp`` / ``of_row`` (/ ``of_token``) for :class:`sftgo.token_head.TokenCoef` (none: ``t = 1``)."""
        return {}

    def column_fns(self, tokens) -> dict:
        """What the head gets from the micro-batch's ``columns`` (asked only when ``columns`` is not empty): those of
        its tokens (a :class:`sftgo.tokens.TokenBatch`), handed to ``of_token`` chunk by chunk."""
        return {"columns": {c: tokens.columns[c] for c in self.columns if c in tokens.columns}}
