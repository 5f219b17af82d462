"""Per-token log-probabilities from final hidden states without the full ``[N, V]`` logits.

The naive head ``log_softmax(hidden @ weight.T).gather(targets)`` materializes ``[N, V]`` fp32 logits
(at V = 128K a 4K-token sequence is 2 GB) plus, under autograd, the saved log-softmax output and the
``[N, V]`` gradients of both. Everything here works on row chunks of ``chunk_size`` tokens, so at most one
``[chunk, V]`` tile (plus a transient) is alive at a time.

It knows no objective: it computes per-token quantities and leaves the formula to :mod:`sftgo.objectives`.

* :func:`token_logp` -- generic: returns differentiable per-token ``log p`` for any downstream loss. Saves only the
  inputs and one logsumexp per token; the backward recomputes each chunk's logits. 4 GEMMs instead of 3.
* :func:`weighted_nll` -- ``sum_n c_n * (-log p_n)`` with a per-token coefficient ``c_n`` known in the forward
  (a constant, a tensor, a function of the token's own ``p``, or constant per group once the group means are
  known): the gradient is computed in the forward, chunk by chunk (the idea of Liger-Kernel's fused linear
  cross-entropy), so the backward only scales stored gradients. 3 GEMMs, like the naive path. SFT, DFT, InfoSFT,
  SFT-GO, Rho-1 and Group-DRO are all this with different coefficients.
* :func:`chunked_loss` -- a per-chunk loss over the whole logits row (soft targets, as in Target-SFT): each
  chunk's logits under activation checkpointing.
* :class:`LinearHead` / :class:`LogitsHead` -- what the trainer uses: the model forward for the features, the one
  method that reads the LM-head weight, and the three computations above on a micro-batch's supervised rows.

Conventions: ``hidden [N, H]`` (or ``[..., H]``, flattened), ``weight [V, H]`` (LM head, no bias),
``targets [N]`` long with ``ignore_index = -100`` marking unsupervised positions; returned ``logp`` is ``0``
there. Losses are unnormalized sums over supervised tokens: the caller divides once by its token count.

Choosing ``chunk_size``: the chunked paths' peak extra memory is about ``chunk * V * 4`` bytes (one fp32 logits
tile) + the gradients ``V * H`` and ``N * H``. At V = 128K a 1024-row tile is 0.5 GB; 512 halves it at no
measurable cost in time on CPU (see benchmarks/README.md).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from .data import IGNORE_INDEX, model_inputs  # the one definition of the label-ignore value; the forward's kwargs

__all__ = [
    "IGNORE_INDEX",
    "GroupCoef",
    "LinearHead",
    "LogitsHead",
    "RowCoef",
    "TokenCoef",
    "chunked_loss",
    "make_head",
    "naive_token_logp",
    "token_logp",
    "weighted_nll",
]


# ----------------------------------------------------------------------------------------------------------
# input checks (bad input -> ValueError naming the argument, not a shape error deep inside a GEMM)
# ----------------------------------------------------------------------------------------------------------


def _check_inputs(hidden, weight, targets, chunk_size, name_targets="targets"):
    if not isinstance(hidden, torch.Tensor) or not hidden.is_floating_point() or hidden.dim() < 1:
        raise ValueError("hidden must be a floating-point tensor [N, H] (or [..., H])")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError("weight must be the LM-head weight, a floating-point tensor [V, H]")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"hidden size mismatch: hidden has H={hidden.shape[-1]} but weight is {tuple(weight.shape)}; "
            "weight must be [V, H] (an nn.Linear's .weight, not its transpose)"
        )
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"{name_targets} must be an integer tensor of token ids (long)")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"{name_targets} shape {tuple(targets.shape)} must equal hidden.shape[:-1] = {tuple(hidden.shape[:-1])}"
            " (shift labels before calling: hidden at position t predicts token t+1)"
        )
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    vocab = weight.shape[0]
    sup = targets != IGNORE_INDEX
    if bool(sup.any()):
        t = targets[sup]
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(
                f"{name_targets} contains ids outside [0, {vocab}) (min {lo}, max {hi}); "
                f"use {IGNORE_INDEX} for unsupervised positions"
            )


def _acc(dtype: torch.dtype) -> torch.dtype:
    """Softmax / accumulation dtype: fp32 for bf16/fp16 inputs (exp and sums over V lose bits), else the input's."""
    return torch.promote_types(dtype, torch.float32)


def _flat(hidden, targets):
    """[..., H], [...] -> [N, H], [N] (views when contiguous)."""
    return hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1).long()


