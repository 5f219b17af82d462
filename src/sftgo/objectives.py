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
          infosft sg(p) relu(1 - logit(p) / logit(P)) | eaft (H_k / log k) ** alpha
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

Adding an objective: one class below (its declaration and functions) and one row in :data:`OBJECTIVES`. Nothing
else in sftgo tests an objective's name: config validation, the pipeline, sweep run names and report labels read the
declaration. Slow, obvious references of every objective live in ``tests/reference_objectives.py``.
"""

from __future__ import annotations

import math


class _Torch:
    """torch, imported on first use: the declarations below are read by the report and the sweep planner, which must
    not pay for (or depend on) importing torch; every tensor function here touches ``torch.<name>`` only when run."""

    def __getattr__(self, name):
        import torch as _t

        return getattr(_t, name)


torch = _Torch()

# Logit clamp for InfoSFT: sigmoid(-80) ~ 1.8e-35, so anything beyond is "p = 0" or "p = 1" for all
# practical purposes, and a finite clamp keeps 0 * inf = NaN out of the weight.
_LOGIT_CLAMP = 80.0

TARGET_RESIDUALS = ("uniform", "model", "topk", "reference")
# ASFT's KL anchor: forward = KL(reference || model), what the authors' code and LLaMA-Factory compute; reverse =
# KL(model || reference), what the paper's Eq. 6 and Section 5.3 write (see the ASFT class).
ASFT_KL = ("forward", "reverse")

# Settings that choose the *logged* grouping of every objective (the important / unimportant curves of Figure 2, also
# for plain SFT), beside the settings that change an objective's loss (``settings`` of each class).
METRIC_SETTINGS = ("scorer", "percentile", "keep_ratio", "llmlingua2_model")


def dft_weights(logp: torch.Tensor) -> torch.Tensor:
    """DFT token weight ``w = sg(p)`` with ``p = exp(logp)`` (Dynamic Fine-Tuning).

    logp: ``[...]`` float log-probabilities of the target tokens. Returns ``[...]``, detached.
    """
    return logp.detach().exp()


def infosft_weights(logp: torch.Tensor, P: float = 0.93) -> torch.Tensor:
    """InfoSFT token weight ``w = sg(p) * relu(1 - sg(logit(p)) / logit(P))``, detached.

    ``logit(p) = log(p / (1 - p))``. The weight vanishes for confident tokens (``p >= P``), peaks at
    medium ``p`` and tends to 0 as ``p -> 0`` (``p * |log p|`` -> 0).

    Numerics: ``logit(p)`` is computed as ``logp - log1p(-p)`` (no division, accurate for small p)
    with ``p`` clamped below 1 so ``log1p(-p)`` stays finite when ``logp == 0``, and the logit is
    clamped to ``[-80, 80]`` so ``logp = -inf`` gives ``p = 0`` times a finite factor, not ``0 * inf``.

    logp: ``[...]`` float. P: confidence threshold in (0.5, 1). Returns ``[...]``, detached.
    """
    if not (isinstance(P, (int, float)) and 0.5 < float(P) < 1.0):
        raise ValueError(f"infosft P must be a float in (0.5, 1) (default 0.93); got {P!r}")
    lp = logp.detach()
    p = lp.exp()
    # Largest float below 1 in this dtype: keeps log1p(-p) finite for p == 1.
    one_minus = 1.0 - torch.finfo(lp.dtype).eps
    logit = lp - torch.log1p(-p.clamp(max=one_minus))
    logit = logit.clamp(-_LOGIT_CLAMP, _LOGIT_CLAMP)
    logit_P = math.log(P / (1.0 - P))
    return p * torch.relu(1.0 - logit / logit_P)



def eaft_weights(logits: torch.Tensor, k: int = 20, alpha: float = 1.0, normalize: bool = True) -> torch.Tensor:
    """EAFT token weight ``w = (H_k / log k) ** alpha`` (``normalize=False``: ``H_k ** alpha``), detached.

    ``H_k = -sum_j q_j log q_j`` is the entropy of ``q = softmax`` over the row's ``k`` largest logits (the top-k
    approximation of the full entropy, EAFT's choice for speed); ``log k`` is its largest value, so the normalized
    weight lies in ``[0, 1]`` and ``alpha = 0`` gives plain SFT (``0 ** 0 = 1``). ``k`` is capped at the vocabulary.
    The log-softmax over the top-k is exact (no epsilon inside the log).

    logits: ``[c, V]`` float (one chunk of rows; upcast to fp32 at least). Returns ``[c]``.
    """
    z = logits.detach()
    z = z.to(torch.promote_types(z.dtype, torch.float32))
    k = min(int(k), z.shape[-1])
    logq = torch.log_softmax(z.topk(k, dim=-1).values, dim=-1)  # [c, k]
    H = (-(logq.exp() * logq).sum(dim=-1)).clamp(min=0.0)  # rounding can leave a -1e-8 for a one-hot row
    if normalize:
        H = H / math.log(k) if k > 1 else torch.zeros_like(H)  # one class: no uncertainty to measure
    return H.pow(float(alpha))


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



# ---------------------------------------------------------------------------------------------
# Pure pieces shared by the objectives.
# ---------------------------------------------------------------------------------------------


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


def asft_chunk_loss(z: torch.Tensor, y: torch.Tensor, ref_logits: torch.Tensor, *, alpha: float,
                    kl: str = "forward", row_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ASFT over rows of logits: ``(sum_rows w [-sg(p_y) log p_y + alpha * KL_row], KL_row [c] detached)``, ``w`` the
    rows' data weights (``row_weight`` ``[c]``; None: 1).

    ``p = softmax(z)`` (the trained model), ``r = softmax(ref_logits)`` (the frozen reference, never differentiated);
    ``KL_row`` over the whole vocabulary: ``forward`` ``sum_v r_v (log r_v - log p_v)``, ``reverse``
    ``sum_v p_v (log p_v - log r_v)``. The first term is DFT's; ``alpha = 0`` gives DFT. An unnormalized sum (the
    trainer divides by the step's count K). z, ref_logits: ``[c, V]`` (upcast from half precision); y: ``[c]`` long.
    Called per chunk by the token head (no ``[N, V]`` tensor)."""
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    logq = torch.log_softmax(z, dim=-1)  # [c, V]: one chunk at a time
    logq_y = logq.gather(1, y[:, None]).squeeze(1)
    logr = torch.log_softmax(ref_logits.detach().to(logq.dtype), dim=-1)
    if kl == "forward":
        kl_rows = (logr.exp() * (logr - logq)).sum(dim=-1)
    elif kl == "reverse":
        kl_rows = (logq.exp() * (logq - logr)).sum(dim=-1)
    else:
        raise ValueError(f"kl must be one of {ASFT_KL}; got {kl!r}")
    per_row = -logq_y.detach().exp() * logq_y + float(alpha) * kl_rows
    loss = (per_row if row_weight is None else per_row * row_weight.to(per_row.dtype)).sum()
    return loss, kl_rows.detach()


