"""`sftgo score` end to end on a tiny local dataset, a tokenizer trained in the test and a tiny local encoder."""

import json
import re

import numpy as np
import pytest

from sftgo.score_cmd import main

RESPONSES = [
    "Paris is the capital of France.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The quick brown fox jumps over the lazy dog.",
    "Use <script>alert(1)</script> & friends carefully.",
    "Photosynthesis turns light into chemical energy.\nPlants need it.",
    "Seven is a prime number. Eight is not.",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        BertConfig, BertForTokenClassification, BertTokenizerFast, LlamaConfig, PreTrainedTokenizerFast,
    )

    root = tmp_path_factory.mktemp("score")
    records = [{"instruction": f"Question {i}: tell me something.", "input": "", "output": r} for i, r in enumerate(RESPONSES)]
    (root / "data.json").write_text(json.dumps(records))

    # a byte-level BPE LLM tokenizer trained on the data (GPT-2 style: offsets include the leading space)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(RESPONSES + [r["instruction"] for r in records] + ["### Instruction:\n### Response:\n"], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    llm = root / "llm"
    tok.save_pretrained(llm)
    LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2).save_pretrained(llm)  # load_tokenizer wants a model folder

    words = sorted({w.lower() for r in RESPONSES for w in re.findall(r"\w+|[^\w\s]", r)})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    enc_tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    import torch

    torch.manual_seed(0)
    enc = BertForTokenClassification(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=37, num_labels=2,
                                                max_position_embeddings=64))
    encoder = root / "encoder"
    enc.save_pretrained(encoder)
    enc_tok.save_pretrained(encoder)
    return root


def run(ws, out, *extra):
    argv = ["--dataset", str(ws / "data.json"), "--model_name_or_path", str(ws / "llm"),
            "--scorer", "tfidf,llmlingua2,frequency", "--percentile", "80", "--output_dir", str(out),
            "--num_examples", "4", "--llmlingua2_model", str(ws / "encoder"), "--cache_dir", str(ws / "cache"), *extra]
    return main(argv)


def test_score_cmd_end_to_end_and_cache(workspace, capsys):
    from sftgo.data import load_examples, tokenize_examples
    from sftgo.models import load_tokenizer

    out1, out2 = workspace / "out1", workspace / "out2"
    assert run(workspace, out1) == 0
    assert "tfidf: miss" in capsys.readouterr().out
    stats = json.loads((out1 / "stats.json").read_text())

    tok = load_tokenizer(str(workspace / "llm"))
    data = tokenize_examples(load_examples(str(workspace / "data.json")), tok, 512)
    lengths = [int((np.asarray(lab) != -100).sum()) for lab in data.labels]
    k = [int(np.floor(0.2 * n + 0.5)) for n in lengths]  # eta = 80
    assert stats["num_examples"] == len(RESPONSES) and stats["num_tokens"] == sum(lengths)
    for name in ("tfidf", "llmlingua2", "frequency"):
        st = stats["scorers"][name]
        assert st["cache"] == "miss"
        assert st["num_important"] == sum(k)
        assert st["fraction_important"] == pytest.approx(sum(k) / sum(lengths))
        assert sum(t["count"] for t in st["top_important_tokens"]) <= sum(k)
        assert all(0 < t["fraction_of_occurrences"] <= 1 for t in st["top_important_tokens"])
    assert 0 < stats["scorers"]["llmlingua2"]["mean_score"] < 1
    assert set(stats["jaccard"]) == {"tfidf|llmlingua2", "tfidf|frequency", "llmlingua2|frequency"}
    assert all(0 <= v <= 1 for v in stats["jaccard"].values())

    # the frequency scorer's mean over the corpus, by hand: -ln(count / total) per token
    from collections import Counter

    ids = [t for lab in data.labels for t in lab if t != -100]
    cnt = Counter(ids)
    want = np.mean([-np.log(cnt[t] / len(ids)) for t in ids])
    assert stats["scorers"]["frequency"]["mean_score"] == pytest.approx(want, rel=1e-9)

    page = (out1 / "importance.html").read_text()
    assert page.count("<h2>Example") == 4
    # the response "<script>alert(1)</script>" is split over several tokens, each escaped
    assert "<script>" not in page and "</script>" not in page and "&lt;" in page and "&amp;" in page
    # one coloured span per supervised token per scorer for the rendered examples
    n_spans = page.count('<span class="t')  # the legend uses single quotes and is not counted
    assert n_spans == 3 * sum(lengths[:4])
    assert page.count('class="t imp"') == 3 * sum(k[:4])

    # second run: every scorer comes from the cache, same statistics
    assert run(workspace, out2) == 0
    stats2 = json.loads((out2 / "stats.json").read_text())
    for name in ("tfidf", "llmlingua2", "frequency"):
        assert stats2["scorers"][name]["cache"] == "hit"
        a, b = dict(stats["scorers"][name]), dict(stats2["scorers"][name])
        for key in ("cache", "seconds"):
            a.pop(key), b.pop(key)
        assert a == b
    assert stats2["jaccard"] == stats["jaccard"]


def test_score_cmd_user_scorer_and_errors(workspace, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_len_scorer.py").write_text(
        "import numpy as np\n"
        "def position(token_ids, *, texts, offsets, **_):\n"
        "    return [np.arange(len(t), dtype=float) for t in token_ids]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    argv = ["--dataset", str(workspace / "data.json"), "--model_name_or_path", str(workspace / "llm"),
            "--scorer", "my_len_scorer:position,random", "--percentile", "50", "--output_dir", str(out),
            "--cache_dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["scorers"]["my_len_scorer:position"]["cache"] == "off"
    assert stats["scorers"]["random"]["cache"] == "miss"

    assert main(argv[:4] + ["--scorer", "tf-idf", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown scorer 'tf-idf'" in err and "my_module:my_function" in err
    assert main(argv[:4] + ["--scorer", "tfidf", "--percentile", "120", "--output_dir", str(out)]) == 2
    assert "--percentile" in capsys.readouterr().err
