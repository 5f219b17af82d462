"""Rendering a conversation (the tokenizer's chat template, else an Alpaca-style one) and tokenizing it with
response-only labels: :func:`render`, :class:`TokenizedData`, :func:`tokenize_examples`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .readers import DEFAULT_CHANNEL, DataError, _is_weighted, _span_weights

logger = logging.getLogger(__package__)  # "sftgo.data", as before the package

IGNORE_INDEX = -100

ALPACA_TEMPLATE_USER = "### Instruction:\n{content}\n\n### Response:\n"
ALPACA_TEMPLATE_SYSTEM = "{content}\n\n"


def render(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]], bool]:
    """Render a conversation to text. Returns (text, supervised character spans, uses_chat_template).

    A supervised span covers one assistant turn's content plus the end-of-turn marker the template puts right after it
    (trailing whitespace excluded). Empty assistant turns get no span.
    """
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or not m["content"].strip():
                continue
            prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
            upto = full if i == len(messages) - 1 else tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            content = m["content"]
            start = upto.find(content, len(prefix))
            if start < 0:  # some templates strip the content
                content = content.strip()
                start = upto.find(content, len(prefix))
            if start < 0 or not full.startswith(upto[:start]):
                raise DataError(
                    "the tokenizer's chat template does not render assistant turns as a stable prefix of the conversation; "
                    "set a simpler template (tokenizer.chat_template) or use a model whose template does"
                )
            end = len(upto.rstrip())
            spans.append((start, end))
        return full, spans, True
    # Alpaca-style fallback: "### Instruction: ... ### Response: <answer><eos>"
    eos = tokenizer.eos_token or ""
    text, spans = "", []
    for m in messages:
        if m["role"] == "system":
            text += ALPACA_TEMPLATE_SYSTEM.format(content=m["content"])
        elif m["role"] == "user":
            text += ALPACA_TEMPLATE_USER.format(content=m["content"])
        else:
            start = len(text)
            text += m["content"] + eos
            if m["content"].strip():
                spans.append((start, len(text)))
            text += "\n\n"
    return text.rstrip("\n"), spans, False


@dataclass
class TokenizedData:
    """Tokenized examples. Per-token columns (``labels``, ``offsets``, and any the scorers add) stay aligned with
    ``input_ids``: they are all cut by the same truncation.

    ``columns["loss_weight"]`` (only when the examples set ``weight`` / ``loss_weight``): each supervised token's data
    weight (> 0; weight-0 tokens are not supervised). ``channels``: each example's channel name (None when the data
    has none); :func:`set_channel_column` turns them into the ``channel`` column of ids."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    texts: list[str]
    offsets: list[np.ndarray]  # [L, 2] character span of each token in its text
    num_dropped: int = 0  # examples whose response was entirely truncated away
    num_empty: int = 0  # examples skipped because their response was empty
    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)  # extra per-supervised-token float columns
    num_zero_weight: int = 0  # examples skipped because every assistant token had weight 0
    channels: list[str] | None = None  # the channel of each example (None: the data has no channels)

    def __len__(self) -> int:
        return len(self.input_ids)

    def supervised(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids [n], character offsets [n, 2]) of example i's supervised tokens, in order."""
        lab = np.asarray(self.labels[i])
        sel = lab != IGNORE_INDEX
        return lab[sel], self.offsets[i][sel]

    def supervised_ids(self) -> list[list[int]]:
        return [[t for t in lab if t != IGNORE_INDEX] for lab in self.labels]

    def fingerprint(self) -> str:
        """sha256 of the token ids and labels (the identity of the data for the score caches). Hashes flat int64
        arrays: ~15x faster than canonical JSON of nested lists on thousands of examples."""
        import hashlib

        h = hashlib.sha256()
        for rows in (self.input_ids, self.labels):
            lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
            flat = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
            h.update(lengths.tobytes())
            h.update(flat.tobytes())
        return h.hexdigest()

    def supervised_lengths(self) -> list[int]:
        """Number of supervised tokens of each example (the length of its score arrays)."""
        return [sum(1 for t in lab if t != IGNORE_INDEX) for lab in self.labels]

    def num_supervised(self) -> int:
        return sum(self.supervised_lengths())


def tokenize_examples(examples: list[dict], tokenizer, max_length: int = 512) -> TokenizedData:
    """Render, tokenize and label examples. Right-truncates to ``max_length``; drops (and counts) examples with no
    supervised token left. Weighted examples (``weight`` / ``loss_weights``, see :func:`load_examples`) also give the
    ``loss_weight`` column; weight-0 tokens get label -100."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("sftgo needs a fast tokenizer (character offsets locate the response tokens); load one with use_fast=True")
    if max_length < 2:
        raise DataError(f"max_length={max_length}: must be at least 2")
    out = TokenizedData([], [], [], [], num_empty=getattr(examples, "num_empty", 0),
                        num_zero_weight=getattr(examples, "num_zero_weight", 0))
    weighted = _is_weighted(examples)
    has_channels = any("channel" in ex for ex in examples)
    weights, channels = [], []
    rendered = [render(ex["messages"], tokenizer) for ex in examples]
    chat = bool(rendered) and rendered[0][2]
    # One batched call: the fast tokenizer encodes in parallel in Rust (~5x faster than one call per example).
    # Chat templates write BOS themselves when the model wants one; the Alpaca template relies on the tokenizer.
    enc = tokenizer([r[0] for r in rendered], add_special_tokens=not chat, return_offsets_mapping=True)
    for ex, (text, spans, _), ids, offs in zip(examples, rendered, enc["input_ids"], enc["offset_mapping"]):
        ids = np.asarray(ids, dtype=np.int64)
        offs = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
        sup = np.zeros(len(ids), dtype=bool)
        tok_w = None
        if spans:
            sp = np.asarray(spans, dtype=np.int64)  # [S, 2]
            s, e = offs[:, :1], offs[:, 1:]
            # A token is supervised when its (non-empty) character span overlaps a response span.
            hit = (e > s) & (s < sp[None, :, 1]) & (e > sp[None, :, 0])  # [L, S]
            sup = hit.any(axis=1)
            if weighted:
                span_w = np.asarray(_span_weights(ex), dtype=np.float64)  # one weight per span (= per assistant turn)
                if span_w.shape[0] != sp.shape[0]:
                    raise RuntimeError(f"{span_w.shape[0]} span weights for {sp.shape[0]} response spans")
                # A token belongs to one turn (template text separates turns); the max only matters if it did not.
                tok_w = np.where(hit, span_w[None, :], 0.0).max(axis=1)
                sup &= tok_w > 0  # weight 0: not supervised at all (absent from counts, groups, top-k and metrics)
        labels = np.where(sup, ids, IGNORE_INDEX)[:max_length]
        kept = labels != IGNORE_INDEX
        if not kept.any():
            out.num_dropped += 1
            continue
        out.input_ids.append(ids[:max_length].tolist())
        out.labels.append(labels.tolist())
        out.texts.append(text)
        out.offsets.append(offs[:max_length])
        if weighted:  # cut with the tokens, then one value per supervised token (TokenizedData.columns' layout)
            weights.append(tok_w[:max_length][kept].astype(np.float32))
        if has_channels:
            channels.append(ex.get("channel", DEFAULT_CHANNEL))
    if out.num_dropped:
        logger.warning("dropped %d example(s) whose response was entirely truncated at max_length=%d", out.num_dropped, max_length)
    if not out.input_ids:
        raise DataError(f"every example's response was truncated away at max_length={max_length}; raise --max_length")
    if weighted:
        out.columns["loss_weight"] = weights
    if has_channels:
        out.channels = channels
    return out

