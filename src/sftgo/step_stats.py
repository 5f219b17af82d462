"""The metric sums of a logging window and the logged metrics they give (``loss_ce``, ``loss_important``,
``entropy``, ``loss/<channel>``, ``eval_*``, ...), apart from the trainer.

:class:`StepStats` holds additive sums over the window's supervised tokens: :meth:`StepStats.of` takes one
micro-batch's, :meth:`~StepStats.add` adds them (``+`` over micro-batches), :meth:`~StepStats.all_reduce` sums them over
processes in one packed all-reduce and :meth:`~StepStats.train_logs` / :meth:`~StepStats.eval_logs` turn the result
into the logged means. Every logged mean is a ratio of two sums, so it is exact over the optimizer step (or the whole
evaluation) whatever the split into micro-batches and processes. The token weighting's extremes (``min_weight``,
``max_weight``) are no sums: ``add`` keeps the min / max over micro-batches and ``all_reduce`` takes them over processes
in one MAX all-reduce of ``[max, -min]``, so they are exact the same way.

A field is None where the run does not log it (no ``loss_weight`` column: ``w_n``; no important split: the
``*imp*`` sums; ...). The fields are named by the keys the objectives read (``sums["imp_n"]``, ``"imp_n" in sums``
in ``extra_metrics``): a StepStats is also a read-only mapping of its present sums, ``row_<name>_sum`` included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

Sum = torch.Tensor | float | list  # a float32 tensor while accumulating; a float (a list for a [C] vector) once reduced


@dataclass(eq=False)
class StepStats(Mapping):
    """Sums over the supervised tokens n of a window (``w_n``: data weight, 1 without a ``loss_weight`` column;
    ``CE_n = -log p_n``; "imp": the tokens the objective logs as important)."""

    n: Sum | None = None  # supervised tokens
    ce_sum: Sum | None = None  # sum w_n CE_n
    p_sum: Sum | None = None  # sum p_n
    w_n: Sum | None = None  # sum w_n (with a loss_weight column)
    w_sum: Sum | None = None  # sum of the token weighting t_n the objective applied (mean_weight)
    acc_sum: Sum | None = None  # sum [argmax == target] (where the head records it)
    ent_sum: Sum | None = None  # sum of the full-vocabulary entropies (settled after the backward)
    imp_n: Sum | None = None  # important tokens
    unimp_n: Sum | None = None
    imp_w: Sum | None = None  # sum w_n over the important tokens (with a loss_weight column)
    unimp_w: Sum | None = None
    imp_sum: Sum | None = None  # sum w_n CE_n over the important tokens
    unimp_sum: Sum | None = None
    acc_imp_sum: Sum | None = None
    acc_unimp_sum: Sum | None = None
    ent_imp_sum: Sum | None = None
    ent_unimp_sum: Sum | None = None
    # per channel, [C] vectors (C: the channel vocabulary's size, the same on every process): sum w_n, sum w_n CE_n
    ch_w: Sum | None = None
    ch_ce: Sum | None = None
    ch_imp_w: Sum | None = None
    ch_imp_ce: Sum | None = None
    ch_unimp_w: Sum | None = None
    ch_unimp_ce: Sum | None = None
    # the smallest / largest t_n of the window (with w_sum; +inf / -inf over no token): kept apart from the sums
    w_min: Sum | None = None
    w_max: Sum | None = None
    rows: dict[str, Sum] = field(default_factory=dict)  # name -> sum of a chunk loss's per-token value (row_metrics)
    # (entropy [N], important [N] or None) per micro-batch, summed by settle() once the backward has filled them
    pending: list = field(default_factory=list, repr=False)

    # ------------------------------------------------------------------------------------------- add

    @classmethod
    @torch.no_grad()
    def of(cls, tokens, logp: torch.Tensor, stats: dict, important: torch.Tensor | None = None,
           weight: torch.Tensor | None = None, row_metrics=(), num_channels: int = 0) -> StepStats:
        """One micro-batch's sums. ``tokens``: its :class:`sftgo.tokens.TokenBatch`; ``logp`` ``[N]``; ``stats``: what
        the head recorded (``entropy``, ``correct``, the chunk loss's per-token ``row_metrics``); ``important``: the
        objective's important tokens; ``weight``: the token weighting logged as ``mean_weight``; ``num_channels``: the
        channel vocabulary's size (0: no per-channel sums)."""
        ce = -logp.float()
        # CE means are weighted by the data weights w (sum w CE / sum w; plain means without them); counts stay counts
        w = tokens.columns.get("loss_weight")
        w = None if w is None else w.to(ce.device).float()
        wce = ce if w is None else ce * w
        s = cls(ce_sum=wce.sum(), n=torch.tensor(float(ce.numel()), device=ce.device), p_sum=logp.float().exp().sum())
        if w is not None:
            s.w_n = w.sum()
        acc = stats["correct"].float() if "entropy" in stats else None
        if acc is not None:
            s.acc_sum = acc.sum()
        imp = None if important is None else important.bool()
        if imp is not None:
            s.imp_sum, s.unimp_sum = wce[imp].sum(), wce[~imp].sum()
            if acc is not None:
                s.acc_imp_sum, s.acc_unimp_sum = acc[imp].sum(), acc[~imp].sum()
            s.imp_n, s.unimp_n = imp.sum().float(), (~imp).sum().float()
            if w is not None:
                s.imp_w, s.unimp_w = w[imp].sum(), w[~imp].sum()
        if weight is not None:
            weight = weight.float()
            s.w_sum = weight.sum()
            s.w_min, s.w_max = _extremes(weight)
        s.rows = {name: stats[name].float().sum() for name in row_metrics if name in stats}
        ch = tokens.columns.get("channel")
        if num_channels and ch is not None:
            s._add_channels(ch.long(), ce, w, imp, num_channels)
        if "entropy" in stats:  # the chunked head fills it in its grad_h GEMM: summed once the backward ran
            s.pending.append((stats["entropy"], imp))
        return s

    def _add_channels(self, idx, ce, w, imp, C) -> None:
        """``ch_w`` = sum of w_n and ``ch_ce`` = sum of w_n CE_n over each channel's tokens; with an important split the
        same over the important (``ch_imp_*``) and unimportant (``ch_unimp_*``) tokens."""
        w = torch.ones_like(ce) if w is None else w

        def by_channel(x, sel=None):
            x, i = (x, idx) if sel is None else (x[sel], idx[sel])
            return torch.zeros(C, device=ce.device).index_add_(0, i.to(ce.device), x)

        self.ch_w, self.ch_ce = by_channel(w), by_channel(w * ce)
        if imp is not None:
            self.ch_imp_w, self.ch_imp_ce = by_channel(w, imp), by_channel(w * ce, imp)
            self.ch_unimp_w, self.ch_unimp_ce = by_channel(w, ~imp), by_channel(w * ce, ~imp)

    def add(self, other: StepStats) -> None:
        """Add ``other``'s sums (a micro-batch's) to these."""
        for k in _SUMS:
            v = getattr(other, k)
            if v is not None:
                mine = getattr(self, k)
                setattr(self, k, v if mine is None else mine + v)
        for k, v in other.rows.items():
            self.rows[k] = v if k not in self.rows else self.rows[k] + v
        if other.w_min is not None:
            self.w_min = other.w_min if self.w_min is None else torch.minimum(self.w_min, other.w_min)
            self.w_max = other.w_max if self.w_max is None else torch.maximum(self.w_max, other.w_max)
        self.pending.extend(other.pending)

    @torch.no_grad()
    def settle(self) -> None:
        """Add the pending entropies (overall and per group). Called after the backwards: the chunked head writes each
        token's entropy in its backward (see ``token_head._ChunkedLogp``)."""
        for ent, imp in self.pending:
            ent = ent.float()
            self.ent_sum = _plus(self.ent_sum, ent.sum())
            if imp is not None:
                self.ent_imp_sum = _plus(self.ent_imp_sum, ent[imp].sum())
                self.ent_unimp_sum = _plus(self.ent_unimp_sum, ent[~imp].sum())
        self.pending = []

    # ------------------------------------------------------------------------------------------- all-reduce

    def packed(self, device=None) -> torch.Tensor:
        """The settled sums as one float32 vector, in the order of their sorted keys (the same on every process)."""
        self.settle()
        d = dict(self)
        if not d:
            return torch.zeros(0, device=device)
        return torch.cat([torch.as_tensor(d[k], device=device).float().reshape(-1) for k in sorted(d)])

    def all_reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   device=None, reduce_max: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StepStats | None:
        """The sums summed over processes by ``reduce`` (a SUM all-reduce of one vector; None: one process), as Python
        floats (lists for the per-channel vectors), and the token weighting's min / max taken over processes by
        ``reduce_max`` (a MAX all-reduce; None: one process); None when nothing was added."""
        vec = self.packed(device)
        if vec.numel() == 0:
            return None
        if reduce is not None:
            vec = reduce(vec)
        vals = vec.tolist()
        out, at = StepStats(), 0
        for k in sorted(self):
            v = self[k]
            size = v.numel()
            out._set(k, vals[at] if v.dim() == 0 else vals[at:at + size])
            at += size
        ext = self.extremes(device)
        if ext is not None:  # every process logs a token weighting, or none does
            if reduce_max is not None:
                ext = reduce_max(ext)
            out.w_max, out.w_min = ext.tolist()
            out.w_min = -out.w_min
        return out

    def extremes(self, device=None) -> torch.Tensor | None:
        """``[max t_n, -min t_n]`` as one float32 vector (a MAX all-reduce of it gives both over processes); None
        without a token weighting."""
        if self.w_min is None:
            return None
        return torch.stack([torch.as_tensor(self.w_max), -torch.as_tensor(self.w_min)]).to(device).float()

    # ------------------------------------------------------------------------------------------- logged metrics

    def train_logs(self, channel_names=(), row_metrics=(), extra: Mapping | None = None) -> dict:
        """The training metrics of the reduced sums: ``loss_ce``, ``mean_p``, the important split, ``mean_weight`` with
        ``min_weight`` / ``max_weight``, the row means, entropy and accuracy, ``loss/<channel>``, ``extra`` (the
        objective's), ``tokens``."""
        n = max(self.n, 1.0)
        logs = {"loss_ce": self._ce_mean(self.ce_sum, self.w_n, 0.0), "mean_p": self.p_sum / n}
        if self.imp_n is not None:
            logs["loss_important"] = self._ce_mean(self.imp_sum, self.imp_w, count=self.imp_n)
            logs["loss_unimportant"] = self._ce_mean(self.unimp_sum, self.unimp_w, count=self.unimp_n)
            logs["frac_important"] = self.imp_n / n
        if self.w_sum is not None:
            logs["mean_weight"] = self.w_sum / n
            if self.w_min is not None:  # over no token: +inf / -inf, logged as NaN like an empty mean
                logs["min_weight"] = self.w_min if math.isfinite(self.w_min) else float("nan")
                logs["max_weight"] = self.w_max if math.isfinite(self.w_max) else float("nan")
        logs.update(self._means("", channel_names, row_metrics))
        logs.update(extra or {})
        logs["tokens"] = int(self.n)
        return logs

    def eval_logs(self, channel_names=(), row_metrics=()) -> dict:
        """The evaluation metrics of the reduced sums: ``eval_loss_ce``, the important split and its worst group, the
        row means, entropy and accuracy, ``eval_loss/<channel>``, ``eval_tokens``."""
        logs = {"eval_loss_ce": self._ce_mean(self.ce_sum, self.w_n, 0.0)}
        if self.imp_n is not None:
            imp = self._ce_mean(self.imp_sum, self.imp_w, count=self.imp_n)
            unimp = self._ce_mean(self.unimp_sum, self.unimp_w, count=self.unimp_n)
            logs["eval_loss_important"], logs["eval_loss_unimportant"] = imp, unimp
            logs["eval_loss_worst"] = max(x for x in (imp, unimp, -math.inf) if not math.isnan(x))
            logs["eval_tokens_important"] = int(self.imp_n)
        logs.update(self._means("eval_", channel_names, row_metrics))
        logs["eval_tokens"] = int(self.n)
        return logs

    def _ce_mean(self, total, weight, empty: float = float("nan"), count=None) -> float:
        """``sum w CE / sum w`` with data weights (``weight`` not None), ``sum CE / count`` (default: n) without;
        ``empty`` when nothing was counted."""
        denom = weight if weight is not None else (self.n if count is None else count)
        return total / denom if denom > 0 else empty

    def _means(self, prefix: str, channel_names, row_metrics) -> dict:
        """The row means (``row_metrics``), ``entropy`` and ``token_accuracy`` with their ``_important`` /
        ``_unimportant`` means, and the per-channel weighted CE means (``loss/<channel>``; a channel with no token in
        the window is left out), each name after ``prefix``."""
        n = max(self.n, 1.0)
        out = {f"{prefix}{name}": self.rows[name] / n for name in row_metrics if name in self.rows}
        if self.ent_sum is not None:
            out[f"{prefix}entropy"], out[f"{prefix}token_accuracy"] = self.ent_sum / n, self.acc_sum / n
            if self.imp_n is not None:
                for name, imp, unimp in (("entropy", self.ent_imp_sum, self.ent_unimp_sum),
                                         ("token_accuracy", self.acc_imp_sum, self.acc_unimp_sum)):
                    out[f"{prefix}{name}_important"] = _mean(imp, self.imp_n)
                    out[f"{prefix}{name}_unimportant"] = _mean(unimp, self.unimp_n)
        for name, ce, w in (("loss", self.ch_ce, self.ch_w), ("loss_important", self.ch_imp_ce, self.ch_imp_w),
                            ("loss_unimportant", self.ch_unimp_ce, self.ch_unimp_w)):
            if w is not None:
                out.update({f"{prefix}{name}/{ch}": c / wc for ch, c, wc in zip(channel_names, ce, w) if wc > 0})
        return out

    # ------------------------------------------------------------------------------------------- mapping view

    def __getitem__(self, key: str) -> Sum:
        if key in _SUMS:
            v = getattr(self, key)
        else:
            v = self.rows.get(key[4:-4]) if key.startswith("row_") and key.endswith("_sum") else None
        if v is None:
            raise KeyError(key)
        return v

    def __iter__(self) -> Iterator[str]:
        yield from (k for k in _SUMS if getattr(self, k) is not None)
        yield from (f"row_{name}_sum" for name in self.rows)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _set(self, key: str, value: Sum) -> None:
        if key in _SUMS:
            setattr(self, key, value)
        else:
            self.rows[key[4:-4]] = value


_SUMS = tuple(f for f in StepStats.__dataclass_fields__ if f not in ("rows", "pending", "w_min", "w_max"))


def _extremes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(min, max)`` of a micro-batch's ``[N]`` weights, as 0-dim tensors (no sync); +inf / -inf for N = 0."""
    if weight.numel() == 0:
        return weight.new_tensor(math.inf), weight.new_tensor(-math.inf)
    return torch.aminmax(weight)


def _plus(a, b):
    return b if a is None else a + b


def _mean(total: float, count: float) -> float:
    return total / count if count > 0 else float("nan")
