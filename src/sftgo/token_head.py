"""Per-token log-probabilities from final hidden states without the full ``[N, V]`` logits.

The naive head ``log_softmax(hidden @ weight.T).gather(targets)`` materializes ``[N, V]`` fp32 logits
(at V = 128K a 4K-token sequence is 2 GB) plus, under autograd, the saved log-softmax output and the
``[N, V]`` gradients of both. Everything here works on row chunks of ``chunk_size`` tokens, so at most one
``[chunk, V]`` tile (plus a transient) is alive at a time.

Three entry points, by how much the caller knows in the forward:

* :func:`token_logp` -- generic: returns differentiable per-token ``log p`` for any downstream loss
  (e.g. Rho-1's batch top-k, whose per-token weights are unknown until all ``log p`` exist). Saves only the
  inputs and one logsumexp per token; the backward recomputes each chunk's logits. 4 GEMMs instead of 3.
* :func:`fused_linear_loss` -- the objectives whose per-token gradient weight is known once the token's own
  ``p`` is known (SFT, DFT, InfoSFT) or once two group means are known (SFT-GO): the gradient is computed in
  the forward, chunk by chunk (the idea of Liger-Kernel's fused linear cross-entropy), so the backward only
  scales stored gradients. 3 GEMMs, like the naive path.
* :func:`chunked_target_sft` -- Target-SFT (soft targets over the top-k of a residual distribution): each
  chunk's logits under activation checkpointing, calling :func:`sftgo.objectives.target_sft` on the chunk.

Conventions: ``hidden [N, H]`` (or ``[..., H]``, flattened), ``weight [V, H]`` (LM head, no bias),
``targets [N]`` long with ``ignore_index = -100`` marking unsupervised positions; returned ``logp`` is ``0``
there. Losses are ``sum over supervised tokens / num_items``; ``num_items`` defaults to the number of
supervised tokens (pass the global count of the optimizer step under gradient accumulation / multiple ranks).

Choosing ``chunk_size``: the chunked paths' peak extra memory is about ``chunk * V * 4`` bytes (one fp32 logits
tile) + the gradients ``V * H`` and ``N * H``. At V = 128K a 1024-row tile is 0.5 GB; 512 halves it at no
measurable cost in time on CPU (see benchmarks/README.md).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from .data import IGNORE_INDEX  # the one definition of the label-ignore value

__all__ = [
    "IGNORE_INDEX",
    "naive_token_logp",
    "token_logp",
    "fused_linear_loss",
    "chunked_target_sft",
    "FUSED_OBJECTIVES",
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
    """

    @staticmethod
    def forward(ctx, h, weight, t, chunk_size):
        # h: [M, H] supervised rows only; t: [M]
        m = h.shape[0]
        acc = _acc(h.dtype)
        lse = torch.empty(m, dtype=acc, device=h.device)
        logp = torch.empty(m, dtype=acc, device=h.device)
        buf = _tile_buffer(h, weight, chunk_size)
        for s in range(0, m, chunk_size):
            e = min(s + chunk_size, m)
            z = _chunk_logits(h[s:e], weight, buf)  # [c, V]
            tgt = z.gather(1, t[s:e, None]).squeeze(1)
            lse[s:e], _ = _chunk_logsumexp_(z)
            logp[s:e] = tgt - lse[s:e]
            del z
        ctx.save_for_backward(h, weight, t, lse)
        ctx.chunk_size = chunk_size
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
        buf = _tile_buffer(h, weight, cs)
        for s in range(0, m, cs):
            e = min(s + cs, m)
            hc = h[s:e]
            z = _chunk_logits(hc, weight, buf)  # recompute [c, V]
            g = g_all[s:e]
            # dL/dz = g * (onehot - softmax), built in place in the recomputed tile
            z.sub_(lse[s:e, None]).exp_().mul_(-g[:, None])
            z.scatter_add_(1, t[s:e, None], g[:, None])
            gz = z.to(h.dtype)
            if need_h:
                grad_h[s:e] = gz @ weight
            if need_w:
                grad_w.addmm_(gz.T.to(acc), hc.to(acc))  # no-op casts for fp32
            del z, gz
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None


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
# 3. fused objectives: gradient computed in the forward
# ----------------------------------------------------------------------------------------------------------