def group_means(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``S_g / C_g`` per group, 0 for an empty group (``C_g = 0``; a weighted count may be below 1, so no clamp)."""
    return sums / torch.where(counts > 0, counts, torch.ones_like(counts))


def worst_onehot(means: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[G]`` one-hot of the non-empty group with the largest mean loss (ties -> lowest id; all empty -> zeros).
    Device-agnostic (no Python scalars, no host sync)."""
    ranked = torch.where(counts > 0, means, torch.full_like(means, -math.inf))
    hot = (torch.arange(means.shape[0], device=means.device) == torch.argmax(ranked)).to(means.dtype)
    return hot * (counts > 0).any().to(means.dtype)


def group_stats(ids: torch.Tensor, ce: torch.Tensor, num_groups: int, coef: torch.Tensor | None = None,
                weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive step statistics ``(S [G], C [G])`` on ``ce``'s device: ``S_g = sum_{n in g} b_n CE_n`` with ``b_n =
    w_n t_n`` (``coef``; 1 when None) and ``C_g = sum_{n in g} w_n`` (``weight``, the data weights; the token count when
    None)."""
    ids = ids.to(ce.device)
    terms = ce if coef is None else ce * coef.to(ce.device, ce.dtype)
    sums = torch.zeros(num_groups, dtype=ce.dtype, device=ce.device).index_add_(0, ids, terms)
    w = torch.ones_like(ce) if weight is None else weight.to(ce.device, ce.dtype)
    counts = torch.zeros(num_groups, dtype=ce.dtype, device=ce.device).index_add_(0, ids, w)
    return sums, counts


# ---------------------------------------------------------------------------------------------
# Token weightings t_n (``--token_weight``): a declaration (the settings it reads) and the functions the head
# computes it with, inside its chunk loop, from the token's own detached log p or its logits row.
# ---------------------------------------------------------------------------------------------


class NoWeighting:
    """``t_n = 1``."""

    settings: tuple[str, ...] = ()  # config fields that change the weighting (run names, report labels)

    def __init__(self, args):
        self.args = args

    def fns(self) -> dict:
        """``of_logp`` / ``of_row`` for :class:`sftgo.token_head.TokenCoef` (none: ``t = 1``)."""
        return {}


class DFTWeighting(NoWeighting):
    """DFT: ``t_n = sg(p_n)`` (:func:`dft_weights`)."""

    def fns(self):
        return {"of_logp": dft_weights}


class InfoSFTWeighting(NoWeighting):
    """InfoSFT: ``t_n = sg(p) relu(1 - sg(logit p) / logit P)`` (:func:`infosft_weights`)."""

    settings = ("infosft_p",)

    def fns(self):
        P = self.args.infosft_p
        return {"of_logp": lambda lp: infosft_weights(lp, P)}


class EAFTWeighting(NoWeighting):
    """EAFT: ``t_n = sg(H_k(z_n) / log k) ** alpha`` from the token's logits row (:func:`eaft_weights`; top-k per chunk
    in the head, no ``[N, V]`` tensor)."""

    settings = ("eaft_alpha", "eaft_k", "eaft_normalize")

    def fns(self):
        a = self.args
        k, alpha, norm = int(a.eaft_k), float(a.eaft_alpha), bool(a.eaft_normalize)
        return {"of_row": lambda z: eaft_weights(z, k, alpha, norm)}


TOKEN_WEIGHTS = {
    "none": NoWeighting,
    "dft": DFTWeighting,
    "infosft": InfoSFTWeighting,
    "eaft": EAFTWeighting,
}


# ---------------------------------------------------------------------------------------------
# The objectives. Class attributes are the declaration (the one table of objective facts); methods are pure.
# ---------------------------------------------------------------------------------------------


class Objective:
    """Plain SFT: ``c_n = 1`` (the mean token CE over the optimizer step)."""

    # -- declaration
    settings: tuple[str, ...] = ()  # config fields that change this objective's loss (run names, report labels)
    uses_lam = False  # whether lam / lam_min apply (and lam is logged)
    step_stats = False  # whether --group_stats applies (the coefficients come from the step's statistics)
    metrics: tuple[str, ...] = ()  # what it logs beyond loss, loss_ce, mean_p, tokens (and the metric grouping)
    chunk_loss = False  # True: a per-chunk loss over whole logits rows (Target-SFT), not a coefficient on -log p
    row_weights = False  # chunk-loss objectives: whether chunk_fn's function takes the rows' data weights (4th arg)
    row_metrics: tuple[str, ...] = ()  # chunk-loss objectives: per-token values the chunk function reports (logged)
    baseline = False  # the plain-SFT row tables compare against (the paper's baseline)
    eta_ablation = False  # its runs form the eta figure (Figure 3: a grouping by importance percentile, with lambda)
    token_weight: str | None = None  # a shorthand's fixed token weighting (dft, infosft, eaft); None: --token_weight

    def __init__(self, args):
        self.args = args  # the run's config; never modified
        self.weighting = TOKEN_WEIGHTS[self.weighting_name(args)](args)

    @classmethod
    def weighting_name(cls, args) -> str:
        """The token weighting this objective applies: its own (a shorthand) or ``--token_weight``."""
        return cls.token_weight or getattr(args, "token_weight", None) or "none"

    @classmethod
    def check_token_weight(cls, args) -> None:
        """Raise ValueError for a ``--token_weight`` this objective cannot take."""
        tw = getattr(args, "token_weight", None) or "none"
        if tw not in TOKEN_WEIGHTS:
            raise ValueError(f"token_weight: {tw!r} is not one of {', '.join(TOKEN_WEIGHTS)}")
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
        w = tokens.columns.get("loss_weight")
        if w is not None:
            scale = w if not isinstance(scale, torch.Tensor) and float(scale) == 1.0 else scale * w
        fns = self.weighting.fns()
        if not fns and w is None:
            return scale
        from .token_head import TokenCoef

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
    def needs_ref_logp(cls, args) -> bool:
        """Whether reference log-probs (the ``ref_logp`` column, computed once before training) are needed."""
        return "ref_logp" in cls.columns(args)

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
        from .grouping import percentile_groups_flat

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


class SFT(Objective):
    """Cross-entropy over response tokens: ``c_n = w_n t_n`` (1 without data weights and ``--token_weight``)."""

    baseline = True


class DFT(SFT):
    """DFT (TRL ``loss_type="dft"``): ``sft`` with ``--token_weight dft``, ``c_n = sg(p_n)``."""

    token_weight = "dft"
    settings = DFTWeighting.settings
    baseline = False
    metrics = ("mean_weight",)


class InfoSFT(SFT):
    """InfoSFT: ``sft`` with ``--token_weight infosft``, ``c_n = sg(p) relu(1 - sg(logit p) / logit P)``."""

    token_weight = "infosft"
    settings = InfoSFTWeighting.settings
    baseline = False
    metrics = ("mean_weight",)


class EAFT(SFT):
    """EAFT, entropy-adaptive fine-tuning (Diao et al. 2026, arXiv 2601.02151): ``sft`` with ``--token_weight eaft``,
    ``c_n = sg(H_k(z_n) / log k) ** alpha``, ``H_k`` the entropy of the softmax over the token's ``k`` largest logits
    (:func:`eaft_weights`). Tokens the model is sure of (low entropy), right or wrong ("confident conflicts"), get little
    gradient; uncertain ones learn as in SFT. Computed in the fused head from each chunk's logits (top-k per chunk, no
    ``[N, V]`` tensor).

    Paper vs peers (measured differences in benchmarks/README.md, from dev/eaft_peer_check.py): the paper (and the
    PRIS-CV/EAFT README) multiplies the CE by a *normalized* top-K entropy with K = 20, no gradient through it.
    LLaMA-Factory's ``use_eaft_loss`` (``_eaft_cross_entropy`` in hiyouga/LlamaFactory@38a6312, the authors' merge)
    fixes k = 20 (no setting) and divides by the constant 3.0, not ln 20 = 2.9957: its weights are ours times
    (ln 20 / 3)^alpha, 0.14% smaller per unit of alpha; its log-softmax over the top-k is exact (no epsilon). axolotl's
    ``eaft_loss`` (axolotl-ai-cloud/axolotl@ce4154b, ``eaft_alpha`` / ``eaft_k``, written from the authors' earlier
    fork) does not normalize at all (weights ln k times ours at alpha = 1: a 3x larger loss at k = 20) and puts an
    epsilon inside the log, ``-sum q log(q + 1e-10)`` (differences ~1e-6). sftgo: ``--eaft_normalize true`` (default,
    the paper's normalized entropy, divided by ln k exactly, so any k gives weights in [0, 1]) or ``false`` (axolotl's
    raw entropy, without its epsilon).
    """

    token_weight = "eaft"
    settings = EAFTWeighting.settings
    baseline = False
    metrics = ("mean_weight",)


class TargetSFT(Objective):
    """Target-SFT: CE toward ``Q = gamma onehot(y) + (1 - gamma) residual`` (a per-chunk loss over whole rows)."""

    settings = ("target_gamma", "target_residual", "target_topk", "ref_model_name_or_path")
    chunk_loss = True
    row_weights = True

    @classmethod
    def needs_ref_model(cls, args):
        return args.target_residual == "reference"

    def chunk_fn(self, ref_weight: torch.Tensor | None):
        """``fn(logits [c, V], targets [c], reference hidden states [c, H_ref] | None) -> chunk loss`` for the head."""
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


class ASFT(Objective):
    """Anchored SFT (Zhu et al. 2025, arXiv 2509.23753): DFT anchored to a frozen reference model by a KL term,
    ``loss_n = -sg(p_n) log p_n + alpha * KL_n`` (:func:`asft_chunk_loss`), ``KL_n`` over the whole vocabulary at
    token n's position, between the trained model and the reference (``--ref_model_name_or_path``; ``initial`` = the
    model before training, the paper's "pretrained model"). Gradient: DFT's plus ``alpha (p - r)`` per row (forward
    KL). The reference runs beside the trained model every step; the head computes the loss chunk by chunk from the
    reference's hidden rows (its logits one chunk at a time, no ``[N, V]`` tensor). Logs ``kl`` (mean KL_n) and
    ``mean_weight`` (mean sg(p_n)).

    Paper vs peers (dev/asft_peer_check.py runs the peers' own loss code; measured differences in
    benchmarks/README.md): the paper's Eq. 6 is ``L_DFT + lambda E_s[KL(pi_theta || pi_base)]`` and its Section 5.3
    says ASFT uses this *reverse* KL (policy || base) and that it beats the forward one; the authors' code
    (zhuchichi56/ASFT ``train_v2.py``, mode ``asft``, knob ``kl_weight``) and LLaMA-Factory's ``use_asft_loss``
    (hiyouga/LlamaFactory #10174, ``_kl_divergence``, knob ``asft_alpha``, merged by an author) both compute
    ``F.kl_div(log_softmax(policy), softmax(ref))``, the *forward* KL(ref || policy) (asked in zhuchichi56/ASFT issue
    #3). sftgo: ``--asft_kl forward`` (default: the code the results came from and what ``asft_alpha`` means in
    LLaMA-Factory) or ``reverse`` (the paper's formula). Coefficient: the paper uses lambda = 0.05 in its main runs and
    finds ~0.1 best in its ablation; both peers default to 0.1 (sftgo's ``--asft_alpha`` default). Normalization: the
    peers take each micro-batch's own mean over its supervised tokens (DFT mean + alpha KL mean); sftgo divides the
    step's sum by its token count K over all micro-batches and processes (equal for one micro-batch on one process);
    with data weights each row's loss is multiplied by its weight w and the step's sum divided by W = sum w.
    The peers feed the reference ``input_ids`` / ``attention_mask`` only; sftgo gives it the same inputs as the
    trained model (packed rows keep their position ids).
    """

    settings = ("asft_alpha", "asft_kl", "ref_model_name_or_path")
    metrics = ("mean_weight", "kl")
    row_metrics = ("kl",)  # per-token values the chunk loss reports, logged as their mean
    chunk_loss = True
    row_weights = True  # data weights multiply each row's DFT + alpha KL (normalizer W = sum w)

    @classmethod
    def needs_ref_model(cls, args):
        return True

    @classmethod
    def check_args(cls, args):
        if not args.ref_model_name_or_path:
            raise ValueError("ref_model_name_or_path: objective=asft anchors the model to a frozen reference; pass "
                             "--ref_model_name_or_path initial (the model before training, the paper's choice) or a "
                             "model folder / Hub id")

    def chunk_fn(self, ref_weight: torch.Tensor | None):
        """``fn(logits [c, V], targets [c], reference hidden states [c, H_ref], data weights [c] | None) -> (chunk
        loss, {"kl": [c]})``."""
        alpha, kl = float(self.args.asft_alpha), self.args.asft_kl

        def fn(z, y, rh, w=None):
            with torch.no_grad():
                ref = rh.to(ref_weight.dtype) @ ref_weight.T  # [c, V] reference logits, never differentiated
            loss, kl_rows = asft_chunk_loss(z, y, ref, alpha=alpha, kl=kl, row_weight=w)
            return loss, {"kl": kl_rows}

        return fn

    def metric_weight(self, logp, stats):
        return dft_weights(logp)


class Grouped(Objective):
    """Group objectives (see the module docstring): subclasses give the groups and their weights ``a_g``."""

    uses_lam = True
    step_stats = True
    needs_means = True  # a_g depends on the group means (the worst group): needs log p of the whole step
    num_groups = 2

    def dynamic(self) -> bool:
        """Whether the groups depend on the current log p (excess loss): a no-grad pre-pass decides them."""
        return "ref_logp" in self.columns(self.args)

    def batch_scope(self) -> bool:
        return self.args.group_scope == "batch"

    def lam(self, lam: float) -> float:
        return lam

    def values(self, tokens, logp=None) -> torch.Tensor:
        """The per-token score the groups are cut from: importance, or excess loss ``ref_logp - logp``."""
        if self.dynamic():
            return tokens.columns["ref_logp"] - logp
        return tokens.columns["importance"]

    def segments(self, tokens) -> torch.Tensor:
        """Per-example segments, or one segment for the whole micro-batch (batch scope)."""
        return torch.zeros_like(tokens.example) if self.batch_scope() else tokens.example

    def group_ids(self, values: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        from .grouping import percentile_groups_flat

        return percentile_groups_flat(values, segments, self.args.percentile).long()  # 1 = important

    def group_weights(self, means: torch.Tensor | None, counts: torch.Tensor, state: dict) -> torch.Tensor:
        return worst_onehot(means, counts)

    def group_coef(self, lam: float, a: torch.Tensor, counts: torch.Tensor, num_tokens) -> torch.Tensor:
        """The group factors ``f_g = (1 - lam) + lam * a_g * W / C_g`` ([G]; ``c_n = w_n t_n f_g``)."""
        return (1.0 - lam) + lam * a * num_tokens / torch.where(counts > 0, counts, torch.ones_like(counts))

    def coefficient(self, tokens, lam, state, logp=None):
        lam = self.lam(lam)
        ids = self.group_ids(self.values(tokens, logp), self.segments(tokens))
        G = self.num_groups
        w = tokens.columns.get("loss_weight")
        W = float(len(tokens)) if w is None else w.sum()  # the micro-batch's weight
        if self.needs_means:  # the worst group needs the micro-batch's log p: decided inside the fused head
            from .token_head import GroupCoef

            base = self.base(tokens)
            return GroupCoef(ids, G, lambda sums, counts: self.group_coef(
                lam, self.group_weights(group_means(sums, counts), counts, state), counts, W),
                base=None if isinstance(base, float) else base), ids
        ones = torch.ones(ids.shape[0], device=ids.device) if w is None else w.to(ids.device)
        counts = torch.zeros(G, device=ids.device, dtype=ones.dtype).index_add_(0, ids, ones)
        return self.base(tokens, self.group_coef(lam, self.group_weights(None, counts, state), counts, W)
                         .index_select(0, ids)), ids

    def decide(self, ids: list[torch.Tensor], sums: torch.Tensor | None, counts: torch.Tensor, state: dict, lam: float,
               num_tokens) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The optimizer step's per-token coefficients from its global statistics (``--group_stats exact|lagged``).

        ids: each micro-batch's group ids; sums / counts: ``[G]`` the step's ``S_g`` (None when the lagged means are
        used) and ``C_g`` (:func:`group_stats`), all micro-batches and processes; num_tokens: the step's weight ``W``;
        state: the trainer's (``lagged_means`` under lagged). Returns the group factors ``f_g`` of each micro-batch's
        tokens (:meth:`base` turns them into the head's coefficients) and the group the weights picked (None without
        means).
        """
        lam = self.lam(lam)
        means = None
        if self.needs_means:
            means = state.get("lagged_means") if sums is None else group_means(sums, counts)
        a = self.group_weights(means, counts, state)
        c = self.group_coef(lam, a, counts, float(num_tokens))
        picked = torch.argmax(a) if self.needs_means else None
        return [c.index_select(0, g.to(c.device)) for g in ids], picked

    def next_state(self, state, sums, counts):
        if not self.needs_means:
            return state, {}
        means = group_means(sums, counts)
        info = {"worst_group_step": torch.argmax(worst_onehot(means, counts))}
        if self.args.group_stats == "lagged":  # the next step's a_g comes from these means
            state = {**state, "lagged_means": means}
        return state, info


class SFTGo(Grouped):
    """SFT-GO (Eq. 3-4): ``(1 - lam) * CE + lam * max over groups of the group's mean CE``.

    Two groups (the paper): the top ``(100 - eta)%`` of each example by importance (or of the step, ``--group_scope
    batch``) vs the rest. ``--num_groups G > 2``: importance quantiles. ``--scorer reference``: groups by the current
    excess loss (Rho-1's grouping).
    """

    settings = ("scorer", "percentile", "keep_ratio", "lam", "lam_min", "num_groups", "group_scope", "group_stats",
                "llmlingua2_model", "ref_model_name_or_path")
    metrics = ("loss_important", "loss_unimportant", "frac_important", "worst_group", "worst_group_step")
    eta_ablation = True

    def __init__(self, args):
        super().__init__(args)
        self.num_groups = int(args.num_groups)

    @classmethod
    def columns(cls, args):
        return ("ref_logp",) if args.scorer == "reference" else ("importance",)

    @classmethod
    def check_args(cls, args):
        if args.scorer == "reference" and args.group_stats == "lagged":
            raise ValueError("group_stats: lagged needs groups known before the forward; with --scorer reference "
                             "(groups from the current loss) use exact or micro")
        if not args.scorer:
            raise ValueError("scorer: sft-go needs a grouping function; set --scorer (e.g. tfidf)")

    def group_ids(self, values, segments):
        if self.num_groups == 2:
            return super().group_ids(values, segments)
        from .grouping import quantile_groups_flat

        return quantile_groups_flat(values, segments, self.num_groups)

    def important(self, tokens, logp, ids):
        return ids == 1 if self.num_groups == 2 else super().important(tokens, logp, ids)


class SFTGoDRO(SFTGo):
    """Group-DRO variant: ``(1 - lam) * CE + lam * sum_g q_g CE_g``, with importance-quantile groups (``--num_groups``),
    q renormalized over the step's non-empty groups and updated once per optimizer step from the step's global group
    means: ``q_g <- q_g exp(dro_eta * CE_g)`` (Sagawa et al. 2020), empty groups keeping their weight. ``q`` (float64,
    uniform at the start) is trainer state. The "important" curve is the top quantile group."""

    settings = ("scorer", "lam", "lam_min", "num_groups", "group_scope", "group_stats", "llmlingua2_model",
                "ref_model_name_or_path", "dro_eta")
    metrics = ("loss_important", "loss_unimportant", "frac_important", "dro_q{g}")
    needs_means = False
    eta_ablation = False

    def group_ids(self, values, segments):
        from .grouping import quantile_groups_flat

        return quantile_groups_flat(values, segments, self.num_groups)

    def important(self, tokens, logp, ids):
        return ids == self.num_groups - 1

    def q(self, state: dict, device) -> torch.Tensor:
        q = state.get("dro_q")
        if q is None:
            return torch.full((self.num_groups,), 1.0 / self.num_groups, dtype=torch.float64, device=device)
        return q.to(device)

    def group_weights(self, means, counts, state):
        q = self.q(state, counts.device).to(counts.dtype) * (counts > 0).to(counts.dtype)
        return q / q.sum().clamp(min=torch.finfo(q.dtype).tiny)

    def next_state(self, state, sums, counts):
        """Exponentiated-gradient step in log space (a softmax over the active groups, so a large ``eta * CE`` cannot
        overflow); empty groups keep their weight exactly. No boolean indexing: runs on any device without a sync."""
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


class Rho1(Grouped):
    """Rho-1 (selective language modeling): mean CE over the top ``(100 - eta)%`` of the step's tokens by excess loss
    (current CE minus the reference's), i.e. SFT-GO with ``lam = 1``, excess-loss groups over the whole step, and the
    kept group's weight fixed to 1: the loss is the kept tokens' sum divided by their exact count. At least one token
    is kept."""

    settings = ("percentile", "keep_ratio", "group_stats", "ref_model_name_or_path")
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
        from .grouping import percentile_groups_flat

        keep = percentile_groups_flat(values, segments, self.args.percentile)
        if values.numel() and not bool(keep.any()):  # tiny steps: keep the top token rather than nothing
            keep[torch.argmax(torch.nan_to_num(values, nan=-math.inf))] = True
        return keep.long()

    def group_weights(self, means, counts, state):
        return torch.tensor([0.0, 1.0], device=counts.device, dtype=counts.dtype)

    def important(self, tokens, logp, ids):
        return ids == 1

    def extra_metrics(self, sums, state):
        return {"frac_kept": sums["imp_n"] / max(sums["n"], 1.0)} if "imp_n" in sums else {}


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

# Every setting that changes some objective's loss: what tells two methods apart (sweep names, report labels).
METHOD_SETTINGS = tuple(sorted({s for o in OBJECTIVES.values() for s in o.settings}
                               | {s for w in TOKEN_WEIGHTS.values() for s in w.settings} | {"token_weight"}))


def settings_of(name, config=None) -> set[str] | None:
    """The settings objective ``name`` reads (None for a name this version does not know: an old run, say).

    ``config`` (a mapping or a config object; None: defaults): an aggregator (an objective that takes
    ``--token_weight``) reads ``token_weight``, and the settings of the token weighting it names."""
    obj = OBJECTIVES.get(str(name))
    if obj is None:
        return None
    read = set(obj.settings)
    if obj.token_weight is None and not obj.chunk_loss:
        read.add("token_weight")
        tw = config.get("token_weight") if isinstance(config, dict) else getattr(config, "token_weight", None)
        read |= set(getattr(TOKEN_WEIGHTS.get(str(tw)), "settings", ()))
    return read


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


__all__ = [
    "ASFT_KL",
    "OBJECTIVES",
    "METHOD_SETTINGS",
    "METRIC_SETTINGS",
    "TARGET_RESIDUALS",
    "TOKEN_WEIGHTS",
    "Objective",
    "asft_chunk_loss",
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

from .loss_func import compute_loss_func  # noqa: E402 -- an objective as a transformers/TRL compute_loss_func
__all__.append("compute_loss_func")
