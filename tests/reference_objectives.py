"""Slow, obvious references of every objective over one optimizer step (Python loops over tokens and groups).

The inputs are what the formulas talk about: the step's supervised tokens, each with its log p (differentiable, from
the model's full logits), its full logits row (Target-SFT), the example it belongs to, its importance and its
reference log p. Written from the papers' formulas, independently of ``sftgo.objectives`` (nothing imported from it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Tok:
    logp: torch.Tensor  # 0-dim, differentiable
    logits: torch.Tensor  # [V], differentiable
    target: int
    example: tuple  # (micro-batch, row): distinct examples never share a segment
    importance: float
    ref_logp: float
    ref_logits: torch.Tensor | None = None  # [V], a frozen reference model's logits at the token's position (ASFT)
    weight: float = 1.0  # the data weight w_n (1 without data weights)
    ref_lower_mass: float = 0.0  # the reference's probability of the tokens less likely than the target (PriFT mass)


def k_half_up(n: int, eta: float) -> int:
    from fractions import Fraction

    return math.floor((Fraction(100) - Fraction(str(eta))) * n / 100 + Fraction(1, 2))


def top_k(values: list[float], k: int) -> set[int]:
    """Indices of the k largest values; ties -> earlier index; NaN lowest."""
    key = lambda i: (1, 0.0, i) if math.isnan(values[i]) else (0, -values[i], i)  # noqa: E731
    return set(sorted(range(len(values)), key=key)[:k])


def quantile_ids(values: list[float], G: int) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: (0.0 if math.isnan(values[i]) else values[i], i))
    out = [0] * len(values)
    for r, i in enumerate(order):
        out[i] = r * G // len(values)
    return out


def groups_of(toks: list[Tok], values: list[float], *, eta: float, num_groups: int, batch_scope: bool,
              quantiles: bool, threshold: float | None = None) -> list[int]:
    """Group id per token: 1 = important (top (100 - eta)% per example, or over the step, or at or above the dataset's
    ``threshold`` when given), or quantile ids."""
    if threshold is not None:
        return [1 if v >= threshold else 0 for v in values]
    segs: dict = {}
    for i, t in enumerate(toks):
        segs.setdefault(0 if batch_scope else t.example, []).append(i)
    ids = [0] * len(toks)
    for members in segs.values():
        vals = [values[i] for i in members]
        if quantiles:
            for i, g in zip(members, quantile_ids(vals, num_groups)):
                ids[i] = g
        else:
            for j in top_k(vals, k_half_up(len(vals), eta)):
                ids[members[j]] = 1
    return ids


def infosft_weight(p: float, P: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return p * max(0.0, 1.0 - math.log(p / (1 - p)) / math.log(P / (1 - P)))


def eaft_weight(logits: list[float], k: int, alpha: float, normalize: bool) -> float:
    """EAFT (arXiv 2601.02151): the entropy of the softmax over the k largest logits, divided by log k when
    normalized, to the power alpha."""
    top = sorted(logits, reverse=True)[:k]
    m = top[0]
    ex = [math.exp(v - m) for v in top]
    z = sum(ex)
    H = -sum(e / z * math.log(e / z) for e in ex if e > 0)
    if normalize:
        H = H / math.log(len(top))
    return max(H, 0.0) ** alpha


def in_power_window(p: float, a) -> float:
    """1 inside --power_window (top: p >= q, bottom: p <= q; Beyond Log Likelihood's OnlyTop* / OnlyBottom*), else 0."""
    return {"none": 1.0, "top": float(p >= a.power_q), "bottom": float(p <= a.power_q)}[a.power_window]


def power_loss(t: Tok, a) -> torch.Tensor:
    """The power family's token loss (Beyond Log Likelihood, arXiv 2510.00526), differentiable:
    (1 - p^alpha) / alpha (alpha = 0: -log p) inside the window, 0 outside."""
    f = -t.logp if a.power_alpha == 0 else (1 - torch.exp(a.power_alpha * t.logp)) / a.power_alpha
    return f * in_power_window(math.exp(t.logp.item()), a)


def target_sft_token(t: Tok, gamma, residual: str, topk: int) -> torch.Tensor:
    logq = torch.log_softmax(t.logits.double(), dim=-1)
    probs = logq.exp().tolist()
    V = len(probs)
    y = t.target
    g = probs[y] if gamma == "p" else float(gamma)
    if residual == "uniform":
        pi = [1.0 / V] * V
    elif residual == "model":
        pi = probs
    else:  # topk among the other classes, renormalized
        others = sorted((k for k in range(V) if k != y), key=lambda k: -probs[k])[:topk]
        s = sum(probs[k] for k in others)
        pi = [probs[k] / s if k in others else 0.0 for k in range(V)]
    Q = torch.tensor([g * (k == y) + (1 - g) * pi[k] for k in range(V)], dtype=torch.float64)
    return -(Q * logq).sum()


def asft_token(t: Tok, alpha: float, kl: str) -> torch.Tensor:
    """ASFT (arXiv 2509.23753): DFT's -sg(p_y) log p_y plus alpha times the KL between the model's and the reference's
    next-token distributions over the whole vocabulary; forward = KL(reference || model), reverse = KL(model ||
    reference)."""
    logp = torch.log_softmax(t.logits.double(), dim=-1)
    logr = torch.log_softmax(t.ref_logits.detach().double(), dim=-1)
    p, r = logp.exp(), logr.exp()
    if kl == "forward":
        div = sum(r[v] * (logr[v] - logp[v]) for v in range(len(r)))
    else:
        div = sum(p[v] * (logp[v] - logr[v]) for v in range(len(p)))
    y = t.target
    return -math.exp(logp[y].item()) * logp[y] + alpha * div


def step_loss(objective: str, toks: list[Tok], a, *, lam: float, state: dict) -> tuple[torch.Tensor, dict]:
    """(the step's loss, the state after the step) for one optimizer step on one process. ``a``: the run's settings
    (a namespace with sftgo train's names); ``state``: ``dro_q`` (list) / ``lagged_means`` (list) from the step before."""
    K = len(toks)
    ce = [-t.logp for t in toks]
    if objective == "sft":
        return sum(ce) / K, state
    if objective == "dft":
        return sum(math.exp(t.logp.item()) * c for t, c in zip(toks, ce)) / K, state
    if objective == "infosft":
        return sum(infosft_weight(math.exp(t.logp.item()), a.infosft_p) * c for t, c in zip(toks, ce)) / K, state
    if objective == "eaft":
        return sum(eaft_weight(t.logits.tolist(), a.eaft_k, a.eaft_alpha, a.eaft_normalize) * c
                   for t, c in zip(toks, ce)) / K, state
    if objective == "power":  # the paper's mean f(p) over the step's tokens (sftgo divides by all of them)
        return sum(power_loss(t, a) for t in toks) / K, state
    if objective == "asft":  # with data weights: sum_n w_n loss_n / sum_n w_n
        return (sum(t.weight * asft_token(t, a.asft_alpha, a.asft_kl) for t in toks)
                / sum(t.weight for t in toks)), state
    if objective == "target-sft":
        gamma = "p" if a.target_gamma == "p" else float(a.target_gamma)
        # with data weights: sum_n w_n loss_n / sum_n w_n (the plain mean when every w_n = 1)
        return (sum(t.weight * target_sft_token(t, gamma, a.target_residual, a.target_topk) for t in toks)
                / sum(t.weight for t in toks)), state

    threshold = a.group_threshold if a.group_scope == "dataset" else None  # a fixed cut of a static score
    dynamic = (objective == "rho1" and threshold is None) or a.scorer == "reference"
    values = [t.ref_logp - t.logp.item() if dynamic else t.importance for t in toks]
    if objective == "rho1":
        if threshold is not None:  # every token at or above the threshold, however few
            keep = {i for i, v in enumerate(values) if v >= threshold}
            return (sum(ce[i] for i in keep) / len(keep) if keep else 0.0 * sum(ce)), state
        keep = top_k(values, max(k_half_up(K, a.percentile), 1))  # the whole step, at least one token
        return sum(ce[i] for i in keep) / len(keep), state
    G = a.num_groups
    quantiles = objective == "sft-go-dro" or G > 2
    ids = groups_of(toks, values, eta=a.percentile, num_groups=G, batch_scope=a.group_scope == "batch",
                    quantiles=quantiles, threshold=threshold)
    members = [[i for i in range(K) if ids[i] == g] for g in range(G)]
    group_mean = [sum(ce[i] for i in m) / len(m) if m else None for m in members]
    means_now = [None if m is None else m.item() for m in group_mean]
    base = (1 - lam) * sum(ce) / K
    if objective == "sft-go":
        lagged = state.get("lagged_means")
        pick_from = lagged if (a.group_stats == "lagged" and lagged is not None) else means_now
        candidates = [g for g in range(G) if members[g]]
        worst = max(candidates, key=lambda g: (pick_from[g], -g))  # ties -> lowest id
        new_state = dict(state)
        if a.group_stats == "lagged":
            new_state["lagged_means"] = [m if m is not None else 0.0 for m in means_now]
        return base + lam * group_mean[worst], new_state
    # sft-go-dro: q renormalized over the non-empty groups; then q_g <- q_g exp(eta * mean_g) over the active groups,
    # their total mass kept, empty groups unchanged
    q = state.get("dro_q") or [1.0 / G] * G
    active = [g for g in range(G) if members[g]]
    z = sum(q[g] for g in active)
    loss = base + lam * sum(q[g] / z * group_mean[g] for g in active)
    mass = sum(q[g] for g in active)
    raw = {g: q[g] * math.exp(a.dro_eta * means_now[g]) for g in active}
    tot = sum(raw.values())
    new_q = [raw[g] / tot * mass if g in raw else q[g] for g in range(G)]
    s = sum(new_q)
    return loss, {**state, "dro_q": [v / s for v in new_q]}


def user_weight(t: Tok, name: str) -> float:
    """``--token_weight module:function``: the function called on this one token, its inputs written out from the
    token's full logits row (entropy of the softmax, the k largest logits) and its reference log p."""
    import importlib

    module, _, fn_name = name.partition(":")
    fn = getattr(importlib.import_module(module), fn_name)
    row = t.logits.detach().double()
    logq = torch.log_softmax(row, dim=-1)
    given = {"ref_logp": torch.tensor([t.ref_logp], dtype=torch.float64),
             "entropy": -(logq.exp() * logq).sum()[None],
             "topk_logits": torch.sort(row, descending=True).values[: getattr(fn, "top_k", 1)][None]}
    return float(fn(t.logp.detach().double()[None], **{n: given[n] for n in getattr(fn, "needs", ())})[0])


def token_weight(t: Tok, a) -> float:
    """t_n of ``--token_weight`` (detached): none 1, dft p, infosft InfoSFT's weight, eaft the normalized top-k entropy,
    chord p (1 - p), prift_prob the reference's p, prift_mass 1 where the reference's p plus its lower mass reaches the
    threshold (PriFT, arXiv 2606.09396), power p^alpha in the window, module:function the user's function
    (:func:`user_weight`)."""
    if ":" in a.token_weight:
        return user_weight(t, a.token_weight)
    p = math.exp(t.logp.item())
    p_ref = math.exp(t.ref_logp)
    return {"none": lambda: 1.0, "dft": lambda: p, "infosft": lambda: infosft_weight(p, a.infosft_p),
            "eaft": lambda: eaft_weight(t.logits.tolist(), a.eaft_k, a.eaft_alpha, a.eaft_normalize),
            "chord": lambda: p * (1.0 - p), "prift_prob": lambda: p_ref,
            "prift_mass": lambda: float(t.ref_lower_mass + p_ref >= a.prift_threshold),
            "power": lambda: p ** a.power_alpha * in_power_window(p, a)}[a.token_weight]()


def formula_step_loss(aggregator: str, toks: list[Tok], a, *, lam: float, state: dict) -> tuple[torch.Tensor, dict]:
    """The one formula of the README ('Token weights compose'), token by token and group by group, for one optimizer
    step: w_n data weight, t_n token weight, W = sum w, S_g = sum_{g} w t CE, C_g = sum_{g} w,
    loss = (1 - lam) sum w t CE / W + lam sum_g a_g S_g / C_g; sft: lam = 0; rho1: a = [0, 1], lam = 1.
    The power family: a token's loss t CE is the paper's f(p) (same gradient, its own value), in the mean and in the
    group sums S_g = sum_{g} w f(p), so sft-go's worst group is the one with the largest mean f(p)."""
    W = sum(t.weight for t in toks)
    wt = [t.weight * token_weight(t, a) for t in toks]
    ce = [-t.logp for t in toks]
    if getattr(a, "token_weight", "none") == "power":
        terms = [t.weight * power_loss(t, a) for t in toks]
    else:
        terms = [b * c for b, c in zip(wt, ce)]
    mean_term = sum(terms) / W
    if aggregator == "sft":
        return mean_term, state
    threshold = a.group_threshold if a.group_scope == "dataset" else None
    dynamic = (aggregator == "rho1" and threshold is None) or a.scorer == "reference"
    values = [t.ref_logp - t.logp.item() if dynamic else t.importance for t in toks]
    if aggregator == "rho1":
        keep = ({i for i, v in enumerate(values) if v >= threshold} if threshold is not None
                else top_k(values, max(k_half_up(len(toks), a.percentile), 1)))
        ids = [1 if i in keep else 0 for i in range(len(toks))]
        G, lam = 2, 1.0
    else:
        G = a.num_groups
        ids = groups_of(toks, values, eta=a.percentile, num_groups=G, batch_scope=a.group_scope == "batch",
                        quantiles=aggregator == "sft-go-dro" or G > 2, threshold=threshold)
    S = [sum(terms[i] for i in range(len(toks)) if ids[i] == g) for g in range(G)]
    C = [sum(toks[i].weight for i in range(len(toks)) if ids[i] == g) for g in range(G)]
    means = [float(S[g].detach()) / C[g] if C[g] > 0 else None for g in range(G)]
    active = [g for g in range(G) if C[g] > 0]
    new_state = dict(state)
    if aggregator == "rho1":
        weights = {1: 1.0}
    elif aggregator == "sft-go":
        lagged = state.get("lagged_means")
        pick_from = lagged if (a.group_stats == "lagged" and lagged is not None) else means
        worst = max(active, key=lambda g: (pick_from[g], -g))  # the worst group by the weighted loss; ties -> lowest id
        weights = {worst: 1.0}
        if a.group_stats == "lagged":
            new_state["lagged_means"] = [m if m is not None else 0.0 for m in means]
    else:  # sft-go-dro
        q = state.get("dro_q") or [1.0 / G] * G
        z = sum(q[g] for g in active)
        weights = {g: q[g] / z for g in active}
        raw = {g: q[g] * math.exp(a.dro_eta * means[g]) for g in active}
        tot = sum(raw.values())
        new_q = [raw[g] / tot * z if g in raw else q[g] for g in range(G)]
        new_state["dro_q"] = [v / sum(new_q) for v in new_q]
    group_term = sum(weights.get(g, 0.0) * S[g] / C[g] for g in active)
    return (1 - lam) * mean_term + lam * group_term, new_state