# objective -> per-token weight w(logp) (detached), loss = -sum_n w_n * logp_n / num_items.
# sft_go is handled separately (its weights depend on group means, see _FusedLoss.forward).
FUSED_OBJECTIVES = ("sft", "dft", "infosft", "sft_go")


def _token_weight_fn(objective: str, P: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """None means w = 1 (skip the multiply)."""
    from . import objectives as obj  # imported lazily: objectives is a sibling module with no heavy deps

    if objective == "dft":
        return obj.dft_weights  # w = sg(p)
    if objective == "infosft":
        return lambda lp: obj.infosft_weights(lp, P)  # w = sg(p) relu(1 - logit(p)/logit(P))
    return None


def _fused_pass(h, t, weight, coef, grad_w, want_h, chunk_size, buf=None):
    """One pass over rows ``h [M, H]``, ``t [M]``, computing the gradient of ``sum_n -c_n logp_n`` in place.

    coef: ``logp [c] -> c_n [c]`` (fp32, detached) or a float (same for all rows). For each chunk,
    ``d(-c_n logp_n)/dz_n = c_n (softmax(z_n) - onehot(y_n))`` is built in the logits tile itself, then
    ``grad_h[chunk] = G @ W`` and ``grad_w += G.T @ h[chunk]`` (accumulated in place into ``grad_w``, fp32 or wider).
    Returns (logp [M] fp32, grad_h [M, H] or None). 3 GEMMs per chunk, one ``[c, V]`` tile alive.
    """
    m = h.shape[0]
    acc = _acc(h.dtype)
    logp = torch.empty(m, dtype=acc, device=h.device)
    grad_h = torch.empty_like(h) if want_h else None
    buf = _tile_buffer(h, weight, chunk_size) if buf is None else buf
    for s in range(0, m, chunk_size):
        e = min(s + chunk_size, m)
        hc, tc = h[s:e], t[s:e, None]
        z = _chunk_logits(hc, weight, buf)  # [c, V]
        tgt = z.gather(1, tc).squeeze(1)
        lse, sumexp = _chunk_logsumexp_(z)  # z <- exp(z - max)
        lp = tgt - lse
        logp[s:e] = lp
        c = coef(lp) if callable(coef) else torch.full_like(lp, float(coef))
        # softmax = exp(z - max) / sumexp; G = c * softmax - c * onehot, all in the one tile
        z.mul_((c / sumexp)[:, None])
        z.scatter_add_(1, tc, -c[:, None])
        gz = z.to(h.dtype)
        if want_h:
            grad_h[s:e] = gz @ weight
        if grad_w is not None:
            grad_w.addmm_(gz.T.to(acc), hc.to(acc))  # no-op casts for fp32
        del z, gz
    return logp, grad_h


def _logp_pass(h, t, weight, chunk_size, buf=None):
    """Forward-only chunked logp over rows ``h [M, H]`` (1 GEMM per chunk). Returns [M] fp32."""
    m = h.shape[0]
    acc = _acc(h.dtype)
    logp = torch.empty(m, dtype=acc, device=h.device)
    with torch.no_grad():
        buf = _tile_buffer(h, weight, chunk_size) if buf is None else buf
        for s in range(0, m, chunk_size):
            e = min(s + chunk_size, m)
            z = _chunk_logits(h[s:e], weight, buf)
            tgt = z.gather(1, t[s:e, None]).squeeze(1)
            lse, _ = _chunk_logsumexp_(z)
            logp[s:e] = tgt - lse
            del z
    return logp


class _FusedLoss(torch.autograd.Function):
    """Scalar loss whose gradients wrt (h, weight) are computed in the forward; backward scales them."""

    @staticmethod
    def forward(ctx, h, weight, t, objective, imp, lam, P, num_items, chunk_size):
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        m = h.shape[0]
        # fp32 accumulator: the sum over N tokens of rank-1 updates loses bits in bf16
        grad_w = torch.zeros(weight.shape, dtype=_acc(weight.dtype), device=weight.device) if want_w else None
        if objective != "sft_go":
            wfn = _token_weight_fn(objective, P)
            inv = 1.0 / num_items
            coef = (lambda lp: wfn(lp) * inv) if wfn is not None else inv
            logp, grad_h = _fused_pass(h, t, weight, coef, grad_w, want_h, chunk_size)
            w = wfn(logp) if wfn is not None else 1.0
            loss = -(w * logp).sum() / num_items
        else:
            logp, grad_h, loss = _sft_go_forward(h, t, weight, imp, lam, num_items, grad_w, want_h, chunk_size)
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
                "fused_linear_loss computes its gradients in the forward and can be backpropagated only once; "
                "call fused_linear_loss again instead of backward(retain_graph=True) twice"
            )
        grad_h, grad_w = ctx.grads
        ctx.grads = None
        if not (grad_loss.numel() == 1 and float(grad_loss) == 1.0):  # e.g. loss scaling, loss * coeff
            if grad_h is not None:
                grad_h.mul_(grad_loss.to(grad_h.dtype))
            if grad_w is not None:
                grad_w.mul_(grad_loss.to(grad_w.dtype))
        return grad_h, grad_w, None, None, None, None, None, None, None


