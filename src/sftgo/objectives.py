"""Token-level training objectives as pure tensor functions (no model, no state).

Conventions shared by every loss here:

* ``logp``: float tensor of any shape (usually ``[B, T]``) holding ``log p(y_t | y_<t)`` of the
  target token, already shifted. Values at unsupervised positions are arbitrary (even NaN/-inf)
  and never leak into the value or the gradient: they are replaced with ``torch.where`` before any
  arithmetic (``NaN * 0`` is NaN, and the gradient of ``where`` is exactly 0 on the unused branch).
* ``mask``: bool tensor, same shape, True at supervised positions.
* Reduction: the mean over supervised tokens, or ``sum / num_items`` when ``num_items`` is given
  (the trainer passes one global supervised-token count for the whole optimizer step, so summing
  the results over micro-batches / ranks gives the token-weighted mean of the step).
* A batch with no supervised token gives ``0`` that is still connected to the input (backward
  works and yields zero gradients), never NaN.
"""

from __future__ import annotations

import math

import torch


# Logit clamp for InfoSFT: sigmoid(-80) ~ 1.8e-35, so anything beyond is "p = 0" or "p = 1" for all
# practical purposes, and a finite clamp keeps 0 * inf = NaN out of the weight.
_LOGIT_CLAMP = 80.0


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


# ---------------------------------------------------------------------------------------------
# Names used by the CLI / config for validation.
# ---------------------------------------------------------------------------------------------

TARGET_RESIDUALS = ("uniform", "model", "topk", "reference")


# ---------------------------------------------------------------------------------------------
# Shared helpers: validation, NaN-safe masking, the one place that normalizes by token counts.
# ---------------------------------------------------------------------------------------------


def _check_same_shape(name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str = "logp") -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor with the shape of {ref_name}; got {type(t).__name__}")
    if t.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} but {ref_name} has shape {tuple(ref.shape)}; "
            f"they must match position for position"
        )


