"""What callers use: the checked entries (:func:`token_logp`, :func:`weighted_nll`, :func:`chunked_loss`, the
reference :func:`naive_token_logp`), the trainer's path :func:`weighted_nll_rows`, the optional Liger-Kernel backend,
and the heads a trainer holds (:class:`LinearHead`, :class:`LogitsHead`, :func:`make_head`). The chunk loops are in
:mod:`.kernels`; a ``coef`` given here is wrapped once into a :class:`~sftgo.token_head.coefficients.Coef`
(:func:`~sftgo.token_head.coefficients.as_coef`).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..data import IGNORE_INDEX, model_inputs  # the one definition of the label-ignore value; the forward's kwargs
from .coefficients import Coef, TokenCoef, as_coef
from .kernels import (_acc, _ChunkedLogp, _entropy_col, _FusedNLL, _flat, _logp_pass, _lower_mass, _Rec, _rows_into,
                      chunked_loss_rows)

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

def _supervised(hidden, targets):
    """``(h [N, H], t [N], idx, all_sup, h_sup, t_sup)``: the flattened rows, the supervised positions ``idx``, whether
    every position is supervised, and the supervised rows."""
    h, t = _flat(hidden, targets)
    sup = t != IGNORE_INDEX
    idx = sup.nonzero().squeeze(1)
    all_sup = idx.numel() == t.numel()
    # gathering the supervised rows copies [n_sup, H] (small next to [chunk, V]); skip it when all are supervised
    if all_sup:
        return h, t, idx, all_sup, h, t
    return h, t, idx, all_sup, h.index_select(0, idx), t.index_select(0, idx)


# ----------------------------------------------------------------------------------------------------------
# the obvious reference
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
    h, t, idx, all_sup, h_sup, t_sup = _supervised(hidden, targets)
    logp_sup = _ChunkedLogp.apply(h_sup, weight, t_sup, chunk_size)
    if all_sup:
        return logp_sup.reshape(shape)
    out = torch.zeros(t.shape, dtype=logp_sup.dtype, device=logp_sup.device)
    out = out.index_put((idx,), logp_sup)  # out-of-place so autograd routes grads to logp_sup
    return out.reshape(shape)


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
    coef = as_coef(coef)
    coef.check(targets)
    if backend == "liger":
        return _liger_fused(hidden, weight, targets, coef, chunk_size)
    shape = targets.shape
    h, t, idx, all_sup, h_sup, t_sup = _supervised(hidden, targets)
    loss, logp_sup = weighted_nll_rows(h_sup, weight, t_sup, coef.rows(idx), chunk_size)
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
    (its ``t``), and for a ``valued`` one ``token_value`` ``[M]`` (its per-token loss values ``f``); None (the default)
    records nothing and costs nothing."""
    coef = as_coef(coef)
    rec = None if stats is None else _Rec(h.shape[0], h.device, True)
    if h.shape[0] == 0:
        rec.into(stats) if rec is not None else None
        if stats is not None:
            stats["coef"] = torch.zeros(0, dtype=_acc(h.dtype), device=h.device)
            if coef.weighted:
                stats["token_weight"] = torch.zeros(0, dtype=_acc(h.dtype), device=h.device)
            if coef.valued:
                stats["token_value"] = torch.zeros(0, dtype=_acc(h.dtype), device=h.device)
        # still connected to the inputs (zero gradients)
        return (h.sum() * 0.0 + weight.sum() * 0.0).to(_acc(h.dtype)), torch.zeros(0, dtype=_acc(h.dtype), device=h.device)
    out = _FusedNLL.apply(h, weight, t, coef, chunk_size, rec)
    if rec is not None:
        rec.into(stats)
        stats["coef"] = rec.used
        if rec.token is not None:
            stats["token_weight"] = rec.token
        if rec.value is not None:
            stats["token_value"] = rec.value
    return out


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
    if not coef.is_unit():
        raise ValueError("backend='liger' supports only a unit coefficient (plain cross-entropy); use backend='torch'")
    shape = targets.shape
    h, t = _flat(hidden, targets)
    sup = t != IGNORE_INDEX
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")(weight, h, t)
    idx = sup.nonzero().squeeze(1)
    out = torch.zeros(t.shape, dtype=_acc(h.dtype), device=h.device)
    out[idx] = _logp_pass(h.detach().index_select(0, idx), t.index_select(0, idx), weight.detach(), chunk_size)
    return loss, out.reshape(shape)


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