def _sft_go_forward(h, t, weight, imp, lam, num_items, grad_w, want_h, chunk_size):
    """SFT-GO (Eq. 3-4) with one ``[V, H]`` gradient buffer.

    loss = (1-lam) * sum_n CE_n / num_items + lam * max(mean_{G1} CE, mean_{G0} CE) * n_sup / num_items
    (empty groups left out of the max; without num_items, num_items = n_sup and this is Eq. 3-4 exactly).
    Token coefficient on (softmax - onehot): c_n = (1-lam)/num_items + lam*[n in worst]*n_sup/(num_items*n_worst).

    c_n is constant within a group but depends on both group means, known only after every token's logp.
    Instead of one grad_w buffer per group (G x [V, H]: +1 GB at V=128K, H=2048), we:
      A. compute logp of the smaller group S alone (forward only: 1 GEMM over n_S rows) -> mean_S;
      B. fused pass over the larger group L with unit coefficient -> grad_w = sum_L u_n h_n^T, mean_L;
         now both means, hence c_L and c_S, are known: scale grad_w and grad_h[L] by c_L;
      C. fused pass over S with coefficient c_S, accumulating into the same grad_w.
    Cost: 3 GEMMs over N rows + 1 over n_S <= N/2 (at eta = 90, n_S ~ N/10: ~3% over 3 GEMMs).
    Passes A and C compute the same S logits; C's logp is the one returned and used in the loss value.
    """
    m = h.shape[0]
    n_sup = m
    g1 = imp
    n1 = int(g1.sum())
    n0 = m - n1
    grad_h = torch.empty_like(h) if want_h else None
    logp = torch.empty(m, dtype=_acc(h.dtype), device=h.device)
    base = (1.0 - lam) / num_items
    if lam == 0.0 or n1 == 0 or n0 == 0:
        # coefficients known up front: the worst group is the only non-empty one (or lam = 0)
        worst_n = max(n1, n0, 1)
        cw = base + lam * n_sup / (num_items * worst_n)
        logp, grad_h = _fused_pass(h, t, weight, cw, grad_w, want_h, chunk_size)
        ce = -logp
        means = [ce[g1].mean() if n1 else None, ce[~g1].mean() if n0 else None]
        group_term = max(x for x in means if x is not None) if m else ce.sum()
        loss = (1.0 - lam) * ce.sum() / num_items + lam * group_term * n_sup / num_items
        return logp, grad_h, loss
    small_is_g1 = n1 <= n0
    idx_s = (g1 if small_is_g1 else ~g1).nonzero().squeeze(1)
    idx_l = (~g1 if small_is_g1 else g1).nonzero().squeeze(1)
    h_s, t_s = h.index_select(0, idx_s), t.index_select(0, idx_s)
    h_l, t_l = h.index_select(0, idx_l), t.index_select(0, idx_l)
    buf = _tile_buffer(h, weight, chunk_size)  # one logits tile shared by the three passes
    mean_s = -_logp_pass(h_s, t_s, weight, chunk_size, buf).mean()  # pass A
    logp_l, gh_l = _fused_pass(h_l, t_l, weight, 1.0, grad_w, want_h, chunk_size, buf)  # pass B, unit coef
    mean_l = -logp_l.mean()
    mean1, mean0 = (mean_s, mean_l) if small_is_g1 else (mean_l, mean_s)
    # tie -> the unimportant group G0 is the max, as in objectives.sft_go
    worst_is_g1 = bool(mean1 > mean0)
    n_worst = n1 if worst_is_g1 else n0
    c_worst = base + lam * n_sup / (num_items * n_worst)
    l_is_worst = worst_is_g1 != small_is_g1
    c_l, c_s = (c_worst, base) if l_is_worst else (base, c_worst)
    if grad_w is not None:
        grad_w.mul_(c_l)
    logp_s, gh_s = _fused_pass(h_s, t_s, weight, c_s, grad_w, want_h, chunk_size, buf)  # pass C
    logp[idx_l], logp[idx_s] = logp_l, logp_s
    if want_h:
        grad_h.index_copy_(0, idx_l, gh_l.mul_(c_l))
        grad_h.index_copy_(0, idx_s, gh_s)
    ce = -logp
    group_term = torch.maximum(ce[g1].mean(), ce[~g1].mean())
    loss = (1.0 - lam) * ce.sum() / num_items + lam * group_term * n_sup / num_items
    return logp, grad_h, loss


