"""LLMLingua-2 semantic importance: a token-classification encoder's "keep" probability per word.

LLMLingua-2 (Pan et al., 2024) trains a bidirectional encoder (XLM-RoBERTa-large or mBERT) with two
labels per subword, ``0 = drop`` and ``1 = keep``. SFT-GO uses the keep probability as the semantic
importance of a response token. The encoder and the LLM have different tokenizers, so we go through
words and character offsets:

1. For each example, the supervised LLM tokens are cut into contiguous runs (two neighbouring
   supervised tokens belong to the same run when only whitespace separates their character spans);
   the encoder reads only those runs of text, not the prompt.
2. A run's words are its whitespace-separated pieces (regex ``\\S+``), with character spans.
   Each word is tokenized on its own by the encoder tokenizer (like ``is_split_into_words``), and the
   word list is packed into chunks of at most ``max_window`` subwords, cut preferably at sentence
   ends (a word ending in ``.``, ``!``, ``?`` possibly followed by closing quotes/brackets, or a word
   followed by a newline). A sentence longer than the window is cut between words; a single word longer
   than the window keeps only its first ``max_window`` subwords.
3. ``p_keep(subword) = softmax(logits)[1]``; ``p(word) = mean`` over the word's subwords.
4. :func:`align_word_probs_to_tokens` gives every LLM token the mean probability of the words its
   character span overlaps. A token overlapping no word (whitespace-only, e.g. ``"\\n"``, or a
   zero-length span) takes the probability of the next word, or of the previous word at the end of
   the run. A run without any word (only whitespace) scores 0.
5. Tokens listed in ``special_token_ids`` (chat markup such as ``<|im_end|>``) are not text: they are left
   out of the runs (so the encoder never reads them) and take the next word's probability, or the last
   word's (an end-of-turn marker gets the probability of the response's final word).

Shapes: ``texts[i]`` str, ``offsets[i]`` int [n_i, 2] (char span of each supervised LLM token in
``texts[i]``) -> ``out[i]`` float32 [n_i] in [0, 1].
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "llmlingua2", "align_word_probs_to_tokens", "supervised_runs", "split_words", "load_encoder",
    "DEFAULT_MODEL", "SMALL_MODEL",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
SMALL_MODEL = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"

_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?][\"')\]\u201d\u2019]*$")


def align_word_probs_to_tokens(
    word_spans: np.ndarray, word_probs: np.ndarray, token_spans: np.ndarray
) -> np.ndarray:
    """Map word probabilities onto tokens of another tokenizer by character overlap.

    word_spans: int [W, 2] sorted, non-overlapping ``[start, end)`` character spans of words.
    word_probs: float [W].
    token_spans: int [n, 2] ``[start, end)`` character spans of the LLM tokens (same text coordinates).
    Returns float64 [n]: for token j, the mean of ``word_probs[w]`` over words w with
    ``max(ws, ts) < min(we, te)`` (strict character overlap; a zero-length token strictly inside a word
    counts as overlapping it). A token overlapping no word takes the first word starting at or after
    its end, or the last word if there is none after it. W = 0 gives zeros.

    Vectorized: two ``searchsorted`` calls and a prefix sum, no loop over tokens.
    """
    word_spans = np.asarray(word_spans, dtype=np.int64).reshape(-1, 2)
    word_probs = np.asarray(word_probs, dtype=np.float64).reshape(-1)
    token_spans = np.asarray(token_spans, dtype=np.int64).reshape(-1, 2)
    if len(word_spans) != len(word_probs):
        raise ValueError(f"word_spans has {len(word_spans)} rows but word_probs has {len(word_probs)}")
    n_words = len(word_spans)
    if n_words == 0:
        return np.zeros(len(token_spans), dtype=np.float64)
    ts, te = token_spans[:, 0], token_spans[:, 1]
    # lo: first word whose end is after the token start; hi: last word whose start is before the token end.
    lo = np.searchsorted(word_spans[:, 1], ts, side="right")
    hi = np.searchsorted(word_spans[:, 0], te, side="left") - 1
    overlaps = lo <= hi
    csum = np.concatenate([[0.0], np.cumsum(word_probs)])
    lo_c = np.minimum(lo, n_words - 1)
    hi_c = np.maximum(hi, lo_c)
    mean = (csum[hi_c + 1] - csum[lo_c]) / (hi_c - lo_c + 1)
    # No overlap: word `lo` is the next word (it ends after ts and, not overlapping, starts at/after te);
    # lo == W means no word follows, so take the last word.
    fallback = word_probs[lo_c]
    return np.where(overlaps, mean, fallback)


def supervised_runs(text: str, spans: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Cut a sequence of supervised token spans into contiguous runs of text.

    spans: int [n, 2] character spans in ``text`` (in token order). Two consecutive tokens are in one run
    when the text between them (``text[end_j:start_{j+1}]``) is empty or whitespace only.
    Returns ``[(token_lo, token_hi, char_start, char_end)]`` with tokens ``[token_lo, token_hi)``.
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    n = len(spans)
    if n == 0:
        return []
    runs = []
    lo = 0
    for j in range(1, n + 1):
        if j < n:
            gap_start, gap_end = int(spans[j - 1, 1]), int(spans[j, 0])
            if gap_end <= gap_start or text[gap_start:gap_end].isspace():
                continue
        seg = spans[lo:j]
        runs.append((lo, j, int(seg[:, 0].min()), int(seg[:, 1].max())))
        lo = j
    return runs


def split_words(text: str, start: int, end: int) -> tuple[list[str], np.ndarray, list[bool]]:
    """Whitespace words of ``text[start:end]``.

    Returns ``(words, spans int [W, 2] absolute in text, sentence_end [W])``; ``sentence_end[w]`` is True
    when the word ends a sentence (ends in . ! ? + closing quotes/brackets, or a newline follows it).
    """
    words, spans, ends = [], [], []
    segment = text[start:end]
    for m in _WORD.finditer(segment):
        w = m.group()
        words.append(w)
        spans.append((start + m.start(), start + m.end()))
        nxt = segment[m.end() : m.end() + 1]
        ends.append(bool(_SENTENCE_END.search(w)) or nxt == "\n" or nxt == "\r")
    return words, np.asarray(spans, dtype=np.int64).reshape(-1, 2), ends


def _chunk_words(n_sub: Sequence[int], sentence_end: Sequence[bool], window: int) -> list[tuple[int, int]]:
    """Greedy packing of words into chunks of <= ``window`` subwords, cutting at sentence ends.

    Returns ``[(w_lo, w_hi)]`` word ranges. A chunk ends at the last sentence end that fits; if no sentence
    end fits, at the last word that fits; a single word over the window is a chunk of its own.
    """
    chunks = []
    w, n = 0, len(n_sub)
    while w < n:
        total, last_fit, last_sent = 0, w, None
        j = w
        while j < n and total + n_sub[j] <= window:
            total += n_sub[j]
            j += 1
            last_fit = j
            if sentence_end[j - 1]:
                last_sent = j
        if last_fit == w:  # one word longer than the window: truncated later
            cut = w + 1
        elif last_fit == n or last_sent is None:
            cut = last_fit
        else:
            cut = last_sent
        chunks.append((w, cut))
        w = cut
    return chunks


def load_encoder(model, device=None):
    """``model``: a local folder / Hub id, or an already-loaded ``(model, tokenizer)`` pair.

    Returns ``(model on device in eval mode, tokenizer, device)``.
    """
    import torch

    if isinstance(model, (tuple, list)):
        if len(model) != 2:
            raise ValueError("llmlingua2 model must be a path/Hub id or a (model, tokenizer) pair")
        enc, tok = model
    elif isinstance(model, str):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        enc = AutoModelForTokenClassification.from_pretrained(model)
    else:
        raise ValueError(
            f"llmlingua2 model must be a path/Hub id or a (model, tokenizer) pair, got {type(model).__name__}"
        )
    if getattr(enc.config, "num_labels", 2) != 2:
        raise ValueError(
            f"llmlingua2 expects a 2-label token classifier (0 = drop, 1 = keep), got num_labels={enc.config.num_labels}"
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    enc = enc.to(device).eval()
    return enc, tok, device


def _window(enc, tok, max_window) -> int:
    n_special = 2  # [CLS] ... [SEP] / <s> ... </s>
    if max_window is not None:
        if max_window < 1:
            raise ValueError(f"max_window must be >= 1 subword, got {max_window}")
        return int(max_window)
    limit = getattr(enc.config, "max_position_embeddings", 512)
    tml = getattr(tok, "model_max_length", None)
    if tml is not None and tml < 1_000_000:
        limit = min(limit, int(tml))
    if getattr(enc.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit = min(limit, enc.config.max_position_embeddings - 2)  # RoBERTa offsets positions by pad_idx + 1
    return max(1, limit - n_special)


def llmlingua2(
    token_ids: Sequence[Sequence[int]],
    *,
    texts: Sequence[str],
    offsets: Sequence[np.ndarray],
    model=DEFAULT_MODEL,
    batch_size: int = 16,
    device=None,
    max_window: int | None = None,
    special_token_ids=None,
    progress: bool = True,
    **_,
) -> list[np.ndarray]:
    """Keep probability of each supervised LLM token (see the module docstring for the method).

    token_ids: list of N sequences (only their lengths are used, to check ``offsets``).
    texts: N strings; offsets: N int arrays [n_i, 2] (char spans of the supervised tokens in texts[i]).
    model: local folder, Hub id, or ``(model, tokenizer)`` pair of a 2-label token classifier.
    batch_size: chunks per encoder forward (chunks are sorted by length to minimise padding).
    max_window: subwords per chunk, excluding the 2 special tokens (default: the encoder's limit).
    special_token_ids: LLM token ids that are markup, not text (e.g. ``tokenizer.all_special_ids``: ``<|im_end|>``);
        they are kept out of the encoder's input and take the next word's probability (the last word's at the end).
    Returns N float32 arrays [n_i] in [0, 1].
    """
    import torch

    if len(texts) != len(token_ids) or len(offsets) != len(token_ids):
        raise ValueError(
            f"llmlingua2 needs one text and one offsets array per example: got {len(token_ids)} token sequences, "
            f"{len(texts)} texts, {len(offsets)} offsets"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    enc, tok, device = load_encoder(model, device)
    window = _window(enc, tok, max_window)

    # 1) runs and words for every example; words are tokenized once per distinct string.
    special = np.asarray(sorted(set(int(t) for t in special_token_ids or ())), dtype=np.int64)
    per_example = []  # (token spans, indices of ordinary tokens, [(tok_lo, tok_hi, word_lo, word_hi)], word spans)
    all_words: list[str] = []
    all_ends: list[bool] = []
    for i, (ids, text, spans) in enumerate(zip(token_ids, texts, offsets)):
        spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        if len(spans) != len(ids):
            raise ValueError(f"example {i}: {len(ids)} supervised tokens but {len(spans)} offset rows")
        # Special tokens (e.g. <|im_end|>) are not text: keep them out of the encoder's input.
        ordinary = np.flatnonzero(~np.isin(np.asarray(ids, dtype=np.int64), special)) if special.size else np.arange(len(ids))
        runs, word_spans = [], []
        for t_lo, t_hi, c_lo, c_hi in supervised_runs(text, spans[ordinary]):
            words, wspans, ends = split_words(text, c_lo, c_hi)
            w0 = len(all_words)
            all_words.extend(words)
            all_ends.extend(ends)
            word_spans.append(wspans)
            runs.append((t_lo, t_hi, w0, w0 + len(words)))
        wsp = np.concatenate(word_spans) if word_spans else np.zeros((0, 2), np.int64)
        per_example.append((spans, ordinary, runs, wsp, len(all_words) - len(wsp)))

    uniq = sorted(set(all_words))
    index = {w: k for k, w in enumerate(uniq)}
    sub_ids = tok(uniq, add_special_tokens=False)["input_ids"] if uniq else []
    word_sub = [sub_ids[index[w]] for w in all_words]

    # 2) chunks (word ranges) per run, never crossing runs.
    chunks: list[tuple[int, int]] = []
    for _spans, _ordinary, runs, _ws, _w0 in per_example:
        for _t_lo, _t_hi, w_lo, w_hi in runs:
            n_sub = [len(s) for s in word_sub[w_lo:w_hi]]
            for a, b in _chunk_words(n_sub, all_ends[w_lo:w_hi], window):
                chunks.append((w_lo + a, w_lo + b))

    # 3) encoder forward over chunks, longest first; accumulate mean keep prob per word.
    prob_sum = np.zeros(len(all_words), dtype=np.float64)
    prob_cnt = np.zeros(len(all_words), dtype=np.int64)
    cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    built = []
    for a, b in chunks:
        ids, owner = [], []
        for w in range(a, b):
            s = word_sub[w][: window - len(ids)] if b - a == 1 else word_sub[w]
            ids.extend(s)
            owner.extend([w] * len(s))
        ids = ([cls] if cls is not None else []) + ids + ([sep] if sep is not None else [])
        owner = ([-1] if cls is not None else []) + owner + ([-1] if sep is not None else [])
        built.append((ids, owner))
    log.info("llmlingua2: %d examples, %d words (%d distinct), %d encoder chunks of <= %d subwords",
             len(per_example), len(all_words), len(uniq), len(built), window)
    order = sorted(range(len(built)), key=lambda k: -len(built[k][0]))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    try:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="llmlingua2", unit="batch", disable=not progress or not batches)
    except ImportError:  # tqdm is a dependency, but scoring must not fail without a progress bar
        it = batches
    with torch.inference_mode():
        for bidx in it:
            length = max(len(built[k][0]) for k in bidx)
            input_ids = torch.full((len(bidx), length), pad, dtype=torch.long)
            attn = torch.zeros((len(bidx), length), dtype=torch.long)
            owners = np.full((len(bidx), length), -1, dtype=np.int64)
            for r, k in enumerate(bidx):
                ids, owner = built[k]
                input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attn[r, : len(ids)] = 1
                owners[r, : len(ids)] = owner
            logits = enc(input_ids=input_ids.to(device), attention_mask=attn.to(device)).logits
            # softmax over 2 labels in fp32 (the encoder may run in half precision on GPU)
            keep = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
            m = owners >= 0
            np.add.at(prob_sum, owners[m], keep[m])
            np.add.at(prob_cnt, owners[m], 1)
    word_prob = np.divide(prob_sum, np.maximum(prob_cnt, 1))
    if (prob_cnt == 0).any():
        # words the encoder tokenizer maps to nothing (e.g. control characters): neutral 0.5
        word_prob[prob_cnt == 0] = 0.5

    # 4) words -> LLM tokens, per run (a run's words are all_words[w_lo:w_hi], spans in the example's text).
    out = []
    for spans, ordinary, runs, wspans, base in per_example:
        res = np.zeros(len(spans), dtype=np.float32)
        sub = spans[ordinary]
        vals = np.zeros(len(ordinary), dtype=np.float64)
        for t_lo, t_hi, w_lo, w_hi in runs:
            vals[t_lo:t_hi] = align_word_probs_to_tokens(
                wspans[w_lo - base : w_hi - base], word_prob[w_lo:w_hi], sub[t_lo:t_hi]
            )
        res[ordinary] = vals
        if len(ordinary) < len(spans):
            # special tokens overlap no word: they take the next word's probability, or the last word's
            # (an end-of-turn marker gets the probability of the response's final word)
            others = np.setdiff1d(np.arange(len(spans)), ordinary)
            res[others] = align_word_probs_to_tokens(wspans, word_prob[base : base + len(wspans)], spans[others])
        out.append(res)
    return out
