"""The chunk loops of the per-token head: logits tiles, in-place logsumexp, the fused and recompute passes and their
autograd Functions. Everything works on supervised rows ``h [M, H]``, ``t [M]`` (all valid) and one ``[chunk, V]``
logits tile at a time; the entries that check and flatten their inputs are in :mod:`.heads`. Coefficients are
:class:`~sftgo.token_head.coefficients.Coef` objects: the passes call their methods (:mod:`.coefficients`).
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from .coefficients import Coef, GroupCoef

# ----------------------------------------------------------------------------------------------------------
# 1. one chunk: logits, logsumexp, log p and the metrics recorded on the way
# ----------------------------------------------------------------------------------------------------------


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


def _entropy_col(row_fn) -> int | None:
    """The column of a row function's ``[c, width]`` values that the head fills with each row's full-vocabulary entropy,
    computed as for its ``entropy`` metric (``row_fn.entropy_col``; a module:function token weighting reading the
    entropy), so that the row function need not recompute it; None: it reads none. The head computes it before the
    coefficient: the fused pass off its grad_h GEMM (:func:`_fused_pass`, "late" c), the log p passes in their chunk
    forward (:func:`_chunk_forward_`), the naive head from its full logits."""
    return getattr(row_fn, "entropy_col", None)


class _Rec:
    """What a chunk loop records on its way, per row: the full-vocabulary entropy of the next-token distribution and
    whether its argmax is the target (``metrics``; also when the row function reads the entropy, see
    :func:`_entropy_col`), a :class:`RowCoef`'s values (``row_fn``; ``[M, row_fn.width]`` for a row function with a
    ``width``) and, in the forward-only pass (:func:`_logp_pass`), the probability mass below the target (``lower``,
    :func:`_lower_mass`). ``[M]`` tensors."""

    def __init__(self, m: int, device, metrics: bool, row_fn=None, lower: bool = False):
        metrics = metrics or _entropy_col(row_fn) is not None
        self.entropy = torch.empty(m, dtype=torch.float32, device=device) if metrics else None
        self.correct = torch.empty(m, dtype=torch.bool, device=device) if metrics else None
        self.row_fn = row_fn
        # a row function's values: one per row, or ``row_fn.width`` per row (a module:function token weighting's inputs)
        width = getattr(row_fn, "width", None)
        self.row = None if row_fn is None else torch.empty((m,) if width is None else (m, width), dtype=torch.float32,
                                                           device=device)
        self.lower = torch.empty(m, dtype=torch.float32, device=device) if lower else None
        self.used = self.token = None  # set by the fused pass: the coefficients applied, the token weighting in them
        self.value = None  # and a valued coefficient's per-token loss values f_n (the power family)

    def into(self, stats: dict | None) -> None:
        if stats is not None and self.entropy is not None:
            stats["entropy"], stats["correct"] = self.entropy, self.correct

    def take(self, other: "_Rec", idx: torch.Tensor) -> None:
        """Rows ``idx`` of this record are ``other``'s rows (the grouped forward's passes over row subsets)."""
        for name in ("entropy", "correct", "row"):
            mine = getattr(self, name)
            if mine is not None:
                mine[idx] = getattr(other, name)


def _lower_mass(e: torch.Tensor, tc: torch.Tensor, sumexp: torch.Tensor) -> torch.Tensor:
    """``[c]``: each row's probability mass on the tokens strictly less likely than its target,
    ``sum_v p_v 1[p_v < p_y]`` (the target and its ties excluded), from ``e = exp(z - max) [c, V]`` (the tile as
    :func:`_chunk_logsumexp_` leaves it), targets ``tc [c, 1]`` and ``sumexp = sum_v e [c]``. The comparison is on
    ``e`` itself, so two logits that round to the same ``e`` tie. A block of rows at a time (a scratch of at most
    ``_SCRATCH_ELEMS``), so no second ``[c, V]`` tile."""
    c, V = e.shape
    ey = e.gather(1, tc)  # [c, 1]
    below = torch.empty(c, dtype=e.dtype, device=e.device)
    rows = max(1, min(c, _SCRATCH_ELEMS // max(V, 1)))
    for r in range(0, c, rows):
        blk = e[r:r + rows]
        below[r:r + rows] = torch.where(blk < ey[r:r + rows], blk, 0.0).sum(dim=-1)
    return below / sumexp


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

    * the RowCoef's values, from the logits before they are overwritten (and their entropy column, if any, from the
      entropy below: ``entropy`` must then be True);
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
        col = _entropy_col(rec.row_fn)
        if col is not None:
            rec.row[s:e, col] = rec.entropy[s:e]
    lse = m.squeeze(-1) + sumexp.log()
    return tgt - lse, lse, sumexp

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
        # the entropy from the backward's grad_h GEMM (only computed when h gets a gradient), unless the row function
        # reads it now
        later = rec is not None and rec.entropy is not None and ctx.needs_input_grad[0] \
            and _entropy_col(rec.row_fn) is None
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

# ----------------------------------------------------------------------------------------------------------
# 3. fused weighted NLL: gradient computed in the forward
# ----------------------------------------------------------------------------------------------------------


def _fused_pass(h, t, weight, coef: Coef, grad_w, want_h, chunk_size, buf=None, rec=None):
    """One pass over rows ``h [M, H]``, ``t [M]``, computing the gradient of ``sum_n -c_n logp_n`` in place.

    coef: a :class:`Coef`, not a grouped one (detached). For each chunk, ``d(-c_n logp_n)/dz_n = c_n (softmax(z_n) -
    onehot(y_n))`` is built in the logits tile itself, then ``grad_h[chunk] = G @ W`` and ``grad_w += G.T @ h[chunk]``
    (accumulated in place into ``grad_w``, fp32 or wider). Returns (logp [M] fp32, grad_h [M, H] or None, coef used [M], token
    weighting ``t`` [M] or None, and for a ``valued`` coefficient ``(scale_n f_n [M], f_n [M])``, else None). 3 GEMMs per
    chunk, one ``[c, V]`` tile alive.
    """
    m = h.shape[0]
    acc = _acc(h.dtype)
    logp = torch.empty(m, dtype=acc, device=h.device)
    used = torch.empty(m, dtype=acc, device=h.device)
    of_row = coef.of_row
    tw = torch.empty(m, dtype=acc, device=h.device) if coef.weighted else None
    vals = (torch.empty(m, dtype=acc, device=h.device), torch.empty(m, dtype=acc, device=h.device)) \
        if coef.valued else None
    grad_h = torch.empty_like(h) if want_h else None
    buf = _tile_buffer(h, weight, chunk_size) if buf is None else buf
    # With a record and want_h, the entropy comes from the grad_h GEMM itself: G @ W = c (P @ W - W_y) with P the
    # softmax rows, so h . (G @ W) / c = sum_v p_v (z_v - z_y) and H = -log p_y - sum_v p_v (z_v - z_y). No pass over
    # the tile beyond today's; rows whose c is (numerically) zero are scaled by 1 in the tile and masked out of both
    # gradients afterwards, so the division is always by a usable number. A coefficient whose row function reads the
    # entropy (_entropy_col) needs it before c ("late" c): the tile is built with c = 1, G' = P - onehot, and its
    # grad_h GEMM gives the entropy the same way (H = -log p_y - h . (G' @ W)); then G = c G', so c scales the [c, H]
    # sides of the two GEMMs instead of the tile (no pass over the tile beyond plain SFT's). Without want_h (no grad_h
    # GEMM) the chunk forward computes the entropy (a private record without one).
    ent_col = _entropy_col(of_row)
    late = ent_col is not None and want_h
    if ent_col is not None and not late and (rec is None or rec.entropy is None):
        rec = _Rec(m, h.device, True)
    gemm_entropy = rec is not None and rec.entropy is not None and want_h and ent_col is None
    for s in range(0, m, chunk_size):
        e = min(s + chunk_size, m)
        hc, tc = h[s:e], t[s:e, None]
        z = _chunk_logits(hc, weight, buf)  # [c, V]
        row = of_row(z).to(acc) if of_row is not None else None  # from the logits, before they are overwritten
        lp, _, sumexp = _chunk_forward_(z, tc, rec, s, e, entropy=not (gemm_entropy or late))  # z <- exp(z - max)
        logp[s:e] = lp
        if late:  # G' = P - onehot in the tile, its grad_h GEMM, the entropy from it
            z.div_(sumexp[:, None])
            z.scatter_add_(1, tc, z.new_full(tc.shape, -1.0))
            gz = z.to(h.dtype)
            gu = gz @ weight
            row[:, ent_col] = -lp - (hc.to(acc) * gu.to(acc)).sum(dim=-1)
            if rec is not None and rec.entropy is not None:
                rec.entropy[s:e] = row[:, ent_col].to(rec.entropy.dtype)
        elif ent_col is not None:
            row[:, ent_col] = rec.entropy[s:e]
        c, t_c = coef.chunk(lp, s, e, row)
        used[s:e] = c
        if tw is not None:
            tw[s:e] = t_c
        if vals is not None:
            vals[0][s:e], vals[1][s:e] = coef.value(lp, s, e)
        if late:  # G = c G': grad_h = c (G' @ W), grad_w += G'.T @ (c h)
            grad_h[s:e] = gu.mul_(c[:, None].to(gu.dtype))
            if grad_w is not None:
                grad_w.addmm_(gz.T.to(acc), hc.to(acc) * c[:, None])
            del z, gz
            continue
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
    return logp, grad_h, used, tw, vals


def _logp_pass(h, t, weight, chunk_size, buf=None, rec=None):
    """Forward-only chunked logp over rows ``h [M, H]`` (1 GEMM per chunk), filling ``rec`` if given (its ``lower``
    from the same tile, once it holds ``exp(z - max)``). Returns [M] fp32."""
    m = h.shape[0]
    acc = _acc(h.dtype)
    logp = torch.empty(m, dtype=acc, device=h.device)
    lower = rec is not None and rec.lower is not None
    with torch.no_grad():
        buf = _tile_buffer(h, weight, chunk_size) if buf is None else buf
        for s in range(0, m, chunk_size):
            e = min(s + chunk_size, m)
            z = _chunk_logits(h[s:e], weight, buf)
            logp[s:e], _, sumexp = _chunk_forward_(z, t[s:e, None], rec, s, e, keep=lower)
            if lower:  # z <- exp(z - max)
                rec.lower[s:e] = _lower_mass(z, t[s:e, None], sumexp).to(rec.lower.dtype)
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
    With a ``valued`` base (the power family) the group sums are of its loss values ``scale_n f_n``, not of
    ``b_n CE_n``. Returns (logp [M], grad_h, coef [M], token weighting [M] or None, (values, f) [M] or None).
    """
    m = h.shape[0]
    acc = _acc(h.dtype)
    ids = gc.ids
    base = gc.token_part()
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
    b_o, _ = base_o.chunk(lp_o, 0, lp_o.shape[0], None if rec_a is None else rec_a.row.to(acc))
    rec_l, rec_o = (None, None) if rec is None else (_Rec(idx_l.numel(), h.device, rec.entropy is not None),
                                                     _Rec(idx_o.numel(), h.device, rec.entropy is not None))
    lp_l, gh_l, used_l, tw_l, vals_l = _fused_pass(h_l, t_l, weight, base_l, grad_w, want_h, chunk_size, buf,
                                                   rec_l)  # pass B
    if vals_l is None:
        sums = torch.zeros(gc.num_groups, dtype=acc, device=h.device).index_add_(0, ids_o, -lp_o * b_o)
        sums[largest] = -(lp_l * used_l).sum()
    else:  # the groups' sums of the loss values scale_n f_n
        v_o, _ = base_o.value(lp_o, 0, lp_o.shape[0])
        sums = torch.zeros(gc.num_groups, dtype=acc, device=h.device).index_add_(0, ids_o, v_o)
        sums[largest] = vals_l[0].sum()
    f = gc.resolve(sums, counts).to(acc)  # [G]
    f_l = f[largest]
    if grad_w is not None:
        grad_w.mul_(f_l)
    lp_o, gh_o, used_o, tw_o, vals_o = _fused_pass(h_o, t_o, weight, base_o.restrict(factor=f.index_select(0, ids_o)),
                                                   grad_w, want_h, chunk_size, buf, rec_o)  # pass C
    logp = torch.empty(m, dtype=acc, device=h.device)
    logp[idx_l], logp[idx_o] = lp_l, lp_o
    used = torch.empty(m, dtype=acc, device=h.device)
    used[idx_l], used[idx_o] = used_l * f_l, used_o
    tw = None
    if tw_l is not None:
        tw = torch.empty(m, dtype=acc, device=h.device)
        tw[idx_l], tw[idx_o] = tw_l, tw_o
    vals = None
    if vals_l is not None:
        vals = (torch.empty(m, dtype=acc, device=h.device), torch.empty(m, dtype=acc, device=h.device))
        vals[0][idx_l], vals[0][idx_o] = vals_l[0] * f_l, vals_o[0]
        vals[1][idx_l], vals[1][idx_o] = vals_l[1], vals_o[1]
    if rec is not None:
        rec.take(rec_l, idx_l)
        rec.take(rec_o, idx_o)
    grad_h = None
    if want_h:
        grad_h = torch.empty_like(h)
        grad_h.index_copy_(0, idx_l, gh_l.mul_(f_l.to(h.dtype)))
        grad_h.index_copy_(0, idx_o, gh_o)
    return logp, grad_h, used, tw, vals