def _as_count(num_items, n_sup):
    """The loss denominator: ``num_items`` (or ``n_sup``), floored at 1 as in ``objectives`` (empty -> 0, not NaN)."""
    if num_items is None:
        return float(max(n_sup, 1))
    if isinstance(num_items, torch.Tensor):
        if num_items.numel() != 1:
            raise ValueError(f"num_items must be a scalar count; got a tensor of shape {tuple(num_items.shape)}")
        num_items = num_items.item()  # one sync per call; the per-chunk coefficients need a Python float
    if isinstance(num_items, bool) or not isinstance(num_items, (int, float)) or not num_items >= 0:
        raise ValueError(f"num_items must be a non-negative number (global supervised-token count); got {num_items!r}")
    return max(float(num_items), 1.0)


def fused_linear_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    objective: str,
    *,
    important: torch.Tensor | None = None,
    lam: float = 0.0,
    P: float = 0.93,
    num_items: int | float | torch.Tensor | None = None,
    chunk_size: int = 512,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level objective straight from hidden states, gradients computed in the forward.

    hidden: [N, H] (or [..., H]); weight: [V, H]; targets: [N] long (-100 ignored);
    important: [N] bool (sft_go only). Returns ``(loss, logp)``: ``loss`` a scalar with grad to ``hidden``
    and ``weight``; ``logp`` [N] fp32 detached, 0 at ignored positions (for logging / group metrics).

    With ``CE_n = -logp_n``, ``p_n = exp(logp_n)``, sums over supervised tokens, ``K = num_items``:

    * ``"sft"``:     ``sum CE_n / K``
    * ``"dft"``:     ``sum sg(p_n) CE_n / K``                                   (DFT)
    * ``"infosft"``: ``sum w_n CE_n / K``, ``w = sg(p) relu(1 - sg(logit p)/logit P)``   (InfoSFT)
    * ``"sft_go"``:  ``(1-lam) sum CE_n / K + lam max(mean_{G1} CE, mean_{G0} CE) n_sup / K``  (Eq. 3-4;
      G1 = important, an empty group is left out of the max)

    Each token's gradient is ``c_n (softmax(z_n) - onehot(y_n))`` with a coefficient ``c_n`` known in the
    forward, so each chunk's ``[c, V]`` logits tile is turned into its gradient in place and multiplied out
    right away (3 GEMMs, like the naive forward + backward; no ``[N, V]`` tensor). The backward only
    scales the stored ``grad_hidden [N, H]`` and ``grad_weight [V, H]``; it can run once per call.
    Values and gradients equal ``objectives.<objective>(naive_token_logp(...), ...)``.

    backend: ``"torch"`` (default, tested) or ``"liger"`` (Liger-Kernel >= 0.8.2 fused linear CE on CUDA,
    objective "sft" only; a clear ValueError when unavailable).
    """
    if objective not in FUSED_OBJECTIVES:
        raise ValueError(f"objective must be one of {FUSED_OBJECTIVES}, got {objective!r}")
    if backend not in ("torch", "liger"):
        raise ValueError(f"backend must be 'torch' or 'liger', got {backend!r}")
    _check_inputs(hidden, weight, targets, chunk_size)
    if objective == "sft_go":
        if important is None:
            raise ValueError("objective 'sft_go' needs important= (bool tensor shaped like targets, True = G1)")
        if not isinstance(important, torch.Tensor) or tuple(important.shape) != tuple(targets.shape):
            raise ValueError(f"important must be a bool tensor of targets' shape {tuple(targets.shape)}")
        if isinstance(lam, torch.Tensor) and lam.numel() == 1:
            lam = float(lam)  # a schedule may hand a tensor; the coefficients need a Python float
        if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must be a float in [0, 1], got {lam!r}")
    elif important is not None:
        raise ValueError(f"important= is used only by objective 'sft_go', not {objective!r}")
    if objective == "infosft" and not (isinstance(P, (int, float)) and 0.5 < float(P) < 1.0):
        raise ValueError(f"P must be a float in (0.5, 1) (InfoSFT confidence threshold), got {P!r}")
    if backend == "liger":
        return _liger_fused(hidden, weight, targets, objective, num_items, chunk_size)

    shape = targets.shape
    h, t = _flat(hidden, targets)
    sup = t != IGNORE_INDEX
    idx = sup.nonzero().squeeze(1)
    n_sup = idx.numel()
    k = _as_count(num_items, n_sup)
    all_sup = n_sup == t.numel()
    h_sup = h if all_sup else h.index_select(0, idx)
    t_sup = t if all_sup else t.index_select(0, idx)
    imp = None
    if objective == "sft_go":
        imp = important.reshape(-1).bool()
        imp = imp if all_sup else imp.index_select(0, idx)
    loss, logp_sup = _FusedLoss.apply(h_sup, weight, t_sup, objective, imp, float(lam), float(P), k, chunk_size)
    if all_sup:
        return loss, logp_sup.reshape(shape)
    out = torch.zeros(t.shape, dtype=logp_sup.dtype, device=h.device)
    out[idx] = logp_sup
    return loss, out.reshape(shape)


def _liger_fused(hidden, weight, targets, objective, num_items, chunk_size):
    """Optional Liger-Kernel backend: CUDA tensors and objective 'sft' only (untested on our CPU machines).

    The loss comes from Liger's Triton fused linear cross-entropy (``reduction="sum"`` / num_items); the
    returned ``logp`` is computed by an extra forward-only chunked pass (1 GEMM, no grad) for logging.
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
    if objective != "sft":
        raise ValueError(f"backend='liger' supports only objective='sft', not {objective!r}; use backend='torch'")
    shape = targets.shape
    h, t = _flat(hidden, targets)
    sup = t != IGNORE_INDEX
    k = _as_count(num_items, int(sup.sum()))
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")(weight, h, t) / k
    idx = sup.nonzero().squeeze(1)
    out = torch.zeros(t.shape, dtype=_acc(h.dtype), device=h.device)
    out[idx] = _logp_pass(h.detach().index_select(0, idx), t.index_select(0, idx), weight.detach(), chunk_size)
    return loss, out.reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# 4. chunked Target-SFT
