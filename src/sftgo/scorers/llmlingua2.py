"""LLMLingua-2 semantic importance: a token-classification encoder's "keep" probability per word.

LLMLingua-2 (Pan et al., 2024) trains a bidirectional encoder (XLM-RoBERTa-large or mBERT) with two
labels per subword, ``0 = drop`` and ``1 = keep``. SFT-GO uses the keep probability as the semantic
importance of a response token. Words are formed the way the official ``llmlingua`` package (0.2.2,
``PromptCompressor.compress_prompt`` with ``use_llmlingua2=True``) forms them, then mapped to the LLM's
tokens by character offsets:

1. For each example, the supervised LLM tokens are cut into contiguous runs (two neighbouring
   supervised tokens belong to the same run when only whitespace separates their character spans);
   the encoder reads only those runs of text, not the prompt. A run is tokenized by the encoder's (fast)
   tokenizer with character offsets.
2. **Chunks** (as the official code): at most ``window`` encoder tokens (510 for the official checkpoints,
   i.e. 512 minus ``[CLS]``/``[SEP]``). While more than ``window`` tokens remain, the chunk ends at the last
   ``.`` or ``\\n`` token among positions ``start+1 .. start+window``, or at position ``start+window``
   (so a chunk may hold ``window + 1`` tokens; the encoder input ``[CLS] chunk [SEP]`` is then cut to
   ``window + 2`` positions, dropping ``[SEP]``, exactly as the official dataset class truncates it).
   The encoder input wraps each chunk in the vocabulary ids of the strings ``[CLS]`` and ``[SEP]``, as the
   official dataset class does for both checkpoints. For XLM-RoBERTa these strings are not in the
   vocabulary, so the official code (and sftgo, for ``model_type == "xlm-roberta"``) wraps chunks in
   ``<unk>``; other encoders get their own CLS/BOS and SEP/EOS.
3. ``p_keep(token) = softmax(logits)[1]``.
4. **Words from encoder tokens**, per chunk. Tokens whose string is one of the tokenizer's named special
   tokens (``[UNK]``, ``<unk>``, ...) are skipped. A token starts a new word
   - WordPiece tokenizers (mBERT): unless it starts with the continuation prefix (``##``); BERT's
     pre-tokenizer already makes every punctuation character its own token, so ``tax,`` is two words;
   - SentencePiece tokenizers (XLM-R, a ``Metaspace`` pre-tokenizer or a ``Unigram`` model): when it starts
     with ``▁`` or is one of the characters of ``string.punctuation`` (the official test is a substring test
     on that string);
   - any other encoder (byte-level BPE, ...): when whitespace separates it from the previous token (a gap in
     the character offsets), or it or the previous token consists only of punctuation characters.
   The first token of a chunk always starts a word. ``p(word) = mean`` of ``p_keep`` over the word's tokens;
   a word's character span runs from its first token's start to its last token's end. A lone ``▁`` token covers no
   characters, so a word made of it alone (before a punctuation token) is empty and is not mapped to any LLM token
   (the official code keeps it as the empty word ``""``).
5. :func:`align_word_probs_to_tokens` gives every LLM token the mean probability of the words its
   character span overlaps. A token overlapping no word (whitespace-only, e.g. ``"\\n"``, or a
   zero-length span, or text the encoder only knows as ``[UNK]``) takes the probability of the next word,
   or of the previous word at the end of the run. A run without any word scores 0.
6. Tokens listed in ``special_token_ids`` (chat markup such as ``<|im_end|>``) are not text: they are left
   out of the runs (so the encoder never reads them) and take the next word's probability, or the last
   word's (an end-of-turn marker gets the probability of the response's final word).

Known difference from the official code: it detokenizes each chunk and tokenizes that string again; when a
chunk has to be cut inside a word (more than ``window`` tokens without a ``.``), the next chunk's text then
starts with a literal ``##``. sftgo keeps the original tokens there.

Shapes: ``texts[i]`` str, ``offsets[i]`` int [n_i, 2] (char span of each supervised LLM token in
``texts[i]``) -> ``out[i]`` float32 [n_i] in [0, 1].
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence

import numpy as np

from sftgo.scorers.spec import Scorer, ScorerSetting

__all__ = [
    "llmlingua2", "align_word_probs_to_tokens", "supervised_runs", "chunk_tokens", "encoder_words", "word_rule",
    "load_encoder", "DEFAULT_MODEL", "SMALL_MODEL", "LLMLINGUA2",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
SMALL_MODEL = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"

CHUNK_END_TOKENS = frozenset({".", "\n"})
_PUNCT = frozenset(string.punctuation)
MAX_SEQ_LEN = 512  # the official code's encoder input length, [CLS] and [SEP] included


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

        from ..hub import offline_kwargs, require_hub

        require_hub(model, "--llmlingua2_model", what="the LLMLingua-2 encoder")  # offline: one line now, not a minute of retries and a traceback
        tok = AutoTokenizer.from_pretrained(model, **offline_kwargs(model))
        enc = AutoModelForTokenClassification.from_pretrained(model, **offline_kwargs(model))
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
    return max(1, min(limit, MAX_SEQ_LEN) - n_special)



def word_rule(tok) -> tuple[str, str]:
    """How ``tok``'s tokens form words: ``("wordpiece", prefix)``, ``("metaspace", "▁")`` or ``("offsets", "")``.

    See step 4 of the module docstring. Needs a fast (Rust-backed) tokenizer.
    """
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"llmlingua2 needs a fast tokenizer with character offsets; {type(tok).__name__} is not one "
            "(load the encoder's tokenizer with AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    model = backend.model
    if type(model).__name__ == "WordPiece":
        return "wordpiece", model.continuing_subword_prefix or "##"
    if type(model).__name__ == "Unigram" or "Metaspace" in repr(backend.pre_tokenizer):
        return "metaspace", "\u2581"
    return "offsets", ""


def chunk_tokens(tokens: Sequence[str], window: int, end_tokens=CHUNK_END_TOKENS) -> list[tuple[int, int]]:
    """Token ranges ``[(a, b)]`` of the encoder chunks, cut as the official code cuts them (module docstring, 2).

    While the tokens left do not fit (``start + window > n - 1`` is false), the chunk ends at the last token in
    ``end_tokens`` among positions ``start + window`` down to ``start + 1``, else at ``start + window``; the end
    position is included, so a chunk holds at most ``window + 1`` tokens.
    """
    n, start, out = len(tokens), 0, []
    while start < n:
        if start + window > n - 1:
            out.append((start, n))
            break
        end = start + window
        for pos in range(end, start, -1):
            if tokens[pos] in end_tokens:
                end = pos
                break
        out.append((start, end + 1))
        start = end + 1
    return out


def encoder_words(tokens: Sequence[str], spans: np.ndarray, probs: np.ndarray, rule: tuple[str, str],
                  skip=frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """Words of one chunk from its encoder tokens (module docstring, step 4).

    tokens: the chunk's token strings; spans: int [T, 2] their character spans; probs: float [T] keep
    probabilities; skip: token strings left out (the tokenizer's named special tokens).
    Returns ``(word spans int [W, 2], word probabilities float64 [W])``.
    """
    kind, prefix = rule
    starts, ends, sums, counts = [], [], [], []
    prev_punct, prev_end = False, None
    for tok_str, (s, e), p in zip(tokens, np.asarray(spans).tolist(), np.asarray(probs, dtype=np.float64).tolist()):
        if tok_str in skip:
            continue
        if kind == "wordpiece":
            new = not tok_str.startswith(prefix)
        elif kind == "metaspace":
            new = tok_str.startswith(prefix) or tok_str in string.punctuation
            if tok_str == prefix:  # a lone "▁" stands for the space before the next piece: no characters of its own
                e = s
        else:
            punct = e > s and all(ch in _PUNCT for ch in tok_str.strip())
            new = prev_end is None or s > prev_end or punct or prev_punct
            prev_punct, prev_end = punct, e
        if new or not starts:
            starts.append(s)
            ends.append(e)
            sums.append(p)
            counts.append(1)
        else:
            ends[-1] = max(ends[-1], e)
            sums[-1] += p
            counts[-1] += 1
    spans_out = np.asarray(list(zip(starts, ends)), dtype=np.int64).reshape(-1, 2)
    return spans_out, np.asarray(sums, dtype=np.float64) / np.maximum(np.asarray(counts, dtype=np.float64), 1)


def _wrapper_ids(enc, tok) -> tuple[int | None, int | None]:
    """The ids that open and close each chunk (module docstring, step 2)."""
    if getattr(enc.config, "model_type", "") == "xlm-roberta":
        # the official dataset class looks up the strings "[CLS]"/"[SEP]" for every checkpoint: <unk> for XLM-R
        return tok.convert_tokens_to_ids("[CLS]"), tok.convert_tokens_to_ids("[SEP]")
    cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    return cls, sep


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

    token_ids: list of N sequences (only their lengths and the ``special_token_ids`` among them are used).
    texts: N strings; offsets: N int arrays [n_i, 2] (char spans of the supervised tokens in texts[i]).
    model: local folder, Hub id, or ``(model, tokenizer)`` pair of a 2-label token classifier (fast tokenizer).
    batch_size: chunks per encoder forward (chunks are sorted by length to minimise padding).
    max_window: encoder tokens per chunk, excluding the 2 wrapper tokens (default: 510, or less when the
        encoder has fewer positions).
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
    rule = word_rule(tok)
    skip = frozenset(v for k, v in tok.special_tokens_map.items() if isinstance(v, str) and k != "additional_special_tokens")
    cls, sep = _wrapper_ids(enc, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    # 1) runs of every example, tokenized by the encoder in one batch call
    special = np.asarray(sorted(set(int(t) for t in special_token_ids or ())), dtype=np.int64)
    per_example = []  # (token spans, indices of ordinary tokens, [(tok_lo, tok_hi, run index)])
    run_text, run_start = [], []
    for i, (ids, text, spans) in enumerate(zip(token_ids, texts, offsets)):
        spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        if len(spans) != len(ids):
            raise ValueError(f"example {i}: {len(ids)} supervised tokens but {len(spans)} offset rows")
        # Special tokens (e.g. <|im_end|>) are not text: keep them out of the encoder's input.
        ordinary = np.flatnonzero(~np.isin(np.asarray(ids, dtype=np.int64), special)) if special.size else np.arange(len(ids))
        runs = []
        for t_lo, t_hi, c_lo, c_hi in supervised_runs(text, spans[ordinary]):
            runs.append((t_lo, t_hi, len(run_text)))
            run_text.append(text[c_lo:c_hi])
            run_start.append(c_lo)
        per_example.append((spans, ordinary, runs))
    encoded = tok(run_text, add_special_tokens=False, return_offsets_mapping=True) if run_text else {"input_ids": []}

    # 2) chunks: (run, token lo, token hi) per the official cutting rule, never crossing runs
    chunks = []
    for r, ids in enumerate(encoded["input_ids"]):
        toks = tok.convert_ids_to_tokens(ids)
        chunks.extend((r, a, b) for a, b in chunk_tokens(toks, window))

    # 3) encoder forward over chunks, longest first
    def model_input(r, a, b):
        ids = ([cls] if cls is not None else []) + list(encoded["input_ids"][r][a:b]) + ([sep] if sep is not None else [])
        return ids[: window + 2]

    inputs = [model_input(*c) for c in chunks]
    log.info("llmlingua2: %d examples, %d runs, %d encoder chunks of <= %d tokens",
             len(per_example), len(run_text), len(chunks), window)
    order = sorted(range(len(chunks)), key=lambda k: -len(inputs[k]))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    try:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="llmlingua2", unit="batch", disable=not progress or not batches)
    except ImportError:  # tqdm is a dependency, but scoring must not fail without a progress bar
        it = batches
    chunk_probs: list[np.ndarray] = [np.zeros(0)] * len(chunks)
    with torch.inference_mode():
        for bidx in it:
            length = max(len(inputs[k]) for k in bidx)
            input_ids = torch.full((len(bidx), length), pad, dtype=torch.long)
            attn = torch.zeros((len(bidx), length), dtype=torch.long)
            for row, k in enumerate(bidx):
                input_ids[row, : len(inputs[k])] = torch.tensor(inputs[k], dtype=torch.long)
                attn[row, : len(inputs[k])] = 1
            logits = enc(input_ids=input_ids.to(device), attention_mask=attn.to(device)).logits
            # softmax over 2 labels in fp32 (the encoder may run in half precision on GPU)
            keep = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
            for row, k in enumerate(bidx):
                chunk_probs[k] = keep[row]

    # 4) words per chunk, gathered per run (spans in the example's text)
    run_words: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in run_text]
    for (r, a, b), probs in zip(chunks, chunk_probs):
        first = 1 if cls is not None else 0
        n_scored = min(b - a, window + 2 - first)  # tokens that made it into the (possibly cut) input
        b = a + n_scored
        toks = tok.convert_ids_to_tokens(encoded["input_ids"][r][a:b])
        spans = np.asarray(encoded["offset_mapping"][r][a:b], dtype=np.int64).reshape(-1, 2) + run_start[r]
        run_words[r].append(encoder_words(toks, spans, probs[first : first + n_scored], rule, skip))

    # 5) words -> LLM tokens, per run
    out = []
    for spans, ordinary, runs in per_example:
        res = np.zeros(len(spans), dtype=np.float32)
        sub = spans[ordinary]
        vals = np.zeros(len(ordinary), dtype=np.float64)
        all_spans, all_probs = [], []
        for t_lo, t_hi, r in runs:
            ws = np.concatenate([w for w, _ in run_words[r]]) if run_words[r] else np.zeros((0, 2), np.int64)
            wp = np.concatenate([p for _, p in run_words[r]]) if run_words[r] else np.zeros(0)
            keep_w = ws[:, 1] > ws[:, 0]  # a word with no characters (a lone "▁") cannot be aligned
            ws, wp = ws[keep_w], wp[keep_w]
            vals[t_lo:t_hi] = align_word_probs_to_tokens(ws, wp, sub[t_lo:t_hi])
            all_spans.append(ws)
            all_probs.append(wp)
        res[ordinary] = vals
        if len(ordinary) < len(spans):
            # special tokens overlap no word: they take the next word's probability, or the last word's
            # (an end-of-turn marker gets the probability of the response's final word)
            ws = np.concatenate(all_spans) if all_spans else np.zeros((0, 2), np.int64)
            wp = np.concatenate(all_probs) if all_probs else np.zeros(0)
            others = np.setdiff1d(np.arange(len(spans)), ordinary)
            res[others] = align_word_probs_to_tokens(ws, wp, spans[others])
        out.append(res)
    return out


def _cache_settings(values: dict, tokenizer) -> dict:
    # Chat markup such as <|im_end|> is not text: it is kept out of the encoder's input.
    return {"model": values["model"] or DEFAULT_MODEL,
            "special_token_ids": sorted(int(t) for t in getattr(tokenizer, "all_special_ids", []))}


def _downloads(values: dict) -> list[tuple[str, str, str]]:
    return [("--llmlingua2_model", values["llmlingua2_model"] or DEFAULT_MODEL, "the LLMLingua-2 encoder")]


LLMLINGUA2 = Scorer(
    "llmlingua2", llmlingua2, reads_text=True, key=_cache_settings, downloads=_downloads,
    settings=(ScorerSetting("llmlingua2_model", DEFAULT_MODEL, kwarg="model", short="encoder",
                            help="Token classifier for scorer=llmlingua2 (Hub id or local folder)."),),
    run_settings=(ScorerSetting("llmlingua2_batch_size", 16, "Encoder chunks per forward pass.", int,
                                kwarg="batch_size", field=False),),
)