class _FusedNLL(torch.autograd.Function):
    """``sum_n c_n * (-logp_n)`` whose gradients wrt (h, weight) are computed in the forward; backward scales them."""

    @staticmethod
    def forward(ctx, h, weight, t, coef, chunk_size, rec=None):
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # fp32 accumulator: the sum over N tokens of rank-1 updates loses bits in bf16
        grad_w = torch.zeros(weight.shape, dtype=_acc(weight.dtype), device=weight.device) if want_w else None
        if coef.grouped:
            logp, grad_h, used, tw, vals = _grouped_forward(h, t, weight, coef, grad_w, want_h, chunk_size, rec)
        else:
            logp, grad_h, used, tw, vals = _fused_pass(h, t, weight, coef, grad_w, want_h, chunk_size, rec=rec)
        if rec is not None:
            rec.used, rec.token = used, tw  # the coefficients applied, the token weighting in them (logged)
            rec.value = None if vals is None else vals[1]
        # a valued coefficient's loss is its values sum_n scale_n f_n (the gradient above stays c_n's)
        loss = -(used * logp).sum() if vals is None else vals[0].sum()
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

# ----------------------------------------------------------------------------------------------------------
# 4. per-chunk losses over soft targets (activation-checkpointed chunks)
# ----------------------------------------------------------------------------------------------------------


def chunked_loss_rows(h, weight, y, fn, *, extra=None, chunk_size: int = 512, stats: dict | None = None,
                      row_weight: torch.Tensor | None = None):
    """:func:`~sftgo.token_head.heads.chunked_loss` on supervised rows only, without input checks.

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