# ----------------------------------------------------------------------------------------------------------


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
    """Target-SFT from hidden states, one ``[chunk, V]`` logits tile alive at a time.

    hidden: [N, H] (or [..., H]); weight: [V, H]; labels: [N] long (-100 ignored);
    ref_hidden: [N, H_ref], ref_weight: [V, H_ref] (residual="reference" only: the reference model's final
    hidden states and LM head; its logits are computed per chunk without grad). Returns a scalar.

    ``loss = sum_n -sum_k sg(Q_nk) log softmax(z_n)_k / num_items`` with
    ``Q = gamma onehot(y) + (1 - gamma) residual`` (see :func:`sftgo.objectives.target_sft` for gamma /
    residual semantics). Each chunk calls ``objectives.target_sft`` with the global ``num_items``
    (default: the number of supervised tokens), so the chunk losses add up to the unchunked loss.
    Each chunk runs under ``torch.utils.checkpoint`` (non-reentrant): its logits and the objective's
    ``[chunk, V]`` intermediates are freed after the forward and recomputed in the backward (one extra
    GEMM per chunk, two for the reference logits), instead of keeping ``N x V`` floats for the backward.
    """
    from . import objectives as obj

    _check_inputs(hidden, weight, labels, chunk_size, name_targets="labels")
    if residual == "reference":
        if ref_hidden is None or ref_weight is None:
            raise ValueError("residual='reference' needs ref_hidden [N, H_ref] and ref_weight [V, H_ref]")
        _check_inputs(ref_hidden, ref_weight, labels, chunk_size, name_targets="labels")
        if ref_weight.shape[0] != weight.shape[0]:
            raise ValueError(
                f"ref_weight has V={ref_weight.shape[0]} but weight has V={weight.shape[0]}; "
                "the reference model must share the vocabulary"
            )
    elif ref_hidden is not None or ref_weight is not None:
        raise ValueError(f"ref_hidden / ref_weight are used only with residual='reference', not {residual!r}")
    h, y = _flat(hidden, labels)
    sup = y != IGNORE_INDEX
    idx = sup.nonzero().squeeze(1)
    n_sup = idx.numel()
    k = num_items if num_items is not None else n_sup  # objectives floors the denominator at 1
    if n_sup == 0:
        # still connected to the inputs (zero gradients), like objectives.target_sft on an empty mask
        return (h.sum() * 0.0 + weight.sum() * 0.0).to(_acc(h.dtype))
    h_sup, y_sup = h.index_select(0, idx), y.index_select(0, idx)
    rh_sup = None
    if residual == "reference":
        rh_sup = ref_hidden.reshape(-1, ref_hidden.shape[-1]).index_select(0, idx).detach()
        ref_w = ref_weight.detach()

    def chunk_loss(hc, w, yc, rhc):
        z = hc @ w.T  # [c, V], freed after forward by checkpoint, recomputed in backward
        ref = None
        if rhc is not None:
            with torch.no_grad():
                ref = rhc @ ref_w.T  # [c, V] reference logits, never differentiated
        ones = torch.ones(yc.shape, dtype=torch.bool, device=yc.device)
        return obj.target_sft(z, yc, ones, gamma=gamma, residual=residual, topk=topk, ref_logits=ref, num_items=k)

    total = None
    for s in range(0, n_sup, chunk_size):
        e = min(s + chunk_size, n_sup)
        rhc = rh_sup[s:e] if rh_sup is not None else None
        part = checkpoint(chunk_loss, h_sup[s:e], weight, y_sup[s:e], rhc, use_reentrant=False)
        total = part if total is None else total + part
    return total