def _tile_buffer(h: torch.Tensor, weight: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """One ``[min(chunk, M), V]`` logits buffer reused by every chunk of a pass.

    Reusing it (``torch.mm(..., out=)``) instead of allocating a fresh ``[c, V]`` per chunk avoids, on CPU,
    an mmap + page-fault + zero-fill of hundreds of MB per chunk (large blocks bypass the malloc cache).
    """
    return torch.empty(max(min(chunk_size, h.shape[0]), 1), weight.shape[0], dtype=h.dtype, device=h.device)


def _chunk_logits(hc: torch.Tensor, weight: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """``hc [c, H] @ weight.T`` into ``buf[:c]``, as the accumulation dtype (a no-op view for fp32/fp64)."""
    return torch.mm(hc, weight.T, out=buf[: hc.shape[0]]).to(_acc(hc.dtype))


def _chunk_logsumexp_(logits: torch.Tensor) -> torch.Tensor:
    """In place: ``logits [c, V]`` becomes ``exp(logits - max)``; returns ``logsumexp [c]`` (fp32).

    In place because the ``[c, V]`` tile is the biggest tensor in the head: ``torch.logsumexp`` would
    allocate a second one for ``exp(logits - max)``.
    """
    m = logits.amax(dim=-1, keepdim=True)
    # rows of all -inf cannot occur (finite weights); no guard needed for max = -inf
    logits.sub_(m).exp_()
    s = logits.sum(dim=-1, keepdim=True)
    return (m + s.log()).squeeze(-1), s.squeeze(-1)


# Rows per block of the entropy reduction below: a [rows, V] scratch of about 8M floats (32 MB fp32), a third of a
# 512-row tile at V = 49K, so recording the metrics never adds a second [chunk, V] tile to the head's peak memory; few
# blocks per chunk, since every torch call costs a thread-pool round on a busy CPU.
_SCRATCH_ELEMS = 1 << 23
# A coefficient below this is a zero gradient for the fused pass's entropy (see _fused_pass): its row is scaled by 1 in
# the tile (so the GEMM still gives the row's expected logit) and masked out of both gradients.
_TINY_COEF = 1e-30
class TokenCoef:
    """A per-token coefficient ``c_n = scale_n * t_n``, treated as a constant: ``scale`` (a float, or an ``[M]`` tensor
    known before the forward: data weights, the group factors of the optimizer step) times a token weighting ``t_n``
    computed inside the chunk loop, from the token's own detached log p (``of_logp(lp [c]) -> [c]``: DFT, InfoSFT) or
    from its whole logits row (``of_row(z [c, V] fp32 logits of one chunk) -> [c]``: EAFT's top-k entropy, read before
    the tile is overwritten), or ``t_n = 1`` when neither is given. ``t`` depends on the row alone (no position), so the
    coefficient of any subset of rows is :meth:`restrict`'s. No ``[N, V]`` tensor is kept."""

    def __init__(self, scale=1.0, of_logp: Callable | None = None, of_row: Callable | None = None):
        self.scale, self.of_logp, self.of_row = scale, of_logp, of_row

    @property
    def weighted(self) -> bool:
        """Whether a token weighting ``t`` is part of it (recorded as ``stats["token_weight"]``)."""
        return self.of_logp is not None or self.of_row is not None

    def restrict(self, idx: torch.Tensor | None = None, factor=None) -> "TokenCoef":
        """The coefficient of rows ``idx`` (None: all), its scale multiplied by ``factor`` (their ``[M]``) when given."""
        sc = self.scale.index_select(0, idx) if isinstance(self.scale, torch.Tensor) and idx is not None else self.scale
        if factor is not None:
            sc = factor * sc if isinstance(sc, torch.Tensor) or sc != 1.0 else factor
        return TokenCoef(sc, self.of_logp, self.of_row)

    def scale_rows(self, m: int, device, dtype) -> torch.Tensor:
        """The scale as ``[m]`` (what a group's count adds up: data weights, 1 without)."""
        if isinstance(self.scale, torch.Tensor):
            return self.scale.to(device=device, dtype=dtype)
        return torch.full((m,), float(self.scale), dtype=dtype, device=device)


class RowCoef(TokenCoef):
    """``TokenCoef(scale, of_row=fn)``: a coefficient from each token's whole logits row (EAFT's top-k entropy)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], scale=1.0):
        super().__init__(scale, of_row=fn)
        self.fn = fn


class _Rec:
    """What a chunk loop records on its way, per row: the full-vocabulary entropy of the next-token distribution and
    whether its argmax is the target (``metrics``), and a :class:`RowCoef`'s values (``row_fn``). ``[M]`` tensors."""

    def __init__(self, m: int, device, metrics: bool, row_fn=None):
        self.entropy = torch.empty(m, dtype=torch.float32, device=device) if metrics else None
        self.correct = torch.empty(m, dtype=torch.bool, device=device) if metrics else None
        self.row_fn = row_fn
        self.row = torch.empty(m, dtype=torch.float32, device=device) if row_fn is not None else None
        self.used = self.token = None  # set by the fused pass: the coefficients applied, the token weighting in them

    def into(self, stats: dict | None) -> None:
        if stats is not None and self.entropy is not None:
            stats["entropy"], stats["correct"] = self.entropy, self.correct

    def take(self, other: "_Rec", idx: torch.Tensor) -> None:
        """Rows ``idx`` of this record are ``other``'s rows (the grouped forward's passes over row subsets)."""
        for name in ("entropy", "correct", "row"):
            mine = getattr(self, name)
            if mine is not None:
                mine[idx] = getattr(other, name)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n]`` row-wise dot products of ``a, b [n, V]`` without an ``[n, V]`` temporary: a batched GEMM over groups of
    up to 8 rows whose diagonal is kept (8x the flops of the dot products, still ~1% of the head's GEMMs)."""
    n = a.shape[0]
    g = math.gcd(n, 8)
    prod = torch.bmm(a.reshape(n // g, g, -1), b.reshape(n // g, g, -1).transpose(1, 2))  # [n/g, g, g]
    return prod.diagonal(dim1=1, dim2=2).reshape(n)


def _chunk_forward_(z: torch.Tensor, tc: torch.Tensor, rec: _Rec | None, s: int, e: int, *, entropy: bool = True,
                    keep: bool = True):
    """One chunk: ``z [c, V]`` logits (accumulation dtype) and targets ``tc [c, 1]`` -> ``(logp [c], lse [c], sumexp [c])``,
    with ``z`` overwritten by ``exp(z - max)`` (see :func:`_chunk_logsumexp_`). With a record, rows ``s:e`` also get:

    * the RowCoef's values, from the logits before they are overwritten;
    * ``correct``: the target's logit is the largest (``argmax == target``; a tie for the largest counts as correct),
      read off the max the logsumexp needs anyway;
    * unless ``entropy=False`` (the fused pass and the chunked backward get it from their gradient GEMMs), the entropy
      ``H = -sum_v p_v log p_v = log S - sum_v e_v d_v / S`` with ``d = z - max``, ``e = exp(d)``, ``S = sum e``:
      ``e`` goes to a small scratch a block of rows at a time, is dotted with ``d`` (:func:`_rowdot`) and copied back
      (``keep=False``: not copied back, for callers that do not read the tile afterwards).
    """
    tgt = z.gather(1, tc).squeeze(1)
    if rec is not None and rec.row_fn is not None:
        rec.row[s:e] = rec.row_fn(z).to(rec.row.dtype)
    if rec is None or rec.correct is None:
        lse, sumexp = _chunk_logsumexp_(z)
        return tgt - lse, lse, sumexp
    m = z.amax(dim=-1, keepdim=True)
    rec.correct[s:e] = tgt >= m.squeeze(-1)
    z.sub_(m)
    if not entropy:
        z.exp_()
        sumexp = z.sum(dim=-1)
    else:
        c, V = z.shape
        rows = max(1, min(c, _SCRATCH_ELEMS // max(V, 1)))
        scratch = torch.empty(rows, V, dtype=z.dtype, device=z.device)
        sumexp = torch.empty(c, dtype=z.dtype, device=z.device)
        dot = torch.empty(c, dtype=z.dtype, device=z.device)
        for r in range(0, c, rows):
            d = z[r:r + rows]
            n = d.shape[0]
            ex = scratch[:n]
            torch.exp(d, out=ex)
            torch.sum(ex, dim=-1, out=sumexp[r:r + n])
            dot[r:r + n] = _rowdot(ex, d)
            if keep:
                d.copy_(ex)
        rec.entropy[s:e] = (sumexp.log() - dot / sumexp).to(rec.entropy.dtype)
    lse = m.squeeze(-1) + sumexp.log()
    return tgt - lse, lse, sumexp


# ----------------------------------------------------------------------------------------------------------
# 1. the obvious reference
# ----------------------------------------------------------------------------------------------------------


def naive_token_logp(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reference: ``log_softmax(hidden @ weight.T)[n, targets[n]]``, 0 where ``targets == -100``.

    hidden: [N, H] (or [..., H]); weight: [V, H]; targets: [N] long. Returns logp: [N] (targets' shape).
    Materializes the full ``[N, V]`` logits -- use only for tests and small shapes.
    """
    logits = hidden @ weight.T  # [N, V] <- the tensor the chunked paths avoid
    logprobs = torch.log_softmax(logits.to(_acc(logits.dtype)), dim=-1)
    sup = targets != IGNORE_INDEX
    safe = torch.where(sup, targets, torch.zeros_like(targets))
    out = logprobs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(sup, out, torch.zeros_like(out))


# ----------------------------------------------------------------------------------------------------------
# 2. generic chunked log p with recompute backward
# ----------------------------------------------------------------------------------------------------------


class _ChunkedLogp(torch.autograd.Function):
    """logp_n = z_n[y_n] - logsumexp(z_n), z = h @ W.T, over supervised rows only, in row chunks.

    Saves (hidden rows, weight, targets, lse [n_sup]); backward recomputes each chunk's z and uses
    d logp_n / d z_n = onehot(y_n) - softmax(z_n).

    With a record that wants the entropy and ``h`` requiring grad, the entropy comes from the backward's ``grad_h``
    GEMM, as in the fused head (no extra pass over the logits tile): ``G = g (onehot - P)``, so
    ``h . (G @ W) / g = z_y - sum_v p_v z_v`` and ``H = -log p_y + h . (G @ W) / g``. Until the backward has run,
    ``rec.entropy`` holds NaN (the trainer sums it when it logs, after the step's backwards). Rows whose incoming
    gradient ``g`` is (numerically) zero are built with ``g = 1`` in the tile and masked out of both gradients.
    """

    @staticmethod
    def forward(ctx, h, weight, t, chunk_size, rec=None):
        # h: [M, H] supervised rows only; t: [M]; rec: a _Rec to fill on the way (or None)
        m = h.shape[0]
        acc = _acc(h.dtype)
        lse = torch.empty(m, dtype=acc, device=h.device)
        logp = torch.empty(m, dtype=acc, device=h.device)
        buf = _tile_buffer(h, weight, chunk_size)
        # the entropy from the backward's grad_h GEMM (only computed when h gets a gradient)
        later = rec is not None and rec.entropy is not None and ctx.needs_input_grad[0]
        for s in range(0, m, chunk_size):
            e = min(s + chunk_size, m)
            z = _chunk_logits(h[s:e], weight, buf)  # [c, V]
            logp[s:e], lse[s:e], _ = _chunk_forward_(z, t[s:e, None], rec, s, e, entropy=not later, keep=False)
            del z
        ctx.save_for_backward(h, weight, t, lse)
        ctx.chunk_size = chunk_size
        ctx.rec = None
        if later:
            rec.entropy.fill_(math.nan)  # filled by the backward
            ctx.rec, ctx.logp = rec, logp.detach()
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        h, weight, t, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        cs = ctx.chunk_size
        m = h.shape[0]
        acc = _acc(h.dtype)
        grad_h = torch.empty_like(h) if need_h else None
        # accumulate the weight gradient in fp32 (or fp64) whatever the input dtype (sum over many chunks)
        grad_w = torch.zeros(weight.shape, dtype=_acc(weight.dtype), device=weight.device) if need_w else None
        g_all = grad_logp.to(acc)
        rec = ctx.rec if need_h else None
        buf = _tile_buffer(h, weight, cs)
        for s in range(0, m, cs):
            e = min(s + cs, m)
            hc = h[s:e]
            z = _chunk_logits(hc, weight, buf)  # recompute [c, V]
            g = g_all[s:e]
            keep = None
            if rec is not None:  # rows without gradient still give their entropy: g = 1 in the tile, masked below
                keep = g.abs() >= _TINY_COEF
                g = torch.where(keep, g, torch.ones_like(g))
            # dL/dz = g * (onehot - softmax), built in place in the recomputed tile
            z.sub_(lse[s:e, None]).exp_().mul_(-g[:, None])
            z.scatter_add_(1, t[s:e, None], g[:, None])
            gz = z.to(h.dtype)
            hw = hc
            if need_h:
                gh = gz @ weight
                if keep is not None:
                    rec.entropy[s:e] = (-ctx.logp[s:e] + (hc.to(acc) * gh.to(acc)).sum(dim=-1) / g).to(rec.entropy.dtype)
                    gh.mul_(keep[:, None].to(gh.dtype))
                    hw = hc * keep[:, None].to(hc.dtype)  # [c, H]: the zero-gradient rows out of grad_w too
                grad_h[s:e] = gh
            if need_w:
                grad_w.addmm_(gz.T.to(acc), hw.to(acc))  # no-op casts for fp32
            del z, gz
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None


def token_logp(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 512,
) -> torch.Tensor:
    """Per-token ``log p(targets | hidden)`` in row chunks; differentiable in ``hidden`` and ``weight``.

    hidden: [N, H] (or [..., H]); weight: [V, H]; targets: [N] long, -100 = ignored.
    Returns logp: [N] fp32 (targets' shape), 0 at ignored positions (and no gradient flows there).

    ``logp_n = z_n[y_n] - logsumexp_v z_n[v]`` with ``z_n = weight @ hidden_n``. Only supervised rows are
    computed. Memory: one ``[chunk_size, V]`` fp32 tile at a time (+ ``[N]`` logsumexp saved for backward).
    Time: the backward recomputes the logits (1 forward GEMM + 3 backward GEMMs = 4 vs the naive 3).
    """
    _check_inputs(hidden, weight, targets, chunk_size)
    shape = targets.shape
    h, t = _flat(hidden, targets)
    sup = t != IGNORE_INDEX
    idx = sup.nonzero().squeeze(1)
    all_sup = idx.numel() == t.numel()
    # gathering the supervised rows copies [n_sup, H] (small next to [chunk, V]); skip it when all are supervised
    h_sup = h if all_sup else h.index_select(0, idx)
    logp_sup = _ChunkedLogp.apply(h_sup, weight, t if all_sup else t.index_select(0, idx), chunk_size)
    if all_sup:
        return logp_sup.reshape(shape)
    out = torch.zeros(t.shape, dtype=logp_sup.dtype, device=logp_sup.device)
    out = out.index_put((idx,), logp_sup)  # out-of-place so autograd routes grads to logp_sup
    return out.reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# 3. fused weighted NLL: gradient computed in the forward
# ----------------------------------------------------------------------------------------------------------


class GroupCoef:
    """A per-token coefficient that is constant within each group and known only once the group means are.

    ids: ``[M]`` long group of each row (0..num_groups-1); ``base``: a :class:`TokenCoef` ``b_n = scale_n * t_n`` (None:
    1); ``resolve(sums [G], counts [G]) -> factor [G]`` where ``sums`` are the groups' sums of ``b_n * (-log p_n)`` and
    ``counts`` the groups' sums of ``scale_n`` (their sizes without data weights; fp32, detached). The coefficient is
    ``c_n = factor[g_n] * b_n``. This is how a worst-group objective (SFT-GO) runs fused on one micro-batch without a
    second ``[V, H]`` gradient buffer (see :func:`_grouped_forward`).
    """

    def __init__(self, ids: torch.Tensor, num_groups: int, resolve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 base: TokenCoef | None = None):
        self.ids, self.num_groups, self.resolve, self.base = ids, int(num_groups), resolve, base


def _coef_chunk(coef, lp: torch.Tensor, s: int, e: int, row: torch.Tensor | None = None):
    """``(c, t)``: the coefficients of rows ``s:e`` (``lp`` is their log p; ``row`` a TokenCoef's ``of_row`` values of
    them) and the token weighting in them (a TokenCoef's ``t``; None for the other kinds): coef a float, a ``[M]``
    tensor, ``f(lp, s, e)`` or a :class:`TokenCoef`."""
    if isinstance(coef, TokenCoef):
        t = row if row is not None else (coef.of_logp(lp).to(lp.dtype) if coef.of_logp is not None else None)
        sc = coef.scale
        if isinstance(sc, torch.Tensor):
            sc = sc[s:e].to(lp.dtype)
            return (sc if t is None else sc * t), t
        if t is None:
            return torch.full_like(lp, float(sc)), None
        return (t if float(sc) == 1.0 else float(sc) * t), t
    if callable(coef):
        return coef(lp, s, e).to(lp.dtype), None
    if isinstance(coef, torch.Tensor):
        return coef[s:e].to(lp.dtype), None
    return torch.full_like(lp, float(coef)), None


def _fused_pass(h, t, weight, coef, grad_w, want_h, chunk_size, buf=None, rec=None):
    """One pass over rows ``h [M, H]``, ``t [M]``, computing the gradient of ``sum_n -c_n logp_n`` in place.

    coef: see :func:`_coef_chunk` (detached). For each chunk, ``d(-c_n logp_n)/dz_n = c_n (softmax(z_n) - onehot(y_n))``
    is built in the logits tile itself, then ``grad_h[chunk] = G @ W`` and ``grad_w += G.T @ h[chunk]`` (accumulated in
    place into ``grad_w``, fp32 or wider). Returns (logp [M] fp32, grad_h [M, H] or None, coef used [M], token
    weighting ``t`` [M] of a TokenCoef or None). 3 GEMMs per chunk, one ``[c, V]`` tile alive.
    """
    m = h.shape[0]
    acc = _acc(h.dtype)
    logp = torch.empty(m, dtype=acc, device=h.device)
    used = torch.empty(m, dtype=acc, device=h.device)
    of_row = coef.of_row if isinstance(coef, TokenCoef) else None
    tw = torch.empty(m, dtype=acc, device=h.device) if isinstance(coef, TokenCoef) and coef.weighted else None
    grad_h = torch.empty_like(h) if want_h else None
    buf = _tile_buffer(h, weight, chunk_size) if buf is None else buf
    # With a record and want_h, the entropy comes from the grad_h GEMM itself: G @ W = c (P @ W - W_y) with P the
    # softmax rows, so h . (G @ W) / c = sum_v p_v (z_v - z_y) and H = -log p_y - sum_v p_v (z_v - z_y). No pass over
    # the tile beyond today's; rows whose c is (numerically) zero are scaled by 1 in the tile and masked out of both
    # gradients afterwards, so the division is always by a usable number.
    gemm_entropy = rec is not None and rec.entropy is not None and want_h
    for s in range(0, m, chunk_size):
        e = min(s + chunk_size, m)
        hc, tc = h[s:e], t[s:e, None]
        z = _chunk_logits(hc, weight, buf)  # [c, V]
        row = of_row(z).to(acc) if of_row is not None else None  # from the logits, before they are overwritten
        lp, _, sumexp = _chunk_forward_(z, tc, rec, s, e, entropy=not gemm_entropy)  # z <- exp(z - max)
        logp[s:e] = lp
        c, t_c = _coef_chunk(coef, lp, s, e, row)
        used[s:e] = c
        if tw is not None:
            tw[s:e] = t_c
        keep = None
        if gemm_entropy:
            keep = c.abs() >= _TINY_COEF
            c = torch.where(keep, c, torch.ones_like(c))
        # softmax = exp(z - max) / sumexp; G = c * softmax - c * onehot, all in the one tile
        z.mul_((c / sumexp)[:, None])
        z.scatter_add_(1, tc, -c[:, None])
        gz = z.to(h.dtype)
        hw = hc
        if want_h:
            gh = gz @ weight
            if keep is not None:
                rec.entropy[s:e] = (-lp - (hc.to(acc) * gh.to(acc)).sum(dim=-1) / c).to(rec.entropy.dtype)
                gh.mul_(keep[:, None].to(gh.dtype))
                hw = hc * keep[:, None].to(hc.dtype)  # [c, H]: the zero-coefficient rows out of grad_w too
            grad_h[s:e] = gh
        if grad_w is not None:
            grad_w.addmm_(gz.T.to(acc), hw.to(acc))  # no-op casts for fp32
        del z, gz
    return logp, grad_h, used, tw


def _logp_pass(h, t, weight, chunk_size, buf=None, rec=None):
    """Forward-only chunked logp over rows ``h [M, H]`` (1 GEMM per chunk), filling ``rec`` if given. Returns [M] fp32."""
    m = h.shape[0]
    acc = _acc(h.dtype)
    logp = torch.empty(m, dtype=acc, device=h.device)
    with torch.no_grad():
        buf = _tile_buffer(h, weight, chunk_size) if buf is None else buf
        for s in range(0, m, chunk_size):
            e = min(s + chunk_size, m)
            z = _chunk_logits(h[s:e], weight, buf)
            logp[s:e], _, _ = _chunk_forward_(z, t[s:e, None], rec, s, e, keep=False)
            del z
    return logp


def _grouped_forward(h, t, weight, gc: GroupCoef, grad_w, want_h, chunk_size, rec=None):
    """Fused weighted NLL whose coefficients are ``factor[g_n] * b_n`` with the group factors depending on the group
    sums of ``b_n * (-log p_n)`` (``b`` the GroupCoef's base, 1 by default), with one ``[V, H]`` gradient buffer.

    Instead of one grad_w buffer per group (G x [V, H]: +1 GB at V=128K, H=2048), we:
      A. compute logp (and the base ``b``) of the rows outside the largest group L (forward only: 1 GEMM over them);
      B. fused pass over L with coefficient ``b`` -> grad_w = sum_L b_n u_n h_n^T, and L's sum;
         now every group's sum and count, hence ``resolve``'s factors, are known: scale grad_w, grad_h[L] by f_L;
      C. fused pass over the other rows with coefficients ``f[g_n] b_n``, accumulating into the same grad_w.
    Cost: 3 GEMMs over M rows + 1 over the rows outside L (two groups at eta = 90: ~3% over 3 GEMMs).
    Passes A and C compute the same logits (so the same ``b``); C's logp is the one returned.
    Returns (logp [M], grad_h, coef [M], token weighting [M] or None).
    """
    m = h.shape[0]
    acc = _acc(h.dtype)
    ids = gc.ids
    base = gc.base if gc.base is not None else TokenCoef()
    # which rows go to which pass: by token count (the passes' cost), one sync
    largest = int(torch.bincount(ids, minlength=gc.num_groups).argmax())
    counts = torch.zeros(gc.num_groups, dtype=acc, device=h.device).index_add_(0, ids, base.scale_rows(m, h.device, acc))
    in_l = ids == largest
    idx_l, idx_o = in_l.nonzero().squeeze(1), (~in_l).nonzero().squeeze(1)
    h_l, t_l, h_o, t_o = h.index_select(0, idx_l), t.index_select(0, idx_l), h.index_select(0, idx_o), t.index_select(0, idx_o)
    ids_o = ids.index_select(0, idx_o)
    base_l, base_o = base.restrict(idx_l), base.restrict(idx_o)
    buf = _tile_buffer(h, weight, chunk_size)  # one logits tile shared by the three passes
    rec_a = _Rec(idx_o.numel(), h.device, False, base.of_row) if base.of_row is not None else None
    lp_o = _logp_pass(h_o, t_o, weight, chunk_size, buf, rec_a)  # pass A
    b_o, _ = _coef_chunk(base_o, lp_o, 0, lp_o.shape[0], None if rec_a is None else rec_a.row.to(acc))
    rec_l, rec_o = (None, None) if rec is None else (_Rec(idx_l.numel(), h.device, rec.entropy is not None),
                                                     _Rec(idx_o.numel(), h.device, rec.entropy is not None))
    lp_l, gh_l, used_l, tw_l = _fused_pass(h_l, t_l, weight, base_l, grad_w, want_h, chunk_size, buf, rec_l)  # pass B
    sums = torch.zeros(gc.num_groups, dtype=acc, device=h.device).index_add_(0, ids_o, -lp_o * b_o)
    sums[largest] = -(lp_l * used_l).sum()
    f = gc.resolve(sums, counts).to(acc)  # [G]
    f_l = f[largest]
    if grad_w is not None:
        grad_w.mul_(f_l)
    lp_o, gh_o, used_o, tw_o = _fused_pass(h_o, t_o, weight, base_o.restrict(factor=f.index_select(0, ids_o)),
                                           grad_w, want_h, chunk_size, buf, rec_o)  # pass C
    logp = torch.empty(m, dtype=acc, device=h.device)
    logp[idx_l], logp[idx_o] = lp_l, lp_o
    used = torch.empty(m, dtype=acc, device=h.device)
    used[idx_l], used[idx_o] = used_l * f_l, used_o
    tw = None
    if tw_l is not None:
        tw = torch.empty(m, dtype=acc, device=h.device)
        tw[idx_l], tw[idx_o] = tw_l, tw_o
    if rec is not None:
        rec.take(rec_l, idx_l)
        rec.take(rec_o, idx_o)
    grad_h = None
    if want_h:
        grad_h = torch.empty_like(h)
        grad_h.index_copy_(0, idx_l, gh_l.mul_(f_l.to(h.dtype)))
        grad_h.index_copy_(0, idx_o, gh_o)
    return logp, grad_h, used, tw


class _FusedNLL(torch.autograd.Function):
    """``sum_n c_n * (-logp_n)`` whose gradients wrt (h, weight) are computed in the forward; backward scales them."""

    @staticmethod
    def forward(ctx, h, weight, t, coef, chunk_size, rec=None):
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # fp32 accumulator: the sum over N tokens of rank-1 updates loses bits in bf16
        grad_w = torch.zeros(weight.shape, dtype=_acc(weight.dtype), device=weight.device) if want_w else None
        if isinstance(coef, GroupCoef):
            logp, grad_h, used, tw = _grouped_forward(h, t, weight, coef, grad_w, want_h, chunk_size, rec)
        else:
            logp, grad_h, used, tw = _fused_pass(h, t, weight, coef, grad_w, want_h, chunk_size, rec=rec)
        if rec is not None:
            rec.used, rec.token = used, tw  # the coefficients applied, the token weighting in them (logged)
        loss = -(used * logp).sum()
        # Kept as attributes (not save_for_backward) so backward can drop ctx's reference and hand the
        # tensors to autograd without a copy: AccumulateGrad clones a tensor someone else still holds,
        # which would double the [V, H] gradient at peak.
        ctx.grads = (grad_h, grad_w.to(weight.dtype) if want_w else None)
        ctx.mark_non_differentiable(logp)
        return loss, logp

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp):
        if ctx.grads is None:
            raise RuntimeError(
                "the fused head computes its gradients in the forward and can be backpropagated only once; "
                "call it again instead of backward(retain_graph=True) twice"
            )
        grad_h, grad_w = ctx.grads
        ctx.grads = None
        if not (grad_loss.numel() == 1 and float(grad_loss) == 1.0):  # e.g. loss scaling, loss * coeff
            if grad_h is not None:
                grad_h.mul_(grad_loss.to(grad_h.dtype))
            if grad_w is not None:
                grad_w.mul_(grad_loss.to(grad_w.dtype))
        return grad_h, grad_w, None, None, None, None


def _check_coef(coef, targets):
    if isinstance(coef, GroupCoef):
        if tuple(coef.ids.shape) != tuple(targets.shape):
            raise ValueError(f"GroupCoef ids must have targets' shape {tuple(targets.shape)}")
    elif isinstance(coef, torch.Tensor):
        if tuple(coef.shape) != tuple(targets.shape):
            raise ValueError(f"coef must be a float, a callable or a tensor of targets' shape {tuple(targets.shape)}")
    elif isinstance(coef, TokenCoef):
        if isinstance(coef.scale, torch.Tensor) and tuple(coef.scale.shape) != tuple(targets.shape):
            raise ValueError(f"TokenCoef scale must be a float or a tensor of targets' shape {tuple(targets.shape)}")
    elif not callable(coef) and (isinstance(coef, bool) or not isinstance(coef, (int, float))):
        raise ValueError(f"coef must be a float, a tensor, a callable, a TokenCoef (RowCoef) or a GroupCoef; got "
                         f"{type(coef).__name__}")


def _rows(x, coef, idx):
    """Restrict a coefficient given over all positions to the supervised rows ``idx``."""
    if isinstance(coef, GroupCoef):
        base = None if coef.base is None else _rows(x, coef.base, idx)
        return GroupCoef(coef.ids.reshape(-1).index_select(0, idx), coef.num_groups, coef.resolve, base)
    if isinstance(coef, TokenCoef):
        if isinstance(coef.scale, torch.Tensor):
            return TokenCoef(coef.scale.reshape(-1).index_select(0, idx), coef.of_logp, coef.of_row)
        return coef
    if isinstance(coef, torch.Tensor):
        return coef.reshape(-1).index_select(0, idx)
    return coef


def weighted_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    coef=1.0,
    *,
    chunk_size: int = 512,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_n c_n * (-log p_n)`` over supervised tokens, straight from hidden states, gradients in the forward.

    hidden: [N, H] (or [..., H]); weight: [V, H] (LM head, no bias); targets: [N] long (-100 ignored).
    coef (treated as a constant, never differentiated): a float; a tensor shaped like targets; a callable
    ``f(logp_chunk, start, end) -> c_chunk`` for coefficients that depend on the token's own ``p`` (DFT's ``sg(p)``);
    or a :class:`GroupCoef` (constant per group, decided from the group means).
    Returns ``(loss, logp)``: ``loss`` a scalar with grad to ``hidden`` and ``weight`` (an unnormalized sum: the
    caller divides by its token count); ``logp`` [N] fp32 detached, 0 at ignored positions.

    Each token's gradient is ``c_n (softmax(z_n) - onehot(y_n))`` with ``c_n`` known in the forward, so each chunk's
    ``[c, V]`` logits tile is turned into its gradient in place and multiplied out right away (3 GEMMs, like the
    naive forward + backward; no ``[N, V]`` tensor). The backward only scales the stored ``grad_hidden [N, H]``
    and ``grad_weight [V, H]``; it can run once per call. This is the idea of Liger-Kernel's fused linear
    cross-entropy, with an arbitrary per-token coefficient.

    backend: ``"torch"`` (default, tested) or ``"liger"`` (Liger-Kernel >= 0.8.2 fused linear CE on CUDA, unit
    coefficient only; a clear ValueError when unavailable).
    """
    if backend not in ("torch", "liger"):
        raise ValueError(f"backend must be 'torch' or 'liger', got {backend!r}")
    _check_inputs(hidden, weight, targets, chunk_size)
    _check_coef(coef, targets)
    if backend == "liger":
        return _liger_fused(hidden, weight, targets, coef, chunk_size)
    shape = targets.shape
    h, t = _flat(hidden, targets)
    sup = t != IGNORE_INDEX
    idx = sup.nonzero().squeeze(1)
    all_sup = idx.numel() == t.numel()
    h_sup = h if all_sup else h.index_select(0, idx)
    t_sup = t if all_sup else t.index_select(0, idx)
    loss, logp_sup = weighted_nll_rows(h_sup, weight, t_sup, _rows(h, coef, idx), chunk_size)
    if all_sup:
        return loss, logp_sup.reshape(shape)
    out = torch.zeros(t.shape, dtype=logp_sup.dtype, device=h.device)
    out[idx] = logp_sup
    return loss, out.reshape(shape)


def weighted_nll_rows(h, weight, t, coef, chunk_size: int = 512, stats: dict | None = None):
    """:func:`weighted_nll` on supervised rows only (``h [M, H]``, ``t [M]`` all valid), without input checks:
    the per-step path of the trainer, whose inputs were validated once at the boundary.

    stats: a dict to fill, from the chunk loop itself, with ``entropy`` ``[M]`` (full-vocabulary entropy of each row's
    next-token distribution), ``correct`` ``[M]`` bool (argmax == target), ``coef`` ``[M]`` (the coefficients
    applied) and, for a :class:`TokenCoef` with a token weighting (also as a GroupCoef's base), ``token_weight`` ``[M]``
    (its ``t``); None (the default) records nothing and costs nothing."""
    rec = None if stats is None else _Rec(h.shape[0], h.device, True)
    if h.shape[0] == 0:
        rec.into(stats) if rec is not None else None
        if stats is not None:
            stats["coef"] = torch.zeros(0, dtype=_acc(h.dtype), device=h.device)
            if _token_part(coef) is not None and _token_part(coef).weighted:
                stats["token_weight"] = torch.zeros(0, dtype=_acc(h.dtype), device=h.device)
        # still connected to the inputs (zero gradients)
        return (h.sum() * 0.0 + weight.sum() * 0.0).to(_acc(h.dtype)), torch.zeros(0, dtype=_acc(h.dtype), device=h.device)
    out = _FusedNLL.apply(h, weight, t, coef, chunk_size, rec)
    if rec is not None:
        rec.into(stats)
        stats["coef"] = rec.used
        if rec.token is not None:
            stats["token_weight"] = rec.token
    return out


def _token_part(coef) -> TokenCoef | None:
    """The TokenCoef in a coefficient (itself, or a GroupCoef's base), or None."""
    if isinstance(coef, GroupCoef):
        return coef.base
    return coef if isinstance(coef, TokenCoef) else None


def _liger_fused(hidden, weight, targets, coef, chunk_size):
    """Optional Liger-Kernel backend: CUDA tensors and a unit coefficient only (untested on our CPU machines).

    The loss comes from Liger's Triton fused linear cross-entropy (``reduction="sum"``); the returned ``logp`` is
    computed by an extra forward-only chunked pass (1 GEMM, no grad) for logging.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        ver = version("liger-kernel")
    except (ImportError, PackageNotFoundError) as exc:
        raise ValueError(
            "backend='liger' needs liger-kernel >= 0.8.2 (pip install 'liger-kernel>=0.8.2') and a CUDA device; "
            "use backend='torch' (the default) otherwise"
        ) from exc
    parts = tuple(int(x) for x in ver.split(".")[:3] if x.isdigit())
    if parts < (0, 8, 2):
        raise ValueError(f"backend='liger' needs liger-kernel >= 0.8.2, found {ver}; upgrade or use backend='torch'")
    if not hidden.is_cuda:
        raise ValueError("backend='liger' runs only on CUDA tensors; use backend='torch' on CPU")
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or float(coef) != 1.0:
        raise ValueError("backend='liger' supports only a unit coefficient (plain cross-entropy); use backend='torch'")
    shape = targets.shape
    h, t = _flat(hidden, targets)
    sup = t != IGNORE_INDEX
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")(weight, h, t)
    idx = sup.nonzero().squeeze(1)
    out = torch.zeros(t.shape, dtype=_acc(h.dtype), device=h.device)
    out[idx] = _logp_pass(h.detach().index_select(0, idx), t.index_select(0, idx), weight.detach(), chunk_size)
    return loss, out.reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# 4. per-chunk losses over soft targets (activation-checkpointed chunks)
# ----------------------------------------------------------------------------------------------------------


def chunked_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    fn: Callable,
    *,
    extra: torch.Tensor | None = None,
    chunk_size: int = 512,
) -> torch.Tensor:
    """``sum over chunks of fn(logits_chunk [c, V], targets_chunk [c], extra_chunk)`` over supervised rows.

    For losses that need the whole logits row (soft targets), not only ``log p`` of the target. ``fn`` returns the
    chunk's scalar loss (a sum over its rows; the caller normalizes). ``extra``: optional ``[N, ...]`` rows that travel
    with the tokens (e.g. a reference model's hidden states), sliced like the rows, never differentiated.
    Each chunk runs under ``torch.utils.checkpoint`` (non-reentrant): its logits and ``fn``'s ``[chunk, V]``
    intermediates are freed after the forward and recomputed in the backward (one extra GEMM per chunk), instead of
    keeping ``N x V`` floats for the backward.
    """
    h, y = _flat(hidden, targets)
    sup = y != IGNORE_INDEX
    idx = sup.nonzero().squeeze(1)
    ex = None if extra is None else extra.reshape(-1, *extra.shape[targets.dim():]).index_select(0, idx).detach()
    return chunked_loss_rows(h.index_select(0, idx), weight, y.index_select(0, idx), fn, extra=ex, chunk_size=chunk_size)


def chunked_loss_rows(h, weight, y, fn, *, extra=None, chunk_size: int = 512, stats: dict | None = None,
                      row_weight: torch.Tensor | None = None):
    """:func:`chunked_loss` on supervised rows only, without input checks.

    ``fn`` may also return ``(loss, {name: [c] tensor})``: per-row values it computed on the way (ASFT's KL per token),
    detached; they are concatenated into ``stats[name]`` ``[M]``. They come from the checkpointed forward; the backward's
    recomputation returns them again and they are dropped. ``row_weight`` ``[M]`` (optional, detached): per-row weights
    (the data weights), handed to ``fn`` as a fourth argument, ``fn(logits, targets, extra, row_weight)``, for it to
    weigh its rows' losses with."""
    n = h.shape[0]
    if n == 0:
        # still connected to the inputs (zero gradients)
        return (h.sum() * 0.0 + weight.sum() * 0.0).to(_acc(h.dtype))

    def chunk(hc, w, yc, ec, rw):
        z = hc @ w.T  # [c, V], freed after forward by checkpoint, recomputed in backward
        return fn(z, yc, ec) if rw is None else fn(z, yc, ec, rw)

    grad = torch.is_grad_enabled()
    total = None
    rows: dict[str, list] = {}
    for s in range(0, n, chunk_size):
        e = min(s + chunk_size, n)
        args = (h[s:e], weight, y[s:e], None if extra is None else extra[s:e],
                None if row_weight is None else row_weight[s:e].detach())
        part = checkpoint(chunk, *args, use_reentrant=False) if grad else chunk(*args)
        part = _rows_into(part, rows)
        total = part if total is None else total + part
    if stats is not None:
        stats.update({k: torch.cat(v) for k, v in rows.items()})
    return total


def _rows_into(part, rows: dict):
    """A chunk function's result: the loss, its per-row values (if any) appended to ``rows``."""
    if isinstance(part, tuple):
        part, extra = part
        for k, v in extra.items():
            rows.setdefault(k, []).append(v.detach())
    return part


# ----------------------------------------------------------------------------------------------------------
# 5. the head a trainer uses: the only code that touches the LM head
# ----------------------------------------------------------------------------------------------------------


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


class LinearHead:
    """Per-token quantities from the model's final hidden states and its LM head, in chunks (never ``[N, V]``).

    The trainer gives it the model and a micro-batch; it runs the forward for the hidden states (``logits_to_keep=1``
    where the model supports it, so the full logits are never built), and computes, over the supervised rows that
    :class:`sftgo.tokens.TokenBatch` selects, ``log p`` or the weighted NLL sum ``sum_n c_n (-log p_n)`` (fused: the
    gradient is computed in the forward) or a per-chunk loss. It knows nothing about objectives.

    :meth:`weight` is the one place that reads the LM head's weight: under FSDP / ZeRO-3 (a sharded weight) or with
    another kernel backend, that method (or a subclass) is what changes.
    """

    def __init__(self, chunk_size: int = 512, fused: bool = True):
        self.chunk_size = int(chunk_size)
        self.fused = fused
        self._checked = False
        self._keep = None  # whether the model's forward takes logits_to_keep (looked up once)
        self.check_tol = 1e-3  # tolerance of the one-time logits check in features() (fp32 forward)

    # -- the LM head
    def weight(self, model) -> torch.Tensor:
        """The LM head's full ``[V, H]`` weight, read after the model's forward.

        Under FSDP (1 or 2) this is the engine's own unsharded parameter: the LM head sits in the root unit (only
        the decoder layers get units of their own, as in configs/accelerate/fsdp.yaml), and FSDP does not reshard the
        root between its forward and backward, so the weight is whole and its gradient is reduce-scattered with the
        rest of the root's (tests/integration/test_fsdp.py: 2 CPU processes equal one). A head in its own unit (or
        ZeRO-3, which partitions parameters outside their module's forward; the trainer picks the naive head there)
        leaves a shard here, which is refused rather than used."""
        head = _unwrap(model).get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise RuntimeError("the LM head has a bias, which the per-token head does not support; run with --token_head naive")
        W = head.weight
        full = (getattr(head, "out_features", W.shape[0]), getattr(head, "in_features", W.shape[-1]))
        if type(W).__name__ == "DTensor" or W.dim() != 2 or tuple(W.shape) != tuple(full):
            raise RuntimeError(
                "the LM head's weight is sharded outside the model's forward (the head in its own FSDP unit, or ZeRO-3): "
                "wrap only the decoder layers (configs/accelerate/fsdp.yaml) so the head stays in the root unit, or run "
                "with --token_head naive")
        return W

    # -- the forward
    def features(self, model, inputs) -> torch.Tensor:
        """Final hidden states ``[B, T-1, H]`` (position t predicts token t+1)."""
        if self._keep is None:
            import inspect

            inner = _unwrap(model)
            while hasattr(inner, "get_base_model"):  # a peft model passes extra kwargs through to its base model
                inner = inner.get_base_model()
            self._keep = "logits_to_keep" in inspect.signature(inner.forward).parameters
        fwd = {**model_inputs(inputs), "output_hidden_states": True}
        if self._keep:
            fwd["logits_to_keep"] = 1
        out = model(**fwd)
        hidden = out.hidden_states[-1]
        if not self._checked:
            # The hidden path assumes logits = lm_head(last hidden state) with no bias, scaling or softcapping.
            # Check it once on the last position, whose logits the model computed anyway.
            W = self.weight(model)
            with torch.no_grad():
                mine = hidden[:, -1].float() @ W.float().T
                theirs = out.logits[:, -1].float()
            # Under mixed precision (--bf16 / --fp16, TRL's default bf16=True) accelerate runs the forward under
            # autocast: the model's lm_head ran in half precision and its logits carry that rounding (the trainer sets
            # check_tol); bias, logit scaling and softcapping move logits by much more.
            tol = self.check_tol
            if not torch.allclose(mine, theirs, atol=tol, rtol=tol):
                raise RuntimeError(
                    "this model's logits are not lm_head(last hidden state) (bias, logit scaling or softcapping?); "
                    "run with --token_head naive"
                )
            self._checked = True
        return hidden[:, :-1]

    def check_targets(self, model, targets: torch.Tensor) -> None:
        """Validate token ids once (first step), not per micro-batch: ids outside the vocabulary are a data bug."""
        head = _unwrap(model).get_output_embeddings()  # before the forward: the weight may still be sharded here
        vocab = getattr(head, "out_features", None) or head.weight.shape[0]
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
            raise ValueError(f"labels hold token ids outside [0, {vocab}); the tokenizer and the model do not match")

    # -- per-token quantities over supervised rows x [N, H], t [N]
    def logp(self, model, x: torch.Tensor, t: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Differentiable ``log p`` [N] (chunked; the backward recomputes each chunk's logits). ``stats``: a dict to
        fill with ``entropy`` / ``correct`` [N] from the same chunk loop (see :func:`weighted_nll_rows`)."""
        return self._logp(model, x, t, _Rec(x.shape[0], x.device, True) if stats is not None else None, stats)

    def _logp(self, model, x, t, rec: _Rec | None, stats: dict | None) -> torch.Tensor:
        W = self.weight(model)
        if x.shape[0] == 0:
            lp = torch.zeros(0, dtype=_acc(x.dtype), device=x.device)
        elif not torch.is_grad_enabled() or not (x.requires_grad or W.requires_grad):
            lp = _logp_pass(x, t, W, self.chunk_size, rec=rec)
        else:
            lp = _ChunkedLogp.apply(x, W, t, self.chunk_size, rec)
        if rec is not None:
            rec.into(stats)
        return lp

    def weighted_nll(self, model, x, t, coef, stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum_n c_n * (-log p_n), log p detached)``; coef as in :func:`weighted_nll`; stats as in :meth:`logp`
        (plus ``coef``, the coefficients applied)."""
        if self.fused and torch.is_grad_enabled():
            return weighted_nll_rows(x, self.weight(model), t, coef, self.chunk_size, stats=stats)
        logp, row = self._logp_row(model, x, t, coef, stats)
        return _weighted_from_logp(logp, coef, stats, row)

    def _logp_row(self, model, x, t, coef, stats):
        """``(log p, the coefficient's of_row values or None)``: a row-based token weighting (EAFT) is computed in the
        logp pass's own chunks."""
        part = _token_part(coef)
        if part is None or part.of_row is None:
            return self.logp(model, x, t, stats), None
        rec = _Rec(x.shape[0], x.device, stats is not None, part.of_row)
        logp = self._logp(model, x, t, rec, stats)
        return logp, rec.row.to(logp.dtype)

    def coefficients(self, model, x, t, coef: TokenCoef) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward only (no gradient): ``(log p [N], the coefficients c [N])`` of a :class:`TokenCoef` (its token
        weighting computed from these rows). The no-grad pre-pass of the step's statistics uses it."""
        with torch.no_grad():
            logp, row = self._logp_row(model, x, t, coef, None)
            c, _ = _coef_chunk(coef, logp, 0, logp.shape[0], row)
        return logp, c

    def chunk_loss(self, model, x, t, fn, extra=None, stats: dict | None = None, row_weight=None) -> torch.Tensor:
        """A per-chunk loss over whole logits rows (:func:`chunked_loss_rows`); ``stats`` gets the rows' values ``fn``
        reports; ``row_weight`` ``[N]`` (optional) reaches ``fn`` as its fourth argument."""
        return chunked_loss_rows(x, self.weight(model), t, fn, extra=extra, chunk_size=self.chunk_size, stats=stats,
                                 row_weight=row_weight)


class LogitsHead(LinearHead):
    """The naive head: the model's own full logits ``[B, T-1, V]`` (any model: bias, logit scaling, softcapping).
    Memory ``O(N V)``; for models whose logits are not ``lm_head(hidden)`` and for checking the fast heads."""

    def __init__(self):
        super().__init__(chunk_size=1, fused=False)

    def features(self, model, inputs) -> torch.Tensor:
        out = model(**model_inputs(inputs))
        return out.logits[:, :-1]

    def check_targets(self, model, targets):
        vocab = _unwrap(model).config.vocab_size if hasattr(_unwrap(model), "config") else None
        if vocab and targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
            raise ValueError(f"labels hold token ids outside [0, {vocab}); the tokenizer and the model do not match")

    def _logp(self, model, x, t, rec, stats):
        logq = torch.log_softmax(x.float(), dim=-1)  # [N, V]: this head has the full logits anyway
        if rec is not None:
            with torch.no_grad():
                z = x.detach().float()
                if rec.row_fn is not None:
                    rec.row = rec.row_fn(z).float()
                if rec.entropy is not None:
                    q = logq.detach()
                    rec.entropy = -(q.exp() * q).sum(dim=-1)
                    rec.correct = z.argmax(dim=-1) == t
            rec.into(stats)
        return logq.gather(-1, t[:, None]).squeeze(-1)

    def chunk_loss(self, model, x, t, fn, extra=None, stats=None, row_weight=None):
        rows: dict[str, list] = {}
        loss = _rows_into(fn(x.float(), t, extra) if row_weight is None else fn(x.float(), t, extra, row_weight), rows)
        if stats is not None:
            stats.update({k: v[0] for k, v in rows.items()})
        return loss


def _weighted_from_logp(logp: torch.Tensor, coef, stats: dict | None = None,
                        row: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted NLL by autograd through a differentiable ``logp`` (chunked / naive heads); ``row``: a row-based
    token weighting's values. ``stats["coef"]`` gets the coefficients applied (and ``token_weight`` their ``t``)."""
    lp = logp.detach()
    m = lp.shape[0]
    if isinstance(coef, GroupCoef):
        G = coef.num_groups
        base = coef.base if coef.base is not None else TokenCoef()
        b, tw = _coef_chunk(base, lp, 0, m, row)
        sums = torch.zeros(G, dtype=lp.dtype, device=lp.device).index_add_(0, coef.ids, -lp * b)
        counts = torch.zeros(G, dtype=lp.dtype, device=lp.device).index_add_(0, coef.ids,
                                                                            base.scale_rows(m, lp.device, lp.dtype))
        c = coef.resolve(sums, counts).to(lp.dtype).index_select(0, coef.ids) * b
    else:
        c, tw = _coef_chunk(coef, lp, 0, m, row)
    if stats is not None:
        stats["coef"] = c.detach()
        if tw is not None:
            stats["token_weight"] = tw.detach()
    return -(c * logp).sum(), lp


def make_head(kind: str, chunk_size: int = 512) -> LinearHead:
    """``fused`` / ``auto`` (gradient in the forward), ``chunked`` (recompute in the backward), ``naive`` (full logits)."""
    if kind == "naive":
        return LogitsHead()
    return LinearHead(chunk_size, fused=kind in ("auto", "fused"))
