"""Parity with Microsoft's official `llmlingua` package (0.2.2): every LLM token's LLMLingua-2 score equals the mean
of the official word probabilities over the words its character span overlaps.

The official `PromptCompressor` runs on a tiny seeded 2-label BERT saved in a folder whose name contains
`bert-base-multilingual-cased`, and on a tiny XLM-RoBERTa in an `xlm-roberta-large` folder (the package picks its
word rule by name). Its word list and word probabilities are
read from its own private methods while `compress_prompt` runs; `tiktoken.encoding_for_model` is stubbed so that
nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sftgo.scorers.llmlingua2 import chunk_tokens, encoder_words, llmlingua2, word_rule

llmlingua = pytest.importorskip("llmlingua")

TEXTS = [
    "The tax, however, was 3.5% higher than in 2023; don't worry about it.",
    "Steps:\n1. Preheat the oven to 180 degrees.\n2. Mix flour & sugar.\n\n- item one\n- item two",
    "def add(a, b):\n    return a + b  # sum\n\nprint(add(2, 3))",
    "I can't, won't and shouldn't've; it's John's book (the red one) [1].",
    "\"Yes!\" she said... Numbers: 1,234,567.89 and the 42nd, 3rd; e-mail: x@y.org",
    "Hello   world\n\n\nBye.",
    # > 510 encoder tokens with sentence ends: several chunks, cut at "."
    # exactly 510 tokens before a ".": the official chunk holds 511 tokens and its [SEP] is cut off
    " ".join(["x"] * 510) + ". More words here.",
    " ".join(f"Sentence {i} says the quick brown fox jumped over {i + 7} lazy dogs." for i in range(40)),
]
WORDS = ["the", "tax", "how", "##ever", "was", "high", "##er", "than", "don", "item", "one", "two", "print", "add",
         "return", "sum", "can", "won", "##t", "book", "red", "said", "Sent", "##ence", "says", "quick", "brown",
         "fox", "jump", "##ed", "over", "lazy", "dog", "##s", "Hello", "world", "Bye", "Numbers", "Mix", "flour",
         "sugar", "oven", "##s", "deg", "##rees"]


@pytest.fixture(scope="module")
def mbert_dir(tmp_path_factory):
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    chars = sorted({c for t in TEXTS for c in t if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars if c.isalnum()]
    vocab += [w for w in dict.fromkeys(WORDS) if w not in vocab]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=False)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=512, num_labels=2, initializer_range=0.3)
    d = tmp_path_factory.mktemp("enc") / "tiny-bert-base-multilingual-cased-seeded"
    BertForTokenClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


class _FakeEncoding:  # stands in for tiktoken's GPT-3.5 encoding (used only for compression budgets)
    def encode(self, s):
        return list(s.encode())


def official_compressor(model_dir):
    """The official PromptCompressor on a local checkpoint, offline (tiktoken's download stubbed while it is built).

    Also used by benchmarks/llmlingua2_parity.py.
    """
    import llmlingua.prompt_compressor as pc

    real = pc.tiktoken.encoding_for_model
    pc.tiktoken.encoding_for_model = lambda name: _FakeEncoding()
    try:
        return pc.PromptCompressor(model_name=str(model_dir), device_map="cpu", use_llmlingua2=True)
    finally:
        pc.tiktoken.encoding_for_model = real


def official_words(comp, text):
    """(words, probs, number of encoder chunks) as the official compressor forms them on `text`, read from its own
    private word-merging methods while `compress_prompt` runs."""
    words, probs, calls = [], [], []
    merge = comp._PromptCompressor__merge_token_to_word
    to_word = comp._PromptCompressor__token_prob_to_word_prob

    def rec_merge(*a, **k):
        out = merge(*a, **k)
        words.extend(out[0])
        calls.append(1)
        return out

    def rec_to_word(*a, **k):
        out = to_word(*a, **k)
        probs.extend(float(p) for p in out)
        return out

    comp._PromptCompressor__merge_token_to_word = rec_merge
    comp._PromptCompressor__token_prob_to_word_prob = rec_to_word
    try:
        comp.compress_prompt([text], rate=0.5)
    finally:
        del comp._PromptCompressor__merge_token_to_word, comp._PromptCompressor__token_prob_to_word_prob
    assert len(words) == len(probs) > 0
    return words, np.array(probs), len(calls)


def expected_token_scores(text, words, probs, token_spans):
    """Mean official word probability over the words each token overlaps; no overlap: next word, else last."""
    spans, pos = [], 0
    for w in words:
        s = text.find(w, pos)
        assert s >= 0, (w, text[pos:])
        spans.append((s, s + len(w)))
        pos = s + len(w)
    out = []
    for ts, te in token_spans:
        hit = [p for (ws, we), p in zip(spans, probs) if max(ts, ws) < min(te, we)]
        nxt = [p for (ws, _), p in zip(spans, probs) if ws >= te]
        out.append(np.mean(hit) if hit else (nxt[0] if nxt else probs[-1]))
    return np.array(out)


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory):
    """A tiny XLM-RoBERTa with a SentencePiece (Unigram) tokenizer trained on the texts, in an `xlm-roberta-large`
    folder."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizerFast

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(TEXTS * 3, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                           unk_token="<unk>", show_progress=False)
    tok = XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                  cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    torch.manual_seed(0)
    cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=37, max_position_embeddings=514, num_labels=2, initializer_range=0.3,
                           pad_token_id=tok.pad_token_id)
    d = tmp_path_factory.mktemp("enc") / "tiny-xlm-roberta-large-seeded"
    model = XLMRobertaForTokenClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.3)  # spread the keep probabilities
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


