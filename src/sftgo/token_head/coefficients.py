"""The per-token coefficients ``c_n`` of the fused head: one protocol (:class:`Coef`), one class per kind.

The kernels (:mod:`.kernels`) and the heads (:mod:`.heads`) ask a coefficient only what :class:`Coef` declares, so no
code outside this module tests which kind it holds. A plain float, an ``[N]`` tensor or a function of the chunk's log p
given as ``coef`` is wrapped once, at the entry (:func:`as_coef`).

* :class:`TokenCoef` -- ``c_n = scale_n * t_n``: a scale (a float, or an ``[N]`` tensor known before the forward) times
  a token weighting ``t`` computed inside the chunk loop (from the token's own log p, or from its whole logits row:
  :class:`RowCoef`); a plain float or tensor is a TokenCoef without ``t``.
* :class:`GroupCoef` -- constant within each group, known once the group sums of the micro-batch are (SFT-GO's worst
  group), times a TokenCoef base.
* a callable ``f(logp_chunk, start, end) -> c_chunk`` (:class:`_FnCoef`).
"""

from __future__ import annotations

from typing import Callable

import torch


class Coef:
    """What the head asks of a per-token coefficient (treated as a constant, never differentiated).

    * ``of_row``: ``fn(z [c, V] fp32 logits of one chunk) -> [c]``, a token weighting read from the logits before the
      tile is overwritten (EAFT's top-k entropy), or None;
    * ``weighted``: whether a token weighting ``t`` is part of ``c`` (recorded as ``stats["token_weight"]``);
    * ``grouped``: whether ``c`` is known only once the groups' sums of the micro-batch are (the grouped forward);
    * :meth:`chunk`: ``(c, t)`` of rows ``s:e`` from their detached log p (``t`` None without a token weighting);
    * :meth:`from_logp`: ``(c, t)`` of all rows from their log p (the non-fused heads, the no-grad pre-pass);
    * :meth:`rows`: the coefficient of the flattened positions ``idx`` of one given over all positions;
    * :meth:`check`: a ValueError naming the problem when it does not fit ``targets``;
    * :meth:`is_unit`: whether it is the constant 1 (plain cross-entropy);
    * ``valued``: whether the loss's *value* is not ``sum c_n CE_n`` but ``sum scale_n f_n`` (a token weighting that
      declares its token's loss value ``f``, the power family), the gradient staying ``sum c_n grad CE_n``; then
      :meth:`value_from_logp` gives ``(c, t, scale_n f_n, f_n)`` of all rows.
    """

    of_row: Callable | None = None
    weighted = False
    grouped = False
    valued = False

    def chunk(self, lp: torch.Tensor, s: int, e: int, row: torch.Tensor | None = None):
        """``(c [c], t [c] or None)`` of rows ``s:e``: ``lp`` their log p, ``row`` their ``of_row`` values (or None)."""
        raise NotImplementedError

    def from_logp(self, lp: torch.Tensor, row: torch.Tensor | None = None):
        return self.chunk(lp, 0, lp.shape[0], row)

    def value_from_logp(self, lp: torch.Tensor, row: torch.Tensor | None = None):
        raise TypeError(f"{type(self).__name__} declares no loss value")

    def rows(self, idx: torch.Tensor) -> "Coef":
        return self

    def check(self, targets: torch.Tensor) -> None:
        pass

    def is_unit(self) -> bool:
        return False


