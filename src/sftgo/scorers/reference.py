"""Rho-1 reference losses: per-token log-probabilities under a frozen reference causal LM.

Rho-1 (Lin et al., 2024) scores a token by its *excess loss* ``L_current - L_ref``: tokens the current model
finds much harder than a good reference model does are the ones still worth learning. The reference part does
not change during training, so it is computed once here (and cached by :mod:`sftgo.cache`); the trainer
regroups every step from the current loss, without another reference forward.

This scorer is not in ``SCORERS``: it needs a model and the full ``input_ids``/``labels`` rather than only the
supervised ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sftgo.data import IGNORE_INDEX

__all__ = ["reference_token_logp", "excess_loss"]


def reference_token_logp(
    model,
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    device=None,
    pad_token_id: int = 0,
) -> list[np.ndarray]:
    """Per-token ``log p_ref`` of every supervised label.

    ``out[i][j] = log p(labels[i][t_j] | input_ids[i][:t_j])`` where ``t_1 < t_2 < ...`` are the positions
    ``t >= 1`` with ``labels[i][t] != -100`` (the logits at position ``t - 1`` predict position ``t``: the usual
    causal shift). Position 0 has no context and is never scored, so ``labels[i][0]`` must be -100.

    input_ids, labels: N sequences of equal per-example length L_i. Returns N float32 arrays [n_i].
    Runs under ``torch.inference_mode`` in batches of ``batch_size`` right-padded sequences (sorted by length to
    minimise padding); only the [M, V] logit rows of supervised positions are turned into log-softmax,
    never a second [B, T, V] tensor.
    """
    import torch

    if len(input_ids) != len(labels):
        raise ValueError(f"input_ids has {len(input_ids)} sequences but labels has {len(labels)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, (x, y) in enumerate(zip(input_ids, labels)):
        if len(x) != len(y):
            raise ValueError(f"example {i}: input_ids has {len(x)} tokens but labels has {len(y)}")
        if len(y) and y[0] != IGNORE_INDEX:
            raise ValueError(
                f"example {i}: labels[0] is supervised, but position 0 has no context to predict it from; "
                "mask it with -100"
            )
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[np.ndarray | None] = [None] * len(input_ids)
    order = sorted(range(len(input_ids)), key=lambda i: -len(input_ids[i]))
    try:
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                length = max(len(input_ids[i]) for i in idx)
                if length == 0:
                    for i in idx:
                        out[i] = np.zeros(0, dtype=np.float32)
                    continue
                x = torch.full((len(idx), length), pad_token_id, dtype=torch.long)
                y = torch.full((len(idx), length), IGNORE_INDEX, dtype=torch.long)
                attn = torch.zeros((len(idx), length), dtype=torch.long)
                for r, i in enumerate(idx):
                    n = len(input_ids[i])
                    x[r, :n] = torch.as_tensor(input_ids[i], dtype=torch.long)
                    y[r, :n] = torch.as_tensor(labels[i], dtype=torch.long)
                    attn[r, :n] = 1
                x, y, attn = x.to(device), y.to(device), attn.to(device)
                logits = model(input_ids=x, attention_mask=attn).logits  # [B, T, V]
                target = y[:, 1:]  # [B, T-1]: label predicted by logits[:, :-1]
                sel = target != IGNORE_INDEX
                rows = logits[:, :-1][sel].float()  # [M, V], fp32 for a stable log-softmax
                logp = rows.gather(-1, target[sel].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(rows, dim=-1)
                counts = sel.sum(dim=1).tolist()
                for i, part in zip(idx, torch.split(logp.cpu(), counts)):
                    out[i] = part.numpy().astype(np.float32)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def excess_loss(current_logp, ref_logp):
    """Rho-1 excess loss ``(-current_logp) - (-ref_logp) = ref_logp - current_logp``.

    Works elementwise on numpy arrays or torch tensors of the same shape, or on lists of them
    (one per example). Higher = the current model is further behind the reference on that token.
    """
    if isinstance(current_logp, (list, tuple)):
        if len(current_logp) != len(ref_logp):
            raise ValueError(f"{len(current_logp)} current sequences vs {len(ref_logp)} reference sequences")
        return [excess_loss(c, r) for c, r in zip(current_logp, ref_logp)]
    if tuple(current_logp.shape) != tuple(ref_logp.shape):
        raise ValueError(f"shape mismatch: current {tuple(current_logp.shape)} vs reference {tuple(ref_logp.shape)}")
    return (-current_logp) - (-ref_logp)
