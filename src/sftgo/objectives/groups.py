"""Group maths shared by the group objectives (sft-go, sft-go-dro, rho1) and their base :class:`Grouped`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import Objective

if TYPE_CHECKING:
    import torch


def group_means(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``S_g / C_g`` per group, 0 for an empty group (``C_g = 0``; a weighted count may be below 1, so no clamp)."""
    import torch

    return sums / torch.where(counts > 0, counts, torch.ones_like(counts))


def worst_onehot(means: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[G]`` one-hot of the non-empty group with the largest mean loss (ties -> lowest id; all empty -> zeros).
    Device-agnostic (no Python scalars, no host sync)."""
    import torch

    ranked = torch.where(counts > 0, means, torch.full_like(means, -math.inf))
    hot = (torch.arange(means.shape[0], device=means.device) == torch.argmax(ranked)).to(means.dtype)
    return hot * (counts > 0).any().to(means.dtype)


def group_stats(ids: torch.Tensor, ce: torch.Tensor, num_groups: int, coef: torch.Tensor | None = None,
                weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive step statistics ``(S [G], C [G])`` on ``ce``'s device: ``S_g = sum_{n in g} b_n CE_n`` with ``b_n =
    w_n t_n`` (``coef``; 1 when None) and ``C_g = sum_{n in g} w_n`` (``weight``, the data weights; the token count when
    None)."""
    import torch

    ids = ids.to(ce.device)
    terms = ce if coef is None else ce * coef.to(ce.device, ce.dtype)
    sums = torch.zeros(num_groups, dtype=ce.dtype, device=ce.device).index_add_(0, ids, terms)
    w = torch.ones_like(ce) if weight is None else weight.to(ce.device, ce.dtype)
    counts = torch.zeros(num_groups, dtype=ce.dtype, device=ce.device).index_add_(0, ids, w)
    return sums, counts


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

    @staticmethod
    def dataset_scope(args) -> bool:
        """``--group_scope dataset``: one threshold over the training set, fixed before training (static scores)."""
        return getattr(args, "group_scope", None) == "dataset"

    @classmethod
    def check_dataset_scope(cls, args, dynamic: bool) -> None:
        """Refuse ``--group_scope dataset`` where a fixed threshold cannot cut the groups (ValueError naming the fix)."""
        if not cls.dataset_scope(args):
            if getattr(args, "group_threshold", None) is not None:
                raise ValueError("group_threshold: it is the --group_scope dataset threshold; set group_scope dataset "
                                 "or leave group_threshold unset")
            return
        if dynamic:
            raise ValueError(f"group_scope: dataset fixes one threshold before training, but scorer={args.scorer} "
                             "ranks tokens by the current excess loss, which changes every step; use a static score "
                             "(--scorer influence: Token Cleaning's reference-minus-initial-model log p, or tfidf, ...) "
                             "or --group_scope batch")
        if not args.scorer:
            raise ValueError("group_scope: dataset ranks the importance of a --scorer; set one (e.g. --scorer influence)")

    def dataset_threshold(self) -> float:
        t = getattr(self.args, "group_threshold", None)
        if t is None:
            raise ValueError("group_threshold: --group_scope dataset needs the training set's threshold; `sftgo train` "
                             "sets it before training (sftgo.grouping.dataset_threshold over the importance column); "
                             "with SFTGoTrainer pass group_threshold")
        return float(t)

    def lam(self, lam: float) -> float:
        return lam

    def values(self, tokens, logp=None) -> torch.Tensor:
        """The per-token score the groups are cut from: importance, or excess loss ``ref_logp - logp``."""
        if self.dynamic():
            return tokens.columns["ref_logp"] - logp
        return tokens.columns["importance"]

    def segments(self, tokens) -> torch.Tensor:
        """Per-example segments, or one segment for the whole micro-batch (batch scope)."""
        import torch

        return torch.zeros_like(tokens.example) if self.batch_scope() else tokens.example

    def group_ids(self, values: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        from ..grouping import percentile_groups_flat, threshold_groups

        if self.dataset_scope(self.args):
            return threshold_groups(values, self.dataset_threshold()).long()
        return percentile_groups_flat(values, segments, self.args.percentile).long()  # 1 = important

    def group_weights(self, means: torch.Tensor | None, counts: torch.Tensor, state: dict) -> torch.Tensor:
        return worst_onehot(means, counts)

    def group_coef(self, lam: float, a: torch.Tensor, counts: torch.Tensor, num_tokens) -> torch.Tensor:
        """The group factors ``f_g = (1 - lam) + lam * a_g * W / C_g`` ([G]; ``c_n = w_n t_n f_g``)."""
        import torch

        return (1.0 - lam) + lam * a * num_tokens / torch.where(counts > 0, counts, torch.ones_like(counts))

    def coefficient(self, tokens, lam, state, logp=None):
        import torch

        lam = self.lam(lam)
        ids = self.group_ids(self.values(tokens, logp), self.segments(tokens))
        G = self.num_groups
        w = tokens.columns.get("loss_weight")
        W = float(len(tokens)) if w is None else w.sum()  # the micro-batch's weight
        if self.needs_means:  # the worst group needs the micro-batch's log p: decided inside the fused head
            from ..token_head import GroupCoef

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
        import torch

        lam = self.lam(lam)
        means = None
        if self.needs_means:
            means = state.get("lagged_means") if sums is None else group_means(sums, counts)
        a = self.group_weights(means, counts, state)
        c = self.group_coef(lam, a, counts, float(num_tokens))
        picked = torch.argmax(a) if self.needs_means else None
        return [c.index_select(0, g.to(c.device)) for g in ids], picked

    def next_state(self, state, sums, counts):
        import torch

        if not self.needs_means:
            return state, {}
        means = group_means(sums, counts)
        info = {"worst_group_step": torch.argmax(worst_onehot(means, counts))}
        if self.args.group_stats == "lagged":  # the next step's a_g comes from these means
            state = {**state, "lagged_means": means}
        return state, info
