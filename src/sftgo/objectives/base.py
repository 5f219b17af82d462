"""The base of every objective (:class:`Objective`: its declaration and the plain-SFT loss) and the lambda schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .declare import names
from .weightings import weighting_class

if TYPE_CHECKING:
    import torch


def lambda_schedule(step: int, total_steps: int, lam_max: float, lam_min: float) -> float:
    """Lambda at optimizer step ``step`` (Eq. 5): ``max(lam_max * (1 - step / total_steps), lam_min)``.

    ``lam_min >= lam_max`` means a static ``lam = lam_max``. Steps past ``total_steps`` give ``lam_min``.
    """
    for name, v in (("lam_max", lam_max), ("lam_min", lam_min)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= float(v) <= 1.0):
            raise ValueError(f"{name} must be a float in [0, 1]; got {v!r}")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or step < 0:
        raise ValueError(f"step must be a non-negative number; got {step!r}")
    if float(lam_min) >= float(lam_max):
        return float(lam_max)
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, float)) or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive number for a decaying lambda; got {total_steps!r}")
    return max(float(lam_max) * (1.0 - float(step) / float(total_steps)), float(lam_min))


class Objective:
    """Plain SFT: ``c_n = 1`` (the mean token CE over the optimizer step)."""

    # -- declaration
    Settings = None  # a dataclass of its own settings (sftgo.objectives.declare.setting fields); None: none
    shared: tuple[str, ...] = ()  # the shared settings it reads (sftgo.objectives.common.SharedSettings)
    settings: tuple[str, ...] = ()  # config fields that change this objective's loss (run names, report labels):
    # ``shared`` and its Settings' fields
    uses_lam = False  # whether lam / lam_min apply (and lam is logged)
    step_stats = False  # whether --group_stats applies (the coefficients come from the step's statistics)
    metrics: tuple[str, ...] = ()  # what it logs beyond loss, loss_ce, mean_p, tokens (and the metric grouping)
    chunk_loss = False  # True: a per-chunk loss over whole logits rows (Target-SFT), not a coefficient on -log p
    row_weights = False  # chunk-loss objectives: whether chunk_fn's function takes the rows' data weights (4th arg)
    row_metrics: tuple[str, ...] = ()  # chunk-loss objectives: per-token values the chunk function reports (logged)
    baseline = False  # the plain-SFT row tables compare against (the paper's baseline)
    eta_ablation = False  # its runs form the eta figure (Figure 3: a grouping by importance percentile, with lambda)
    token_weight: str | None = None  # a shorthand's fixed token weighting (dft, infosft, eaft); None: --token_weight

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.settings = (*cls.shared, *names(cls.Settings))

    def __init__(self, args):
        self.args = args  # the run's config; never modified
        self.weighting = weighting_class(self.weighting_name(args))(args)

    @classmethod
    def weighting_name(cls, args) -> str:
        """The token weighting this objective applies: its own (a shorthand) or ``--token_weight``."""
        return cls.token_weight or getattr(args, "token_weight", None) or "none"

    @classmethod
    def check_token_weight(cls, args) -> None:
        """Raise ValueError for a ``--token_weight`` this objective cannot take."""
        tw = getattr(args, "token_weight", None) or "none"
        weighting_class(tw).check(args, tw)  # a ValueError naming the choices; a module:function that does not import
        if tw == "none":
            return
        if cls.chunk_loss:
            raise ValueError(f"token_weight: {args.objective} is a loss over whole logits rows, which a token weighting "
                             "does not multiply; use it with sft, sft-go, sft-go-dro or rho1, or token_weight none")
        if cls.token_weight is not None:
            raise ValueError(f"token_weight: objective {args.objective} is sft with token_weight {cls.token_weight}; "
                             f"set one of them (--objective sft --token_weight {tw}, say), not both")

    @classmethod
    def takes_data_weights(cls) -> bool:
        """Whether the loss weighs tokens by their data weights (a coefficient objective, or a chunk loss whose rows take
        them); if not, data weights are ignored and the normalizer stays the token count."""
        return not cls.chunk_loss or cls.row_weights

    def base(self, tokens, scale=1.0):
        """The head's coefficient ``scale_n * w_n * t_n`` (data weights ``w`` from the batch's ``loss_weight`` column, the
        token weighting ``t`` computed in the head); ``scale`` itself when there is neither (the plain path)."""
        import torch

        w = tokens.columns.get("loss_weight")
        if w is not None:
            scale = w if not isinstance(scale, torch.Tensor) and float(scale) == 1.0 else scale * w
        fns = self.weighting.fns()
        if self.weighting.columns:  # per-token columns computed before training: PriFT's static t_n, the ref_logp a
            fns = {**fns, **self.weighting.column_fns(tokens)}  # module:function weighting reads
        if not fns and w is None:
            return scale
        from ..token_head import TokenCoef

        return TokenCoef(scale, **fns)

    def stat_weights(self, tokens, t: torch.Tensor | None):
        """``(b, w)`` of a micro-batch's tokens for :func:`group_stats`: ``b = w t`` (None when 1) and the data weights
        ``w`` (None without); ``t`` the token weighting the head applied (None without)."""
        w = tokens.columns.get("loss_weight")
        if w is None:
            return t, None
        return (w if t is None else w.to(t.dtype) * t), w

    @classmethod
    def columns(cls, args) -> tuple[str, ...]:
        """The per-token columns the loss reads (beyond the targets)."""
        return ()

    @classmethod
    def token_columns(cls, args) -> tuple[str, ...]:
        """Every per-token column the loss reads: its own (:meth:`columns`) and its token weighting's (computed before
        training: PriFT's reference quantities, a ``module:function`` weighting's ``ref_logp``)."""
        own = cls.columns(args)
        tw = cls.weighting_name(args)
        try:
            theirs = weighting_class(tw).columns_of(tw)
        except ValueError:  # an unknown name: the check of token_weight says so
            theirs = ()
        return (*own, *(c for c in theirs if c not in own))

    @classmethod
    def extra_settings(cls, config) -> tuple[str, ...]:
        """Settings it reads beyond ``settings`` under ``config`` (a mapping or config object): rho1 reads the scope
        and the scorer at ``--group_scope dataset``."""
        return ()

    @classmethod
    def needs_ref_logp(cls, args) -> bool:
        """Whether reference log-probs (the ``ref_logp`` column, computed once before training) are needed."""
        return "ref_logp" in cls.token_columns(args)

    @classmethod
    def needs_ref_model(cls, args) -> bool:
        """Whether a frozen reference model runs beside the trained one in every step."""
        return False

    @classmethod
    def check_args(cls, args) -> None:
        """Raise ValueError for settings this objective cannot run with (the config turns it into a ConfigError)."""

    num_groups = 0

    def dynamic(self) -> bool:
        """Whether its coefficients depend on the current log p through the groups (a no-grad pre-pass first)."""
        return False

    # -- the loss
    def coefficient(self, tokens, lam: float, state: dict, logp: torch.Tensor | None = None):
        """``(c, ids)`` of one micro-batch from its own statistics: c a float, a ``[N]`` tensor, a
        :class:`sftgo.token_head.TokenCoef` (a token weighting computed inside the head, times a per-token scale) or a
        :class:`sftgo.token_head.GroupCoef`; ids ``[N]`` group ids or None."""
        return self.base(tokens), None

    def metric_weight(self, logp: torch.Tensor, stats: dict) -> torch.Tensor | None:
        """The per-token weight logged as ``mean_weight`` (None: not logged): the token weighting ``t_n`` the head
        applied (``stats["token_weight"]``); a chunk-loss objective gives its own."""
        return stats.get("token_weight")

    def important(self, tokens, logp: torch.Tensor, ids) -> torch.Tensor | None:
        """The tokens logged as "important" (bool ``[N]``): the static eta split per example (``--scorer``), else the
        excess-loss split; None when the batch has neither column."""
        from ..grouping import percentile_groups_flat

        if "importance" in tokens.columns:
            values = tokens.columns["importance"]
        elif "ref_logp" in tokens.columns:
            values = tokens.columns["ref_logp"] - logp
        else:
            return None
        return percentile_groups_flat(values, tokens.example, self.args.percentile)

    def extra_metrics(self, sums: dict, state: dict) -> dict:
        return {}

    # -- state across optimizer steps (owned by the trainer)
    def next_state(self, state: dict, sums: torch.Tensor, counts: torch.Tensor) -> tuple[dict, dict]:
        """``(new state, logged info)`` from the finished step's all-reduced group CE sums and counts."""
        return state, {}