# ----------------------------------------------------------------------------------------------------------
# the head a trainer uses: the only code that touches the LM head
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

    def logp_lower_mass(self, model, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward only: ``(log p [N], lower mass [N])``, the lower mass ``sum_v p_v 1[p_v < p_y]`` of each row (the
        probability of the tokens strictly less likely than the target) from the same chunks as ``log p``."""
        with torch.no_grad():
            rec = _Rec(x.shape[0], x.device, False, lower=True)
            return self._logp(model, x, t, rec, None), rec.lower

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
        coef = as_coef(coef)
        if self.fused and torch.is_grad_enabled():
            return weighted_nll_rows(x, self.weight(model), t, coef, self.chunk_size, stats=stats)
        logp, row = self._logp_row(model, x, t, coef, stats)
        return _weighted_from_logp(logp, coef, stats, row)

    def _logp_row(self, model, x, t, coef, stats):
        """``(log p, the coefficient's of_row values or None)``: a row-based token weighting (EAFT) is computed in the
        logp pass's own chunks."""
        if coef.of_row is None:
            return self.logp(model, x, t, stats), None
        rec = _Rec(x.shape[0], x.device, stats is not None, coef.of_row)
        logp = self._logp(model, x, t, rec, stats)
        return logp, rec.row.to(logp.dtype)

    def coefficients(self, model, x, t, coef: TokenCoef) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward only (no gradient): ``(log p [N], the coefficients c [N])`` of a :class:`TokenCoef` (its token
        weighting computed from these rows). The no-grad pre-pass of the step's statistics uses it."""
        coef = as_coef(coef)
        with torch.no_grad():
            logp, row = self._logp_row(model, x, t, coef, None)
            c, _ = coef.from_logp(logp, row)
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
                    col = _entropy_col(rec.row_fn)
                    if col is not None:
                        rec.row[:, col] = rec.entropy
                if rec.lower is not None:
                    e = (z - z.amax(dim=-1, keepdim=True)).exp_()
                    rec.lower = _lower_mass(e, t[:, None], e.sum(dim=-1)).float()
            rec.into(stats)
        return logq.gather(-1, t[:, None]).squeeze(-1)

    def chunk_loss(self, model, x, t, fn, extra=None, stats=None, row_weight=None):
        rows: dict[str, list] = {}
        loss = _rows_into(fn(x.float(), t, extra) if row_weight is None else fn(x.float(), t, extra, row_weight), rows)
        if stats is not None:
            stats.update({k: v[0] for k, v in rows.items()})
        return loss


def _weighted_from_logp(logp: torch.Tensor, coef: Coef, stats: dict | None = None,
                        row: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted NLL by autograd through a differentiable ``logp`` (chunked / naive heads); ``row``: a row-based
    token weighting's values. ``stats["coef"]`` gets the coefficients applied (and ``token_weight`` their ``t``). A
    ``valued`` coefficient (the power family): the loss's value is ``sum scale_n f_n``, its gradient ``c_n``'s
    (``token_value``: the ``f_n``)."""
    lp = logp.detach()
    if coef.valued:
        c, tw, v, f = coef.value_from_logp(lp, row)
        if stats is not None:
            stats["token_value"] = f.detach()
        loss = -(c * logp).sum()
        loss = loss - loss.detach() + v.sum()  # the value sum scale_n f_n, the gradient sum c_n grad(-log p_n)
    else:
        c, tw = coef.from_logp(lp, row)
        loss = -(c * logp).sum()
    if stats is not None:
        stats["coef"] = c.detach()
        if tw is not None:
            stats["token_weight"] = tw.detach()
    return loss, lp


def make_head(kind: str, chunk_size: int = 512) -> LinearHead:
    """``fused`` / ``auto`` (gradient in the forward), ``chunked`` (recompute in the backward), ``naive`` (full logits)."""
    if kind == "naive":
        return LogitsHead()
    return LinearHead(chunk_size, fused=kind in ("auto", "fused"))