class TokenCoef(Coef):
    """A per-token coefficient ``c_n = scale_n * t_n``, treated as a constant: ``scale`` (a float, or an ``[M]`` tensor
    known before the forward: data weights, the group factors of the optimizer step) times a token weighting ``t_n``
    computed inside the chunk loop, from the token's own detached log p (``of_logp(lp [c]) -> [c]``: DFT, InfoSFT) or
    from its whole logits row (``of_row(z [c, V] fp32 logits of one chunk) -> [c]``: EAFT's top-k entropy, read before
    the tile is overwritten), or ``t_n = 1`` when neither is given. Unlike the scale, ``t`` is no part of what a group's
    count adds up. ``t`` depends on the row alone (no position), so the coefficient of any subset of rows is
    :meth:`restrict`'s. No ``[N, V]`` tensor is kept.

    ``of_token(lp [c], row, columns) -> [c]``: ``t`` from the token's log p, its ``of_row`` values (``[c, F]``, or None
    without ``of_row``) and its rows of ``columns`` (``{name: [M] tensor}`` known before the forward, aligned with the
    rows and sliced like the scale): PriFT's static weights from the frozen reference's ``ref_logp`` /
    ``ref_lower_mass``, a ``module:function`` token weighting (:mod:`sftgo.objectives.weightings.user`).

    ``value_of_logp(lp [c]) -> f [c]`` (optional, with ``of_logp``): the token's loss value when it is not ``t_n CE_n``
    (the power family's ``f(p)``, whose gradient is ``t_n`` times CE's); the head's loss value is then
    ``sum scale_n f_n`` (:meth:`value`), its gradient unchanged."""

    _what = "TokenCoef scale must be a float or a tensor"  # the shape error's wording (see _PlainCoef)

    def __init__(self, scale=1.0, of_logp: Callable | None = None, of_row: Callable | None = None,
                 value_of_logp: Callable | None = None, of_token: Callable | None = None, columns: dict | None = None):
        self.scale, self.of_logp, self.of_row = scale, of_logp, of_row
        self.value_of_logp = value_of_logp
        self.of_token, self.columns = of_token, columns

    @property
    def valued(self) -> bool:
        return self.value_of_logp is not None

    @property
    def weighted(self) -> bool:
        """Whether a token weighting ``t`` is part of it (recorded as ``stats["token_weight"]``)."""
        return self.of_logp is not None or self.of_row is not None or self.of_token is not None

    def _with(self, scale, idx: torch.Tensor | None) -> "TokenCoef":
        """This coefficient with ``scale``, its ``columns`` (if any) restricted to rows ``idx`` (None: all)."""
        cols = self.columns
        if idx is not None:
            cols = cols and {k: v.reshape(-1).index_select(0, idx) for k, v in cols.items()}
        return TokenCoef(scale, self.of_logp, self.of_row, self.value_of_logp, self.of_token, cols)

    def restrict(self, idx: torch.Tensor | None = None, factor=None) -> "TokenCoef":
        """The coefficient of rows ``idx`` (None: all), its scale multiplied by ``factor`` (their ``[M]``) when given."""
        sc = self.scale.index_select(0, idx) if isinstance(self.scale, torch.Tensor) and idx is not None else self.scale
        if factor is not None:
            sc = factor * sc if isinstance(sc, torch.Tensor) or sc != 1.0 else factor
        return self._with(sc, idx)

    def scale_rows(self, m: int, device, dtype) -> torch.Tensor:
        """The scale as ``[m]`` (what a group's count adds up: data weights, 1 without)."""
        if isinstance(self.scale, torch.Tensor):
            return self.scale.to(device=device, dtype=dtype)
        return torch.full((m,), float(self.scale), dtype=dtype, device=device)

    def chunk(self, lp, s, e, row=None):
        if self.of_token is not None:
            t = self.of_token(lp, row, {k: v[s:e] for k, v in (self.columns or {}).items()}).to(lp.dtype)
        else:
            t = row if row is not None else (self.of_logp(lp).to(lp.dtype) if self.of_logp is not None else None)
        sc = self.scale
        if isinstance(sc, torch.Tensor):
            sc = sc[s:e].to(lp.dtype)
            return (sc if t is None else sc * t), t
        if t is None:
            return torch.full_like(lp, float(sc)), None
        return (t if float(sc) == 1.0 else float(sc) * t), t

    def value(self, lp, s, e):
        """``(scale_n f_n, f_n)`` of rows ``s:e`` from their detached log p (``valued`` coefficients only)."""
        f = self.value_of_logp(lp).to(lp.dtype)
        sc = self.scale
        if isinstance(sc, torch.Tensor):
            return sc[s:e].to(lp.dtype) * f, f
        return (f if float(sc) == 1.0 else float(sc) * f), f

    def value_from_logp(self, lp, row=None):
        c, t = self.chunk(lp, 0, lp.shape[0], row)
        return (c, t, *self.value(lp, 0, lp.shape[0]))

    def rows(self, idx):
        if isinstance(self.scale, torch.Tensor):
            return self._with(self.scale.reshape(-1).index_select(0, idx), idx)
        return self._with(self.scale, idx) if self.columns else self

    def check(self, targets):
        if isinstance(self.scale, torch.Tensor) and tuple(self.scale.shape) != tuple(targets.shape):
            raise ValueError(f"{self._what} of targets' shape {tuple(targets.shape)}")
        for k, v in (self.columns or {}).items():
            if tuple(v.shape) != tuple(targets.shape):
                raise ValueError(f"TokenCoef column {k!r} must have targets' shape {tuple(targets.shape)}")

    def is_unit(self) -> bool:
        return not self.weighted and not isinstance(self.scale, torch.Tensor) and float(self.scale) == 1.0