# XLM-R: "x x x" is "▁", "x", "▁", "x", ...: 255 x's put the "." at position 510 (a 511-token chunk). The mBERT text of
# 510 x's is left out for XLM-R: its chunk is cut between "▁" and "x", where the official code's detokenize-and-
# tokenize-again step changes the tokens (the documented difference).
XLMR_TEXTS = [t for t in TEXTS if not t.startswith("x x")] + [" ".join(["x"] * 255) + ". More words here."]


@pytest.mark.parametrize("encoder", ["mbert", "xlmr"])
def test_token_scores_equal_official_word_probabilities(encoder, request):
    from test_scorers import gpt2_tokenizer

    model_dir = request.getfixturevalue(f"{encoder}_dir")
    texts = TEXTS if encoder == "mbert" else XLMR_TEXTS
    llm_tok = gpt2_tokenizer()
    ids, offs = [], []
    for t in texts:
        enc = llm_tok(t, return_offsets_mapping=True)
        ids.append(enc["input_ids"])
        offs.append(np.array(enc["offset_mapping"]))
    ours = llmlingua2(ids, texts=texts, offsets=offs, model=str(model_dir), batch_size=3, progress=False)
    comp = official_compressor(model_dir)
    n_multi_chunk = 0
    assert [b - a for a, b in chunk_tokens(["x"] * 510 + ["."] * 2, 510)] == [511, 1]
    for text, sp, got in zip(texts, offs, ours):
        words, probs, n_chunks = official_words(comp, text)
        words = [w.lstrip("\u2581") for w in words]  # the official code strips XLM-R's "▁" from words after scoring
        assert probs.std() > 0.01  # the seeded head spreads the probabilities (std >> 1e-5): a wrong grouping shows
        if "Sentence 39" in text or "x x" in text:
            assert n_chunks >= 2
            n_multi_chunk += 1
        np.testing.assert_allclose(got, expected_token_scores(text, words, probs, sp), rtol=0, atol=1e-5)
    assert n_multi_chunk == 2


def test_word_rules_and_chunk_cuts(mbert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mbert_dir)
    assert word_rule(tok) == ("wordpiece", "##")
    text = "tax, however don't"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    toks = tok.convert_ids_to_tokens(enc["input_ids"])
    assert toks == ["tax", ",", "how", "##ever", "don", "'", "t"]
    p = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.6])
    spans, probs = encoder_words(toks, np.array(enc["offset_mapping"]), p, word_rule(tok))
    assert [text[s:e] for s, e in spans] == ["tax", ",", "however", "don", "'", "t"]
    np.testing.assert_allclose(probs, [0.1, 0.2, 0.4, 0.7, 0.9, 0.6])
    # XLM-R style: "▁" starts a word, so does a punctuation token; other pieces continue the word
    xl = ["▁Hel", "lo", ",", "▁wor", "ld", "."]
    xs = np.array([[0, 3], [3, 5], [5, 6], [7, 10], [10, 12], [12, 13]])
    spans, probs = encoder_words(xl, xs, np.arange(6) / 10, ("metaspace", "\u2581"))
    assert spans.tolist() == [[0, 5], [5, 6], [7, 12], [12, 13]]
    np.testing.assert_allclose(probs, [0.05, 0.2, 0.35, 0.5])
    # other encoders: whitespace gaps and punctuation separate words
    spans, _ = encoder_words(["Hel", "lo", ",", "wor", "ld", "."], xs, np.zeros(6), ("offsets", ""))
    assert spans.tolist() == [[0, 5], [5, 6], [7, 12], [12, 13]]
    # chunks: cut after the last "." within reach, else at start + window (window + 1 tokens)
    assert chunk_tokens(list("ab.cd.ef"), 4) == [(0, 3), (3, 6), (6, 8)]
    assert chunk_tokens(list("abcdefgh"), 4) == [(0, 5), (5, 8)]
    assert chunk_tokens(list("abcd"), 4) == [(0, 4)]