def _prepare(logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten to ``[N]``; return (logp with unsupervised positions set to 0, bool mask)."""
    if not isinstance(logp, torch.Tensor) or not logp.is_floating_point():
        raise ValueError("logp must be a floating-point torch.Tensor of per-token log-probabilities")
    _check_same_shape("mask", mask, logp)
    m = mask.reshape(-1).to(torch.bool)
    lp = logp.reshape(-1)
    # where(), not multiplication: NaN/-inf at padded positions would survive `* 0` (value and grad).
    safe = torch.where(m, lp, torch.zeros((), dtype=lp.dtype, device=lp.device))
    return safe, m


def _check_num_items(num_items) -> None:
    if num_items is None:
        return
    if isinstance(num_items, torch.Tensor):
        if num_items.numel() != 1:
            raise ValueError(f"num_items must be a scalar count; got a tensor of shape {tuple(num_items.shape)}")
        return
    if isinstance(num_items, bool) or not isinstance(num_items, (int, float)) or num_items < 0:
        raise ValueError(f"num_items must be a non-negative number (global supervised-token count); got {num_items!r}")


def _denominator(n_sup: torch.Tensor, num_items):
    """``n_sup`` (this call's count) or ``num_items``, floored at 1 so an empty step gives 0, not NaN."""
    if num_items is None:
        return n_sup.clamp(min=1)
    if isinstance(num_items, torch.Tensor):
        return num_items.to(device=n_sup.device, dtype=n_sup.dtype).reshape(()).clamp(min=1)
    return max(float(num_items), 1.0)


def _reduce(per_token: torch.Tensor, m: torch.Tensor, num_items=None) -> torch.Tensor:
    """Sum of ``per_token`` over supervised positions divided by the count (or ``num_items``).

    ``per_token`` must already be 0 at unsupervised positions (built from the ``_prepare`` output).
    """
    _check_num_items(num_items)
    n_sup = m.sum().to(per_token.dtype)
    return per_token.sum() / _denominator(n_sup, num_items)


def _check_lam(lam) -> None:
    if isinstance(lam, torch.Tensor):
        return  # a schedule may hand us a tensor; trust it (checking would force a device sync)
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (0.0 <= float(lam) <= 1.0):
        raise ValueError(f"lam (lambda, weight of the group term) must be a float in [0, 1]; got {lam!r}")


def group_sums(
    logp: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group sums of ``-logp`` and token counts over supervised positions.

    logp, mask, group_ids: ``[...]`` (same shape; ``group_ids`` long in ``0..num_groups-1`` at
    supervised positions, anything elsewhere). Returns ``(sums [G], counts [G])``; ``sums`` keeps the
    graph to ``logp``. These are additive, so a trainer can reduce them over micro-batches and ranks
    (all-reduce SUM) to take the group means over a whole optimizer step.
    """
    safe, m = _prepare(logp, mask)
    ids = _safe_group_ids(group_ids, m, num_groups, logp)
    loss = -safe
    sums = torch.zeros(num_groups, dtype=loss.dtype, device=loss.device).index_add(0, ids, loss)
    counts = torch.zeros(num_groups, dtype=loss.dtype, device=loss.device).index_add(0, ids, m.to(loss.dtype))
    return sums, counts


def _safe_group_ids(group_ids, m: torch.Tensor, num_groups: int, logp: torch.Tensor) -> torch.Tensor:
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int; got {num_groups!r}")
    _check_same_shape("group_ids", group_ids, logp)
    if group_ids.is_floating_point() or group_ids.dtype == torch.bool:
        raise ValueError("group_ids must be an integer (long) tensor of group indices 0..num_groups-1")
    ids = group_ids.reshape(-1).long()
    ids = torch.where(m, ids, torch.zeros_like(ids))
    # One device sync; an out-of-range id would otherwise be a silent wrong answer or a CUDA assert.
    if ids.numel() and (bool((ids < 0).any()) or bool((ids >= num_groups).any())):
        raise ValueError(
            f"group_ids must lie in 0..{num_groups - 1} at supervised positions "
            f"(got values in [{int(ids.min())}, {int(ids.max())}]); check num_groups"
        )
    return ids


def _worst_group_mean(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``max`` over non-empty groups of ``sums / counts`` (graph kept) and its index (-1 if all empty).

    The argmax is taken on detached values and the winner is picked by indexing, so the gradient
    flows to exactly one group; ties go to the lowest group index (deterministic). No device sync.
    """
    means = sums / counts.clamp(min=1)
    nonempty = counts > 0
    ranked = torch.where(nonempty, means.detach(), torch.full_like(means, -math.inf))
    idx = torch.argmax(ranked)
    any_nonempty = nonempty.any()
    # means[idx] is finite even for an empty group (0 / 1), so multiplying by 0 is safe here.
    term = means[idx] * any_nonempty.to(means.dtype)
    idx = torch.where(any_nonempty, idx, torch.full_like(idx, -1))
    return term, idx


# ---------------------------------------------------------------------------------------------
# Plain and reweighted token losses.
# ---------------------------------------------------------------------------------------------


def sft(logp: torch.Tensor, mask: torch.Tensor, num_items=None) -> torch.Tensor:
    """Standard SFT cross-entropy: ``mean_{t supervised} -logp_t`` (or ``sum / num_items``).

    logp, mask: ``[...]``. Returns a scalar.
    """
    safe, m = _prepare(logp, mask)
    return _reduce(-safe, m, num_items)


def dft(logp: torch.Tensor, mask: torch.Tensor, num_items=None) -> torch.Tensor:
    """Dynamic Fine-Tuning: ``mean_t -sg(p_t) * logp_t`` with ``p_t = exp(logp_t)``.

    logp, mask: ``[...]``. Returns a scalar.
    """
    safe, m = _prepare(logp, mask)
    return _reduce(-dft_weights(safe) * safe, m, num_items)


def infosft(logp: torch.Tensor, mask: torch.Tensor, P: float = 0.93, num_items=None) -> torch.Tensor:
    """InfoSFT: ``mean_t -w_t * logp_t`` with ``w = sg(p) * relu(1 - sg(logit p) / logit P)``.

    See :func:`infosft_weights`. logp, mask: ``[...]``. Returns a scalar.
    """
    safe, m = _prepare(logp, mask)
    return _reduce(-infosft_weights(safe, P) * safe, m, num_items)


# ---------------------------------------------------------------------------------------------
# SFT-GO (group-optimized SFT) and its relatives.
# ---------------------------------------------------------------------------------------------


def sft_go(
    logp: torch.Tensor, mask: torch.Tensor, important: torch.Tensor, lam, num_items=None
) -> torch.Tensor:
    """SFT-GO objective (Eq. 3-4): ``(1 - lam) * CE + lam * max(CE_G1, CE_G0)``.

    ``CE`` is the mean of ``-logp`` over supervised tokens; ``CE_G1`` / ``CE_G0`` are the means over
    the supervised tokens with ``important`` True / False. A group with no token is left out of the
    max (if both are empty the group term is 0). Ties go to the unimportant group.

    With ``num_items`` (global supervised count of the optimizer step):
    ``CE = sum(-logp) / num_items`` and the group term is ``max(CE_G1, CE_G0) * n_sup / num_items``
    (``n_sup`` = this call's supervised count), so summing the calls of a step gives the
    token-weighted average of the per-call group terms. With a single call and
    ``num_items == n_sup`` this is exactly Eq. 3-4.

    logp, mask, important: ``[...]`` (``important`` bool). lam: float in [0, 1] (or a scalar tensor).
    Returns a scalar. ``lam = 0`` equals :func:`sft` exactly.
    """
    _check_lam(lam)
    _check_same_shape("important", important, logp)
    safe, m = _prepare(logp, mask)
    _check_num_items(num_items)
    imp = important.reshape(-1).to(torch.bool) & m
    loss = -safe
    n_sup = m.sum().to(loss.dtype)
    denom = _denominator(n_sup, num_items)
    ce = loss.sum() / denom
    sums = torch.stack([(loss * (m & ~imp)).sum(), (loss * imp).sum()])  # [unimportant, important]
    counts = torch.stack([(m & ~imp).sum(), imp.sum()]).to(loss.dtype)
    worst, _ = _worst_group_mean(sums, counts)
    group = worst * (n_sup / denom)
    return (1 - lam) * ce + lam * group


@torch.no_grad()
def sft_go_stats(logp: torch.Tensor, mask: torch.Tensor, important: torch.Tensor) -> dict:
    """Detached group metrics for logging SFT-GO.

    Returns a dict of 0-dim tensors (kept on the input's device to avoid a sync per step):
    ``loss_ce`` (mean over supervised tokens, NaN if none), ``loss_important``,
    ``loss_unimportant`` (NaN when the group is empty), ``n_important``, ``n_unimportant``,
    ``worst_group`` (1 important / 0 unimportant, -1 if both empty; ties -> 0) and the additive
    ``sum_important`` / ``sum_unimportant`` for reducing over micro-batches or ranks.
    """
    _check_same_shape("important", important, logp)
    safe, m = _prepare(logp, mask)
    imp = important.reshape(-1).to(torch.bool) & m
    unimp = m & ~imp
    loss = -safe.detach()
    s1, s0 = (loss * imp).sum(), (loss * unimp).sum()
    n1, n0 = imp.sum().to(loss.dtype), unimp.sum().to(loss.dtype)
    nan = torch.full((), math.nan, dtype=loss.dtype, device=loss.device)

    def mean(s, n):
        return torch.where(n > 0, s / n.clamp(min=1), nan)

    _, worst = _worst_group_mean(torch.stack([s0, s1]), torch.stack([n0, n1]))
    return {
        "loss_ce": mean(s0 + s1, n0 + n1),
        "loss_important": mean(s1, n1),
        "loss_unimportant": mean(s0, n0),
        "n_important": n1,
        "n_unimportant": n0,
        "worst_group": worst,
        "sum_important": s1,
        "sum_unimportant": s0,
    }


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


def _check_keep_ratio(keep_ratio) -> None:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not (0.0 < keep_ratio <= 1.0):
        raise ValueError(f"keep_ratio (fraction of supervised tokens Rho-1 trains on) must be in (0, 1]; got {keep_ratio!r}")


@torch.no_grad()
def rho1_select(
    logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor, keep_ratio: float
) -> torch.Tensor:
    """Rho-1 token selection: a bool mask (shape of ``logp``) of the kept supervised tokens.

    Tokens are ranked ACROSS THE WHOLE BATCH by excess loss ``(-logp) - (-ref_logp)`` (detached) and
    the top ``k = round_half_up(keep_ratio * n_sup)`` are kept (``1 <= k <= n_sup`` when
    ``n_sup > 0``). Ties keep the earlier position (flattened, row-major order): a stable sort.
    """
    _check_keep_ratio(keep_ratio)
    _check_same_shape("ref_logp", ref_logp, logp)
    _, m = _prepare(logp, mask)
    excess = (ref_logp.reshape(-1) - logp.reshape(-1)).detach()
    sup_idx = m.nonzero().squeeze(1)  # one sync: k depends on the count anyway
    n_sup = sup_idx.numel()
    keep = torch.zeros_like(m)
    if n_sup == 0:
        return keep.reshape(logp.shape)
    k = min(max(int(math.floor(keep_ratio * n_sup + 0.5)), 1), n_sup)
    order = torch.sort(excess[sup_idx], descending=True, stable=True).indices
    keep[sup_idx[order[:k]]] = True
    return keep.reshape(logp.shape)


def rho1(
    logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor, keep_ratio: float, num_items=None
) -> torch.Tensor:
    """Rho-1 Selective Language Modeling: mean ``-logp`` over the tokens kept by :func:`rho1_select`.

    With ``num_items``: ``sum over kept / (keep_ratio * num_items)``, i.e. the global number of kept
    tokens is estimated as ``keep_ratio`` of the global supervised count, so per-call results add up
    over micro-batches like every other loss here.

    This is SFT-GO with ``lam = 1`` and excess loss as importance whenever the kept group has the
    larger mean loss (always true when the reference loss is constant over tokens).
    logp, mask, ref_logp: ``[...]``. Returns a scalar.
    """
    keep = rho1_select(logp, mask, ref_logp, keep_ratio)
    safe, k = _prepare(logp, keep)
    _check_num_items(num_items)
    n_kept = k.sum().to(safe.dtype)
    if num_items is None:
        denom = n_kept.clamp(min=1)
    else:
        denom = keep_ratio * _denominator(n_kept, num_items)
    return (-safe).sum() / denom


# ---------------------------------------------------------------------------------------------
# Target-SFT: cross-entropy against a mixed soft target.
# ---------------------------------------------------------------------------------------------


def target_sft(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    gamma=0.9,
    residual: str = "uniform",
    topk: int = 10,
    ref_logits: torch.Tensor | None = None,
    num_items=None,
) -> torch.Tensor:
    """Target-SFT: cross-entropy against ``Q = gamma * onehot(y) + (1 - gamma) * pi``.

    Per supervised token: ``loss = -sum_k sg(Q_k) * log_softmax(logits)_k``; reduced as the mean over
    supervised tokens (or ``sum / num_items``).

    logits: ``[..., V]``; labels: ``[...]`` long (may hold -100 where ``mask`` is False);
    mask: ``[...]`` bool; ref_logits: ``[..., V]`` (``residual="reference"`` only).
    gamma: float in [0, 1], or ``"p"`` for ``gamma = sg(p_y)`` per token.
    residual ``pi`` (always detached):

    * ``"uniform"``: ``1/V`` over all V classes (observed token included);
    * ``"model"``: ``sg(softmax(logits))``;
    * ``"topk"``: the model's ``topk`` largest probabilities among the classes other than ``y``,
      renormalized to sum to 1 (excluding ``y`` keeps exactly ``gamma`` of the mass on ``y``);
    * ``"reference"``: ``sg(softmax(ref_logits))``.

    Special cases:

    * ``gamma = 1`` (any residual): plain SFT cross-entropy.
    * ``residual="uniform", gamma = 1 - eps``: ``Q = (1 - eps) onehot + eps / V``, which is exactly
      ``F.cross_entropy(..., label_smoothing=eps)``.
    * ``gamma="p", residual="model"``: ``Q = p_y onehot + (1 - p_y) p``. The residual term
      ``-sum_k p_k log p_k`` (p fixed) has zero gradient w.r.t. the logits (``sum_k p_k (p - e_k) = 0``),
      so the gradient is ``p_y (p - e_y)``, that of DFT's ``-sg(p_y) log p_y`` (values differ).

    Memory: this materializes ``[n_sup, V]`` float32 log-probabilities (upcast from half precision
    for a stable log-softmax). For large vocabularies call it per chunk of tokens with the same
    global ``num_items``: the results add up to one call over everything.
    Returns a scalar.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise ValueError("logits must be a floating-point tensor of shape [..., V]")
    V = logits.shape[-1]
    lead = logits.shape[:-1]
    if labels.shape != lead:
        raise ValueError(f"labels shape {tuple(labels.shape)} must equal logits.shape[:-1] = {tuple(lead)}")
    if mask.shape != lead:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal logits.shape[:-1] = {tuple(lead)}")
    if residual not in TARGET_RESIDUALS:
        raise ValueError(f"residual must be one of {TARGET_RESIDUALS}; got {residual!r}")
    if isinstance(gamma, str):
        if gamma != "p":
            raise ValueError(f'gamma must be a float in [0, 1] or the string "p"; got {gamma!r}')
    elif isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (0.0 <= float(gamma) <= 1.0):
        raise ValueError(f'gamma must be a float in [0, 1] or the string "p"; got {gamma!r}')
    if residual == "topk" and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise ValueError(f"topk must be a positive int for residual='topk'; got {topk!r}")
    if residual == "reference":
        if ref_logits is None:
            raise ValueError("residual='reference' needs ref_logits (the reference model's logits, shape of logits)")
        if ref_logits.shape != logits.shape:
            raise ValueError(f"ref_logits shape {tuple(ref_logits.shape)} must equal logits shape {tuple(logits.shape)}")
    _check_num_items(num_items)

    m = mask.reshape(-1).to(torch.bool)
    # Keep only supervised rows: [n_sup, V] instead of [N, V], and garbage (NaN) logits at padded
    # rows never enter the arithmetic. Indexing backpropagates zeros to the dropped rows.
    z = logits.reshape(-1, V)[m]
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    y = labels.reshape(-1)[m].long()
    if y.numel() and (bool((y < 0).any()) or bool((y >= V).any())):
        raise ValueError(f"labels at supervised positions must lie in 0..{V - 1}; check mask and label padding (-100)")
    logq = torch.log_softmax(z, dim=-1)  # [n_sup, V]  <- the big tensor
    logq_y = logq.gather(1, y[:, None]).squeeze(1)  # [n_sup]

    if gamma == "p":
        g = logq_y.detach().exp()
    else:
        g = float(gamma)

    if residual == "uniform":
        res = logq.mean(dim=-1)  # sum_k (1/V) logq_k
    elif residual == "model":
        res = (logq.detach().exp() * logq).sum(dim=-1)
    elif residual == "reference":
        zr = ref_logits.reshape(-1, V)[m].to(logq.dtype)
        res = (torch.softmax(zr.detach(), dim=-1) * logq).sum(dim=-1)
    else:  # topk
        k = min(topk, V - 1)
        if k < 1:  # V == 1: nothing but y exists, the residual is empty; Q = onehot
            res = logq_y
        else:
            probs = logq.detach().exp()
            ranked = probs.scatter(1, y[:, None], -1.0)  # exclude the observed token from the ranking
            top_p, top_i = ranked.topk(k, dim=-1)
            pi = top_p / top_p.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(top_p.dtype).tiny)
            res = (pi * logq.gather(1, top_i)).sum(dim=-1)

    per_token = -(g * logq_y + (1 - g) * res)
    n_sup = m.sum().to(per_token.dtype)
    return per_token.sum() / _denominator(n_sup, num_items)


# ---------------------------------------------------------------------------------------------
# Beyond the paper: more than two groups, and online Group-DRO weights instead of a hard max.
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def quantile_group_ids(scores: torch.Tensor, mask: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Split each sequence's supervised tokens into ``num_groups`` score quantiles, by rank.

    scores, mask: ``[..., T]`` (each row over the last dim is one sequence; a 1-D input is one
    sequence). Within a row, supervised tokens are sorted by ascending score and the token of rank
    ``r`` (0-based) among ``n`` gets group ``floor(r * G / n)``: group 0 holds the lowest scores,
    group ``G-1`` the highest, and group sizes differ by at most one. Ties are broken by position
    (earlier token = lower rank), so equal scores may straddle a group boundary; that keeps sizes
    balanced and the result deterministic. Rows with fewer than ``G`` tokens leave some groups empty.
    Unsupervised positions get ``-1``. Returns a long tensor, shape of ``scores``.
    """
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int; got {num_groups!r}")
    if not isinstance(scores, torch.Tensor) or scores.dim() < 1:
        raise ValueError("scores must be a tensor of shape [..., T]")
    _check_same_shape("mask", mask, scores, "scores")
    shape = scores.shape
    s = scores.reshape(-1, shape[-1]).float() if not scores.is_floating_point() else scores.reshape(-1, shape[-1])
    m = mask.reshape(-1, shape[-1]).to(torch.bool)
    R, T = s.shape
    # Two stable sorts = a lexicographic sort by (unsupervised last, score, position); sorting by score
    # alone with +inf padding would mix padded positions with supervised scores equal to +inf.
    s_clean = torch.where(m, s, torch.zeros_like(s))  # NaN at padding must not disturb the order
    o1 = torch.sort(s_clean, dim=1, stable=True).indices
    o2 = torch.sort((~m).gather(1, o1).to(torch.uint8), dim=1, stable=True).indices
    order = o1.gather(1, o2)  # [R, T] positions, supervised by ascending score first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(T, device=s.device).expand(R, T))
    n = m.sum(dim=1, keepdim=True).clamp(min=1)
    ids = torch.div(ranks * num_groups, n, rounding_mode="floor")
    ids = torch.where(m, ids, torch.full_like(ids, -1))
    return ids.reshape(shape)


def sft_go_multi(
    logp: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    num_groups: int,
    lam,
    num_items=None,
) -> torch.Tensor:
    """SFT-GO with ``G`` groups: ``(1 - lam) * CE + lam * max_{g non-empty} CE_g``.

    group_ids: ``[...]`` long in ``0..G-1`` at supervised positions (e.g. from
    :func:`quantile_group_ids`). Empty groups are left out of the max; ties go to the lowest id.
    ``num_items`` is handled as in :func:`sft_go` (group term scaled by ``n_sup / num_items``).
    With ``G = 2`` and ``group_ids = important`` it equals :func:`sft_go`. Returns a scalar.
    """
    _check_lam(lam)
    _check_num_items(num_items)
    sums, counts = group_sums(logp, mask, group_ids, num_groups)
    n_sup = counts.sum()
    denom = _denominator(n_sup, num_items)
    ce = sums.sum() / denom
    worst, _ = _worst_group_mean(sums, counts)
    return (1 - lam) * ce + lam * worst * (n_sup / denom)


class GroupDRO:
    """Online Group-DRO weights over ``G`` groups (Sagawa et al. 2020, Algorithm 1).

    Holds ``q`` (``[G]``, sums to 1, uniform at start). After each step the trainer calls
    :meth:`step` with the detached per-group mean losses; the loss itself is the pure function
    :func:`group_dro_loss`. The state is tiny and checkpointed via ``state_dict`` /
    ``load_state_dict``, so a resumed run continues with the same weights.
    """

    def __init__(self, num_groups: int, eta_q: float = 0.01):
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"num_groups must be a positive int; got {num_groups!r}")
        if isinstance(eta_q, bool) or not isinstance(eta_q, (int, float)) or not (eta_q >= 0 and math.isfinite(eta_q)):
            raise ValueError(f"eta_q (Group-DRO step size) must be a non-negative float; got {eta_q!r}")
        self.num_groups = num_groups
        self.eta_q = float(eta_q)
        self.q = torch.full((num_groups,), 1.0 / num_groups, dtype=torch.float64)

    @torch.no_grad()
    def step(self, group_losses: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """``q_g <- q_g * exp(eta_q * loss_g)``, renormalized; returns the new ``q``.

        group_losses: ``[G]`` mean loss per group (detached; NaN marks an empty group). counts:
        optional ``[G]`` token counts (0 marks an empty group). Empty groups keep their weight
        exactly; the non-empty ones are renormalized to share the rest of the mass. Computed in log
        space (a softmax) so a large ``eta_q * loss`` cannot overflow.
        """
        losses = torch.as_tensor(group_losses).detach().reshape(-1).to("cpu", torch.float64)
        if losses.numel() != self.num_groups:
            raise ValueError(f"group_losses must have {self.num_groups} entries (one per group); got {losses.numel()}")
        active = torch.isfinite(losses)
        if counts is not None:
            c = torch.as_tensor(counts).detach().reshape(-1).to("cpu")
            if c.numel() != self.num_groups:
                raise ValueError(f"counts must have {self.num_groups} entries; got {c.numel()}")
            active &= c > 0
        if not bool(active.any()):
            return self.q.clone()
        mass = self.q[active].sum()
        logits = self.q[active].log() + self.eta_q * losses[active]
        new = self.q.clone()
        new[active] = torch.softmax(logits, dim=0) * mass
        self.q = new / new.sum()  # guards drift; a no-op up to rounding
        return self.q.clone()

    def state_dict(self) -> dict:
        return {"q": self.q.clone(), "eta_q": self.eta_q, "num_groups": self.num_groups}

    def load_state_dict(self, state: dict) -> None:
        q = torch.as_tensor(state["q"], dtype=torch.float64).reshape(-1)
        if int(state.get("num_groups", q.numel())) != self.num_groups or q.numel() != self.num_groups:
            raise ValueError(
                f"GroupDRO checkpoint has {q.numel()} groups but this run uses {self.num_groups}; "
                f"use the same num_groups to resume"
            )
        self.q = q.clone()
        self.eta_q = float(state.get("eta_q", self.eta_q))


def group_dro_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    q: torch.Tensor,
    lam,
    num_items=None,
) -> torch.Tensor:
    """Group-DRO variant of SFT-GO: ``(1 - lam) * CE + lam * sum_g q_g * CE_g``.

    ``q`` (``[G]``, e.g. ``GroupDRO.q``) is treated as a constant. Groups with no supervised token in
    this call are left out and ``q`` is renormalized over the present ones, so a missing group does not
    shrink the loss scale (with every group present this is exactly ``sum_g q_g CE_g``).
    ``num_items`` as in :func:`sft_go` (group term scaled by ``n_sup / num_items``). Returns a scalar.
    """
    _check_lam(lam)
    _check_num_items(num_items)
    q = torch.as_tensor(q).detach().reshape(-1)
    if q.dim() != 1 or q.numel() < 1:
        raise ValueError("q must be a 1-D tensor of group weights")
    G = q.numel()
    sums, counts = group_sums(logp, mask, group_ids, G)
    q = q.to(device=sums.device, dtype=sums.dtype)
    means = sums / counts.clamp(min=1)
    present = (counts > 0).to(sums.dtype)
    qp = q * present
    # Empty batch: qp.sum() == 0 and means == 0, so the term is 0 (no NaN) via the clamp.
    weighted = (qp * means).sum() / qp.sum().clamp(min=torch.finfo(sums.dtype).tiny)
    n_sup = counts.sum()
    denom = _denominator(n_sup, num_items)
    ce = sums.sum() / denom
    return (1 - lam) * ce + lam * weighted * (n_sup / denom)


# ---------------------------------------------------------------------------------------------
# The same objectives straight from hidden states, through the chunked per-token head.
# ---------------------------------------------------------------------------------------------


def _count(num_items, n_sup: int) -> float:
    """The loss denominator as a Python float: ``num_items`` (or ``n_sup``), floored at 1."""
    _check_num_items(num_items)
    if num_items is None:
        return float(max(n_sup, 1))
    return max(float(num_items), 1.0)


def _worst_onehot(means: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[G]`` one-hot of the non-empty group with the largest mean loss (ties -> lowest id; all empty -> zeros)."""
    ranked = torch.where(counts > 0, means, torch.full_like(means, -math.inf))
    out = torch.zeros_like(means)
    out[torch.argmax(ranked)] = 1.0
    return out * (counts > 0).any().to(means.dtype)


def fused_linear_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    objective: str,
    *,
    important: torch.Tensor | None = None,
    lam: float = 0.0,
    P: float = 0.93,
    num_items=None,
    chunk_size: int = 512,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sft`` / ``dft`` / ``infosft`` / ``sft_go`` straight from hidden states, without the ``[N, V]`` logits.

    hidden: [N, H] (or [..., H]); weight: [V, H]; targets: [N] long (-100 ignored); important: [N] bool (sft_go only).
    Returns ``(loss, logp)`` as :func:`sftgo.token_head.weighted_nll`, with the objective's per-token coefficient
    divided by ``K = num_items`` (default: the supervised count): ``1/K`` (sft), ``sg(p)/K`` (dft), the InfoSFT
    weight ``/K``, and for sft_go (Eq. 3-4) ``(1-lam)/K + lam [n in worst] n_sup / (K n_worst)`` (constant per group,
    decided from the two group means: :class:`sftgo.token_head.GroupCoef`). Values and gradients equal
    ``objectives.<objective>(naive_token_logp(...), ...)``.
    """
    from . import token_head as H

    names = ("sft", "dft", "infosft", "sft_go")
    if objective not in names:
        raise ValueError(f"objective must be one of {names}, got {objective!r}")
    if objective == "sft_go":
        if important is None:
            raise ValueError("objective 'sft_go' needs important= (bool tensor shaped like targets, True = G1)")
        if not isinstance(important, torch.Tensor) or tuple(important.shape) != tuple(targets.shape):
            raise ValueError(f"important must be a bool tensor of targets' shape {tuple(targets.shape)}")
        if isinstance(lam, torch.Tensor) and lam.numel() == 1:
            lam = float(lam)
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must be a float in [0, 1], got {lam!r}")
    elif important is not None:
        raise ValueError(f"important= is used only by objective 'sft_go', not {objective!r}")
    if objective == "infosft" and not (isinstance(P, (int, float)) and 0.5 < float(P) < 1.0):
        raise ValueError(f"P must be a float in (0.5, 1) (InfoSFT confidence threshold), got {P!r}")
    _check_num_items(num_items)
    if backend == "liger":
        if objective != "sft":
            raise ValueError(f"backend='liger' supports only objective='sft', not {objective!r}; use backend='torch'")
        loss, logp = H.weighted_nll(hidden, weight, targets, 1.0, chunk_size=chunk_size, backend=backend)
        return loss / _count(num_items, int((targets != H.IGNORE_INDEX).sum())), logp
    n_sup = int((targets != H.IGNORE_INDEX).sum())
    k = _count(num_items.item() if isinstance(num_items, torch.Tensor) else num_items, n_sup)
    if objective == "sft":
        coef = 1.0 / k
    elif objective == "dft":
        coef = lambda lp, s, e: dft_weights(lp) / k  # noqa: E731
    elif objective == "infosft":
        coef = lambda lp, s, e: infosft_weights(lp, P) / k  # noqa: E731
    else:
        lam = float(lam)

        def resolve(sums, counts):
            return (1.0 - lam) / k + lam * _worst_onehot(sums / counts.clamp(min=1), counts) * n_sup / (k * counts.clamp(min=1))

        coef = H.GroupCoef(important.long(), 2, resolve)  # group 1 = important; ties -> 0 (unimportant)
    return H.weighted_nll(hidden, weight, targets, coef, chunk_size=chunk_size, backend=backend)


def chunked_target_sft(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    gamma=0.9,
    residual: str = "uniform",
    topk: int = 10,
    ref_hidden: torch.Tensor | None = None,
    ref_weight: torch.Tensor | None = None,
    num_items=None,
    chunk_size: int = 512,
) -> torch.Tensor:
    """Target-SFT (:func:`target_sft`) from hidden states, one ``[chunk, V]`` logits tile alive at a time.

    hidden: [N, H] (or [..., H]); weight: [V, H]; labels: [N] long (-100 ignored);
    ref_hidden: [N, H_ref], ref_weight: [V, H_ref] (residual="reference" only: the reference model's final
    hidden states and LM head; its logits are computed per chunk without grad). Returns a scalar: each chunk calls
    :func:`target_sft` with the global ``num_items`` (default: the supervised count), so the chunk losses add up to
    the unchunked loss (:func:`sftgo.token_head.chunked_loss`).
    """
    from . import token_head as H

    H._check_inputs(hidden, weight, labels, chunk_size, name_targets="labels")
    if residual == "reference":
        if ref_hidden is None or ref_weight is None:
            raise ValueError("residual='reference' needs ref_hidden [N, H_ref] and ref_weight [V, H_ref]")
        H._check_inputs(ref_hidden, ref_weight, labels, chunk_size, name_targets="labels")
        if ref_weight.shape[0] != weight.shape[0]:
            raise ValueError(
                f"ref_weight has V={ref_weight.shape[0]} but weight has V={weight.shape[0]}; "
                "the reference model must share the vocabulary"
            )
    elif ref_hidden is not None or ref_weight is not None:
        raise ValueError(f"ref_hidden / ref_weight are used only with residual='reference', not {residual!r}")
    k = num_items if num_items is not None else int((labels != H.IGNORE_INDEX).sum())
    fn = _target_sft_chunk(gamma, residual, topk, None if ref_weight is None else ref_weight.detach(), k)
    return H.chunked_loss(hidden, weight, labels, fn, extra=ref_hidden, chunk_size=chunk_size)


def _target_sft_chunk(gamma, residual, topk, ref_weight, num_items):
    """``fn(logits [c, V], labels [c], ref_hidden [c, H_ref] | None) -> loss`` for the chunked head."""

    def fn(z, y, rh):
        ref = None
        if rh is not None:
            with torch.no_grad():
                ref = rh.to(ref_weight.dtype) @ ref_weight.T  # [c, V] reference logits, never differentiated
        ones = torch.ones(y.shape, dtype=torch.bool, device=y.device)
        return target_sft(z, y, ones, gamma=gamma, residual=residual, topk=topk, ref_logits=ref, num_items=num_items)

    return fn


# ---------------------------------------------------------------------------------------------
# The objective table: what `sftgo train --objective NAME` runs. Looked up once, when the trainer is built.
#
# An objective turns a micro-batch's supervised tokens (sftgo.tokens.TokenBatch) and rows of features into an
# UNNORMALIZED loss sum through the per-token head; the trainer divides once, by the optimizer step's supervised-token
# count K (all micro-batches, all ranks). Most objectives are a per-token coefficient on -log p:
#     loss_sum = sum_n c_n * (-log p_n)
# (sft: c = 1; dft: sg(p); infosft: the InfoSFT weight). The group objectives (sft-go, k groups, Group-DRO, Rho-1)
# share one form: tokens fall in groups g = 0..G-1, a_g weighs the groups (the worst group one-hot, DRO's q, Rho-1's
# kept set), and
#     loss / K = (1 - lam) * sum_n CE_n / K + lam * sum_g a_g * S_g / C_g
# with S_g, C_g the groups' CE sums and token counts, i.e. c_n = (1 - lam) + lam * a_g * K / C_g. Under
# --group_stats exact, S_g, C_g and a_g are the optimizer step's (a no-grad pre-pass over the step's micro-batches,
# all-reduced over ranks; see plan_step) so c_n is fixed before any backward and each micro-batch's backward is a
# weighted NLL: the gradient is exactly that of the step's objective, however the step is split. Under micro, each
# micro-batch uses its own groups (the group term then weighs n_micro / K). Under lagged, a_g comes from the previous
# step's global group means (no extra forward), C_g from the current step.
# Adding an objective: one class below and one row in OBJECTIVES.
# ---------------------------------------------------------------------------------------------


class Plan:
    """Fixed per-token coefficients of one micro-batch, decided from the optimizer step's statistics."""

    def __init__(self, coef: torch.Tensor, ids: torch.Tensor):
        self.coef, self.ids = coef, ids


class Objective:
    """Base row: plain SFT (c_n = 1). Subclasses override :meth:`coef` or :meth:`loss`."""

    columns: tuple[str, ...] = ()  # token columns it reads (beyond the targets)
    step_stats = False  # whether --group_stats changes it
    num_groups = 0

    def __init__(self, args):
        self.args = args

    @classmethod
    def check_args(cls, args) -> None:
        """Raise ValueError for settings this objective cannot run with (called by the config)."""

    def coef(self, logp_chunk: torch.Tensor) -> torch.Tensor | None:
        """Per-token coefficient from the token's own (detached) log p; None = 1."""
        return None

    def loss(self, ctx, x: torch.Tensor, tokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> (unnormalized loss sum, log p [N] detached, group ids [N] or None)."""
        f = self.coef
        c = 1.0 if type(self).coef is Objective.coef else (lambda lp, s, e: f(lp))
        loss, logp = ctx.head.weighted_nll(ctx.model, x, tokens.targets, c)
        return loss, logp, None

    def metric_weight(self, logp: torch.Tensor) -> torch.Tensor | None:
        return self.coef(logp)

    def important(self, tokens, logp, ids) -> torch.Tensor | None:
        """The group logged as "important" (bool [N]): the static eta split per example, else the excess-loss split."""
        from .grouping import percentile_groups_flat

        if "importance" in tokens.columns:
            return percentile_groups_flat(tokens.columns["importance"], _segments(self.args, tokens), self.args.percentile)
        if "ref_logp" in tokens.columns:
            return percentile_groups_flat(tokens.columns["ref_logp"] - logp, _segments(self.args, tokens), self.args.percentile)
        return None

    def extra_metrics(self, sums: dict) -> dict:
        return {}

    # step statistics (group objectives only)
    def plan_step(self, step) -> list[Plan] | None:
        return None

    def end_step(self, sums: torch.Tensor, counts: torch.Tensor) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _segments(args, tokens) -> torch.Tensor:
    """Per-example segments (scope "sequence") or one segment for the whole set (scope "batch")."""
    if args.group_scope == "batch":
        return torch.zeros_like(tokens.example)
    return tokens.example


class SFT(Objective):
    """Cross-entropy over response tokens: c_n = 1."""


class DFT(Objective):
    """DFT: c_n = sg(p_n)."""

    def coef(self, logp_chunk):
        return dft_weights(logp_chunk)


class InfoSFT(Objective):
    """InfoSFT: c_n = sg(p) relu(1 - sg(logit p) / logit P)."""

    def coef(self, logp_chunk):
        return infosft_weights(logp_chunk, self.args.infosft_p)


class TargetSFT(Objective):
    """Target-SFT: a per-chunk loss over the whole logits row (soft targets), not a coefficient on -log p."""

    def loss(self, ctx, x, tokens):
        a = self.args
        ref_rows = ref_weight = None
        if a.target_residual == "reference":
            ref_rows, ref_weight = ctx.reference()
        fn = _target_sft_chunk(a.gamma_value, a.target_residual, a.target_topk, ref_weight, 1)  # num_items=1: a sum
        loss = ctx.head.chunk_loss(ctx.model, x, tokens.targets, fn, extra=ref_rows)
        with torch.no_grad():  # for the metrics (one forward-only GEMM per chunk)
            logp = ctx.head.logp(ctx.model, x.detach(), tokens.targets)
        return loss, logp, None

    def metric_weight(self, logp):
        return None


class Grouped(Objective):
    """Group objectives (see the table's comment): subclasses give the groups and their weights a_g."""

    step_stats = True
    needs_means = True  # a_g depends on the group means (the worst group): needs log p of the whole step
    dynamic = False  # the groups themselves depend on the current log p (excess loss)
    batch_scope = False

    def lam(self, lam: float) -> float:
        return lam

    def values(self, tokens, logp=None) -> torch.Tensor:
        """The per-token score the groups are cut from: importance, or excess loss ``ref_logp - logp``."""
        if self.dynamic:
            return tokens.columns["ref_logp"] - logp
        return tokens.columns["importance"]

    def ids_from(self, values: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        from .grouping import percentile_groups_flat

        return percentile_groups_flat(values, segments, self.args.percentile).long()  # 1 = important

    def weights(self, means: torch.Tensor | None, counts: torch.Tensor) -> torch.Tensor:
        return _worst_onehot(means, counts)

    def _segments(self, tokens):
        return torch.zeros_like(tokens.example) if self.batch_scope else tokens.example

    def _coef(self, lam, a, counts, scale):
        return (1.0 - lam) + lam * a * scale / counts.clamp(min=1)

    def loss(self, ctx, x, tokens):
        lam = self.lam(ctx.lam)
        t = tokens.targets
        if ctx.plan is not None:  # --group_stats exact / lagged: coefficients fixed from the step's statistics
            loss, logp = ctx.head.weighted_nll(ctx.model, x, t, ctx.plan.coef)
            return loss, logp, ctx.plan.ids
        # the micro-batch's own statistics (group_stats micro, one micro-batch per step, or evaluation)
        lp = None
        if self.dynamic:
            with torch.no_grad():
                lp = ctx.head.logp(ctx.model, x.detach(), t)
        ids = self.ids_from(self.values(tokens, lp), self._segments(tokens))
        n, G = float(len(tokens)), self.num_groups
        if self.needs_means:
            from .token_head import GroupCoef

            coef = GroupCoef(ids, G, lambda sums, counts: self._coef(lam, self.weights(sums / counts.clamp(min=1), counts), counts, n))
        else:
            counts = torch.zeros(G, device=t.device).index_add_(0, ids, torch.ones(len(tokens), device=t.device))
            coef = self._coef(lam, self.weights(None, counts), counts, n).index_select(0, ids)
        loss, logp = ctx.head.weighted_nll(ctx.model, x, t, coef)
        return loss, logp, ids

    def plan_step(self, step) -> list[Plan]:
        """Coefficients of every micro-batch of the optimizer step from its global statistics (see the table)."""
        lam = self.lam(step.lam)
        G = self.num_groups
        lps = [step.logp(i) for i in range(len(step.tokens))] if self.dynamic else None
        vals = [self.values(tok, None if lps is None else lps[i]) for i, tok in enumerate(step.tokens)]
        if self.batch_scope:  # one ranking over the step's tokens, all micro-batches and ranks
            sizes = [v.shape[0] for v in vals]
            local = torch.cat(vals) if vals else torch.zeros(0)
            everything, offset = step.gather(local)
            ids_all = self.ids_from(everything, torch.zeros(everything.shape[0], dtype=torch.long, device=everything.device))
            ids = list(ids_all[offset:offset + local.shape[0]].split(sizes))
        else:
            ids = [self.ids_from(v, tok.example) for v, tok in zip(vals, step.tokens)]
        dev = step.device
        counts = torch.zeros(G, device=dev)
        for i in ids:
            counts.index_add_(0, i.to(dev), torch.ones(i.shape[0], device=dev))
        counts = step.sum(counts)
        means = None
        if self.needs_means:
            means = self.lagged_means if step.mode == "lagged" else None
            if means is None:  # exact (or the first lagged step): the step's own group means
                sums = torch.zeros(G, device=dev)
                for i, g in enumerate(ids):
                    lp = lps[i] if lps is not None else step.logp(i)
                    sums.index_add_(0, g.to(dev), -lp.to(dev).float())
                means = step.sum(sums) / counts.clamp(min=1)
        a = self.weights(means, counts)
        self.decided = int(torch.argmax(a)) if self.needs_means else None
        c = self._coef(lam, a, counts, step.num_tokens)
        return [Plan(c.index_select(0, g.to(dev)), g) for g in ids]

    lagged_means = None
    decided = None

    def end_step(self, sums, counts):
        means = sums / counts.clamp(min=1)
        info = {}
        if self.needs_means:
            if self.decided is not None:
                info["worst_group"] = self.decided
                info["worst_group_step"] = int(torch.argmax(_worst_onehot(means, counts)))
            self.lagged_means = means
            self.decided = None
        return info

    def state_dict(self):
        return {} if self.lagged_means is None else {"lagged_means": self.lagged_means.tolist()}

    def load_state_dict(self, state):
        if "lagged_means" in state:
            self.lagged_means = torch.tensor(state["lagged_means"], dtype=torch.float32)


class SFTGo(Grouped):
    """SFT-GO (Eq. 3-4): (1 - lam) * CE + lam * max over groups of the group's mean CE.

    Two groups (the paper): the top (100 - eta)% of each example by importance (or of the batch, --group_scope batch)
    vs the rest. --num_groups G > 2: importance quantiles. --scorer reference: groups by current excess loss.
    """

    def __init__(self, args):
        super().__init__(args)
        self.num_groups = args.num_groups
        self.dynamic = args.scorer == "reference"
        self.columns = ("ref_logp",) if self.dynamic else ("importance",)
        self.batch_scope = args.group_scope == "batch"

    @classmethod
    def check_args(cls, args):
        if args.scorer == "reference" and args.group_stats == "lagged":
            raise ValueError("group_stats: lagged needs groups known before the forward; with --scorer reference "
                             "(groups from the current loss) use exact or micro")
        if not args.scorer:
            raise ValueError("scorer: sft-go needs a grouping function; set --scorer (e.g. tfidf)")

    def ids_from(self, values, segments):
        if self.num_groups == 2:
            return super().ids_from(values, segments)
        from .grouping import quantile_groups_flat

        return quantile_groups_flat(values, segments, self.num_groups)

    def important(self, tokens, logp, ids):
        return ids == 1 if self.num_groups == 2 else super().important(tokens, logp, ids)


class SFTGoDRO(SFTGo):
    """Group-DRO variant: (1 - lam) * CE + lam * sum_g q_g CE_g, q renormalized over the step's non-empty groups and
    updated once per optimizer step, q_g <- q_g exp(eta_q CE_g), from the step's global group means."""

    needs_means = False

    def __init__(self, args):
        super().__init__(args)
        self.dro = GroupDRO(args.num_groups, args.dro_eta)

    def ids_from(self, values, segments):
        from .grouping import quantile_groups_flat

        return quantile_groups_flat(values, segments, self.num_groups)

    def important(self, tokens, logp, ids):
        return Objective.important(self, tokens, logp, ids)

    def weights(self, means, counts):
        q = self.dro.q.to(device=counts.device, dtype=counts.dtype) * (counts > 0).to(counts.dtype)
        return q / q.sum().clamp(min=torch.finfo(q.dtype).tiny)

    def end_step(self, sums, counts):
        means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.nan))
        self.dro.step(means, counts)
        return {}

    def extra_metrics(self, sums):
        return {f"dro_q{g}": q for g, q in enumerate(self.dro.q.tolist())}

    def state_dict(self):
        s = self.dro.state_dict()
        return {"dro_q": s["q"].tolist(), "dro_eta": s["eta_q"]}

    def load_state_dict(self, state):
        if "dro_q" in state:
            self.dro.load_state_dict({"q": torch.tensor(state["dro_q"]), "eta_q": state["dro_eta"],
                                      "num_groups": len(state["dro_q"])})


class Rho1(Grouped):
    """Rho-1 (selective language modeling): mean CE over the top (100 - eta)% of the step's tokens by excess loss
    (current CE minus the reference's), i.e. SFT-GO with lam = 1, excess-loss groups over the whole batch, and the
    kept group's weight fixed to 1. At least one token is kept."""

    columns = ("ref_logp",)
    dynamic = True
    needs_means = False
    batch_scope = True
    num_groups = 2

    @classmethod
    def check_args(cls, args):
        if args.group_stats == "lagged":
            raise ValueError("group_stats: rho1 selects tokens by the current excess loss; use exact or micro, not lagged")

    def lam(self, lam):
        return 1.0

    def ids_from(self, values, segments):
        from .grouping import percentile_groups_flat

        keep = percentile_groups_flat(values, segments, self.args.percentile)
        if values.numel() and not bool(keep.any()):  # tiny batches: keep the top token rather than nothing
            keep[torch.argmax(torch.nan_to_num(values, nan=-math.inf))] = True
        return keep.long()

    def weights(self, means, counts):
        return torch.tensor([0.0, 1.0], device=counts.device, dtype=counts.dtype)

    def important(self, tokens, logp, ids):
        return ids == 1

    def extra_metrics(self, sums):
        return {"frac_kept": sums["imp_n"] / max(sums["n"], 1.0)} if "imp_n" in sums else {}


OBJECTIVES = {
    "sft": SFT,
    "sft-go": SFTGo,
    "rho1": Rho1,
    "dft": DFT,
    "infosft": InfoSFT,
    "target-sft": TargetSFT,
    "sft-go-dro": SFTGoDRO,
}


__all__ = [
    "OBJECTIVES",
    "TARGET_RESIDUALS",
    "GroupDRO",
    "Objective",
    "chunked_target_sft",
    "fused_linear_loss",
    "dft",
    "dft_weights",
    "group_dro_loss",
    "group_sums",
    "infosft",
    "infosft_weights",
    "lambda_schedule",
    "quantile_group_ids",
    "rho1",
    "rho1_select",
    "sft",
    "sft_go",
    "sft_go_multi",
    "sft_go_stats",
    "target_sft",
]

from .loss_func import compute_loss_func  # noqa: E402 -- an objective as a transformers/TRL compute_loss_func
__all__.append("compute_loss_func")
