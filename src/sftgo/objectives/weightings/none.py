"""The token weighting ``none`` (``t_n = 1``) and the base every token weighting extends."""

from __future__ import annotations

from ..declare import names


class NoWeighting:
    """``t_n = 1``.

    A token weighting (``--token_weight``): a declaration (``Settings``, a torch-free dataclass of the settings it
    reads) and the functions the head computes ``t_n`` with, inside its chunk loop, from the token's own detached log p
    (``of_logp``) or its logits row (``of_row``)."""

    Settings = None  # a dataclass of sftgo.objectives.declare.setting fields (None: no settings)
    settings: tuple[str, ...] = ()  # config fields that change the weighting (run names, report labels): Settings'
    columns: tuple[str, ...] = ()  # the batch's per-token columns it reads (``ref_logp``), passed to the head

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.settings = names(cls.Settings)

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
