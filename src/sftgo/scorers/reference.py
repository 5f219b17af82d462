"""Rho-1 reference losses: per-token log-probabilities under a frozen reference causal LM.

Rho-1 (Lin et al., 2024) scores a token by its *excess loss* ``L_current - L_ref``: tokens the current model
finds much harder than a good reference model does are the ones still worth learning. The reference part does
not change during training, so it is computed once here (and cached by :mod:`sftgo.cache`); the trainer
regroups every step from the current loss, without another reference forward.

The ``reference`` scorer (``REFERENCE``) has no scoring function over supervised ids: it needs a model and the full
``input_ids``/``labels``; ``sftgo train`` and ``sftgo score`` compute it from these log-probs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from sftgo.data import IGNORE_INDEX
from sftgo.scorers.spec import Scorer

__all__ = ["reference_token_logp", "excess_loss", "influence", "REFERENCE", "INFLUENCE"]

logger = logging.getLogger(__name__)


def _final_hidden_fn(model):
    """``f(input_ids, attention_mask) -> [B, T, H]``: the hidden states the LM head reads, without the logits.

    A transformers causal LM keeps its decoder as ``base_model`` (``model.model`` for Llama, SmolLM2, Qwen, ...), whose
    ``last_hidden_state`` is what ``lm_head`` turns into logits; calling it directly keeps only one layer's activations
    alive, where ``output_hidden_states=True`` would keep every layer's. Returns None when the model has no separate
    decoder (the caller then takes the training head's forward)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model or not callable(base):
        return None

    def hidden(x, attn):
        return base(input_ids=x, attention_mask=attn, use_cache=False).last_hidden_state

    return hidden


def reference_token_logp(
    model,
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    device=None,
    pad_token_id: int = 0,
    chunk_size: int = 512,
    progress: bool = False,
    lower_mass: bool = False,
) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-token ``log p_ref`` of every supervised label (``lower_mass=True``: and its lower mass, a second list).

    ``out[i][j] = log p(labels[i][t_j] | input_ids[i][:t_j])`` where ``t_1 < t_2 < ...`` are the positions
    ``t >= 1`` with ``labels[i][t] != -100`` (the logits at position ``t - 1`` predict position ``t``: the usual
    causal shift). Position 0 has no context and is never scored, so ``labels[i][0]`` must be -100.

    input_ids, labels: N sequences of equal per-example length L_i. Returns N float32 arrays [n_i].
    Runs under ``torch.inference_mode`` on ``device`` (default: where the model is) in batches of ``batch_size``
    right-padded sequences (sorted by length to minimise padding). The logits never exist as ``[B, T, V]``: the
    decoder's final hidden states of the supervised positions go through the chunked per-token head that training
    uses (:class:`sftgo.token_head.LinearHead`; one ``[chunk_size, V]`` tile at a time). A model whose logits are not
    ``lm_head(last hidden state)`` (a bias, logit scaling or softcapping; checked on the first batch) falls back to its
    own logits, batch by batch. ``progress``: a progress bar over the batches.

    ``lower_mass=True`` returns ``(log p, lower mass)``: the lower mass of a label is ``sum_v p_ref(v) 1[p_ref(v) <
    p_ref(y)]``, the reference's probability of the tokens strictly less likely than the label (PriFT's ``mass``
    weighting, :mod:`sftgo.objectives.weightings.prift`), computed in the same chunks as ``log p``.
    """
    import torch

    from sftgo.token_head import LinearHead, LogitsHead
    from sftgo.tokens import TokenBatch

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
    below: list[np.ndarray | None] = [None] * len(input_ids)
    order = sorted(range(len(input_ids)), key=lambda i: -len(input_ids[i]))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    head, hidden = LinearHead(chunk_size), _final_hidden_fn(model)
    checked = False
    try:
        from tqdm.auto import tqdm

        with torch.inference_mode():
            for idx in tqdm(batches, desc="reference log-probs", unit="batch", disable=not progress):
                length = max(len(input_ids[i]) for i in idx)
                if length == 0:
                    for i in idx:
                        out[i] = below[i] = np.zeros(0, dtype=np.float32)
                    continue
                x = torch.full((len(idx), length), pad_token_id, dtype=torch.long)
                y = torch.full((len(idx), length), IGNORE_INDEX, dtype=torch.long)
                attn = torch.zeros((len(idx), length), dtype=torch.long)
                for r, i in enumerate(idx):
                    n = len(input_ids[i])
                    x[r, :n] = torch.as_tensor(input_ids[i], dtype=torch.long)
                    y[r, :n] = torch.as_tensor(labels[i], dtype=torch.long)
                    attn[r, :n] = 1
                inputs = {"input_ids": x.to(device), "attention_mask": attn.to(device), "labels": y.to(device)}
                tokens = TokenBatch.from_inputs(inputs, names=())  # supervised positions, row by row
                if not checked:
                    if hidden is not None and not _head_reads_last_hidden(model, head, hidden, inputs):
                        hidden = None
                    if hidden is None:  # LinearHead.features checks lm_head(hidden) itself and raises if not
                        try:
                            head.features(model, {k: v[:1] for k, v in inputs.items()})
                        except RuntimeError:
                            head = LogitsHead()
                    checked = True
                feats = (hidden(inputs["input_ids"], inputs["attention_mask"])[:, :-1] if hidden is not None
                         else head.features(model, inputs))  # [B, T-1, H] (or [B, T-1, V] for the logits fallback)
                if lower_mass:
                    logp, low = head.logp_lower_mass(model, tokens.select(feats), tokens.targets)
                else:
                    logp = head.logp(model, tokens.select(feats), tokens.targets)
                counts = torch.bincount(tokens.example, minlength=len(idx)).tolist()
                for i, part in zip(idx, torch.split(logp.float().cpu(), counts)):  # [N] fp32
                    out[i] = part.numpy().astype(np.float32)
                if lower_mass:
                    for i, part in zip(idx, torch.split(low.float().cpu(), counts)):
                        below[i] = part.numpy().astype(np.float32)
    finally:
        model.train(was_training)
    # One line per call and process: a multi-process run's lines add up to the dataset once (tests count them).
    logger.info("reference log-probs: %d examples, %d supervised tokens scored in this process", len(out),
                sum(len(o) for o in out))
    return (out, below) if lower_mass else out  # type: ignore[return-value]


def _head_reads_last_hidden(model, head, hidden, inputs) -> bool:
    """Whether the model's own logits are ``lm_head(decoder output)`` (no bias, scaling or softcapping): compared on the
    first row's last position, the one logit row the model computes with ``logits_to_keep=1``."""
    import torch

    one = {k: inputs[k][:1] for k in ("input_ids", "attention_mask")}
    try:
        theirs = model(**one, logits_to_keep=1, use_cache=False).logits[:, -1].float()
    except TypeError:  # a forward without logits_to_keep: the full logits of one row
        theirs = model(**one, use_cache=False).logits[:, -1].float()
    try:
        W = head.weight(model)
    except RuntimeError:  # a biased LM head
        return False
    mine = hidden(one["input_ids"], one["attention_mask"])[:, -1].float() @ W.float().T
    return bool(torch.allclose(mine, theirs, atol=1e-3, rtol=1e-3))


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


def influence(ref_logp, initial_logp):
    """Token Cleaning's influence score (Pang et al. 2025, arXiv 2502.01968): ``L_initial - L_ref = ref_logp -
    initial_logp``, the loss the model being trained has before training minus the reference's (their
    ``losses_pre - losses_cur``). Static: both terms come from models that do not change during training. Elementwise
    on arrays / tensors, or lists of them (one per example); higher = kept first."""
    return excess_loss(initial_logp, ref_logp)


REFERENCE = Scorer(
    "reference", needs_reference=True,
    error="scorer 'reference' needs a reference model: pass --ref_model_name_or_path to `sftgo train` or `sftgo score` "
          "(in Python: sftgo.pipeline.cached_token_logp, or sftgo.scorers.reference.reference_token_logp)",
)

INFLUENCE = Scorer(
    "influence", reference_gap=True,
    error="scorer 'influence' needs the model being trained and a reference model: pass --ref_model_name_or_path to "
          "`sftgo train` (in Python: sftgo.scorers.reference.influence of two sftgo.pipeline.cached_token_logp passes)",
)