class RowCoef(TokenCoef):
    """``TokenCoef(scale, of_row=fn)``: a coefficient from each token's whole logits row (EAFT's top-k entropy)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], scale=1.0):
        super().__init__(scale, of_row=fn)
        self.fn = fn


class _PlainCoef(TokenCoef):
    """A float or a tensor given as ``coef``: a TokenCoef without token weighting."""

    _what = "coef must be a float, a callable or a tensor"


class _FnCoef(Coef):
    """A callable given as ``coef``: ``fn(logp_chunk [c], start, end) -> c_chunk [c]``, from the token's own ``p``."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def chunk(self, lp, s, e, row=None):
        return self.fn(lp, s, e).to(lp.dtype), None


class GroupCoef(Coef):
    """A per-token coefficient that is constant within each group and known only once the group means are.

    ids: ``[M]`` long group of each row (0..num_groups-1); ``base``: a :class:`TokenCoef` ``b_n = scale_n * t_n`` (None:
    1); ``resolve(sums [G], counts [G]) -> factor [G]`` where ``sums`` are the groups' sums of ``b_n * (-log p_n)`` and
    ``counts`` the groups' sums of ``scale_n`` (their sizes without data weights; fp32, detached); with a ``valued`` base
    (the power family) ``sums`` are the groups' sums of its loss values ``scale_n f_n``. The coefficient is
    ``c_n = factor[g_n] * b_n``. This is how a worst-group objective (SFT-GO) runs fused on one micro-batch without a
    second ``[V, H]`` gradient buffer (see :func:`sftgo.token_head.kernels._grouped_forward`).
    """

    grouped = True

    def __init__(self, ids: torch.Tensor, num_groups: int, resolve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 base: TokenCoef | None = None):
        self.ids, self.num_groups, self.resolve, self.base = ids, int(num_groups), resolve, base

    @property
    def of_row(self):
        return None if self.base is None else self.base.of_row

    @property
    def weighted(self) -> bool:
        return self.base is not None and self.base.weighted

    @property
    def valued(self) -> bool:
        return self.base is not None and self.base.valued

    def token_part(self) -> TokenCoef:
        """The base ``b`` (1 when None)."""
        return self.base if self.base is not None else TokenCoef()

    def chunk(self, lp, s, e, row=None):
        raise TypeError("a GroupCoef is known only once the group sums are: the grouped forward resolves it")

    def from_logp(self, lp, row=None):
        """``c_n = factor[g_n] * b_n`` with the factors resolved from these rows' group sums (by autograd through a
        differentiable log p: the chunked / naive heads)."""
        m = lp.shape[0]
        G = self.num_groups
        base = self.token_part()
        b, tw = base.chunk(lp, 0, m, row)
        sums = torch.zeros(G, dtype=lp.dtype, device=lp.device).index_add_(0, self.ids, -lp * b)
        counts = torch.zeros(G, dtype=lp.dtype, device=lp.device).index_add_(0, self.ids,
                                                                            base.scale_rows(m, lp.device, lp.dtype))
        return self.resolve(sums, counts).to(lp.dtype).index_select(0, self.ids) * b, tw

    def value_from_logp(self, lp, row=None):
        """``(c, t, factor[g_n] scale_n f_n, f_n)`` of a ``valued`` base: the group sums are of ``scale_n f_n``."""
        m = lp.shape[0]
        base = self.base
        b, tw = base.chunk(lp, 0, m, row)
        v, f = base.value(lp, 0, m)
        sums = torch.zeros(self.num_groups, dtype=lp.dtype, device=lp.device).index_add_(0, self.ids, v)
        counts = torch.zeros(self.num_groups, dtype=lp.dtype, device=lp.device).index_add_(
            0, self.ids, base.scale_rows(m, lp.device, lp.dtype))
        fr = self.resolve(sums, counts).to(lp.dtype).index_select(0, self.ids)
        return fr * b, tw, fr * v, f

    def rows(self, idx):
        base = None if self.base is None else self.base.rows(idx)
        return GroupCoef(self.ids.reshape(-1).index_select(0, idx), self.num_groups, self.resolve, base)

    def check(self, targets):
        if tuple(self.ids.shape) != tuple(targets.shape):
            raise ValueError(f"GroupCoef ids must have targets' shape {tuple(targets.shape)}")


def as_coef(coef) -> Coef:
    """``coef`` as a :class:`Coef`, once at each entry: a Coef as it is, a float or a tensor as a TokenCoef's scale, a
    callable ``f(logp_chunk, start, end)`` as itself; anything else is a ValueError."""
    if isinstance(coef, Coef):
        return coef
    if isinstance(coef, torch.Tensor):
        return _PlainCoef(coef)
    if callable(coef):
        return _FnCoef(coef)
    if isinstance(coef, bool) or not isinstance(coef, (int, float)):
        raise ValueError(f"coef must be a float, a tensor, a callable, a TokenCoef (RowCoef) or a GroupCoef; got "
                         f"{type(coef).__name__}")
    return _PlainCoef(coef)
