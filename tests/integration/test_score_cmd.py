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


def user_scorer_argv(ws, tmp_path, monkeypatch, module: str, source: str, scorers: str, *extra) -> list[str]:
    """`sftgo score` arguments with scorers from a module the test writes (on sys.path), at eta 50."""
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["--dataset", str(ws / "data.json"), "--model_name_or_path", str(ws / "llm"), "--scorer", scorers,
            "--percentile", "50", "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), *extra]


def test_score_cmd_user_scorer_and_errors(workspace, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = user_scorer_argv(workspace, tmp_path, monkeypatch, "my_len_scorer", (
        "import numpy as np\n"
        "def position(token_ids, *, texts, offsets, **_):\n"
        "    return [np.arange(len(t), dtype=float) for t in token_ids]\n"), "my_len_scorer:position,random")
    assert main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["scorers"]["my_len_scorer:position"]["cache"] == "off"
    assert stats["scorers"]["random"]["cache"] == "miss"

    assert main(argv[:4] + ["--scorer", "tf-idf", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown scorer 'tf-idf'" in err and "my_module:my_function" in err
    assert main(argv[:4] + ["--scorer", "tfidf", "--percentile", "120", "--output_dir", str(out)]) == 2
    assert "--percentile" in capsys.readouterr().err


def test_score_cmd_reference_scorer_is_rho1_excess_loss(workspace, tmp_path, capsys):
    """`--scorer reference`: log p_ref - log p_model per supervised token (checked against full-logit forwards of both
    tiny models), shown beside TF-IDF and LLMLingua-2; both forwards are cached; no reference -> the two-stage hint."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from sftgo.data import load_examples, tokenize_examples
    from sftgo.models import load_tokenizer

    tok = load_tokenizer(str(workspace / "llm"))
    dirs = {}
    for name, seed in (("lm", 0), ("ref", 1)):
        torch.manual_seed(seed)
        d = tmp_path / name
        LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, max_position_embeddings=128)).save_pretrained(d)
        tok.save_pretrained(d)
        dirs[name] = d
    out = tmp_path / "out"
    argv = ["--dataset", str(workspace / "data.json"), "--model_name_or_path", str(dirs["lm"]),
            "--scorer", "tfidf,llmlingua2,reference", "--llmlingua2_model", str(workspace / "encoder"),
            "--output_dir", str(out), "--num_examples", "3", "--cache_dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "scorer=reference needs a reference model" in err and "--ref_model_name_or_path runs/ref/final" in err

    assert main(argv + ["--ref_model_name_or_path", str(dirs["ref"])]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["scorers"]["reference"]["cache"] == "miss"
    page = (out / "importance.html").read_text()
    assert page.count("<h3>reference</h3>") == 3 and page.count("<h3>llmlingua2</h3>") == 3

    # independent excess loss: full logits of both models, log-softmax in float64
    data = tokenize_examples(load_examples(str(workspace / "data.json")), tok, 512)
    models = {k: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval() for k, d in dirs.items()}
    want = []
    with torch.no_grad():
        for ids, labels in zip(data.input_ids, data.labels):
            lp = {k: torch.log_softmax(m(torch.tensor([ids])).logits[0].double(), -1) for k, m in models.items()}
            want.extend(lp["ref"][t - 1, labels[t]].item() - lp["lm"][t - 1, labels[t]].item()
                        for t in range(1, len(ids)) if labels[t] != -100)
    want = np.array(want)
    assert stats["scorers"]["reference"]["mean_score"] == pytest.approx(want.mean(), rel=1e-4, abs=1e-6)
    assert stats["scorers"]["reference"]["std_score"] == pytest.approx(want.std(), rel=1e-4)
    first = [float(x) for x in re.findall(r"score=([-0-9.e]+)", page.split("<h3>reference</h3>")[1].split("</div>")[0])]
    np.testing.assert_allclose(first, want[: len(first)], rtol=1e-3, atol=1e-4)  # hover titles print 4 digits

    # both forwards come from the cache the second time
    assert main(argv + ["--ref_model_name_or_path", str(dirs["ref"]), "--output_dir", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "stats.json").read_text())["scorers"]["reference"]["cache"] == "hit"


def test_score_cmd_truth_gives_precision_and_recall(workspace, tmp_path, monkeypatch, capsys):
    """--truth: each scorer's important group against the tokens a truth scorer marks (here: each example's last
    token). Position-ranked groups hold every last token (recall 1); reversed, none of them (recall 0)."""
    out = tmp_path / "out"
    argv = user_scorer_argv(workspace, tmp_path, monkeypatch, "study_truth", (
        "import numpy as np\n"
        "def last(token_ids, **_):\n"
        "    return [(np.arange(len(t)) == len(t) - 1).astype(float) for t in token_ids]\n"
        "def position(token_ids, **_):\n"
        "    return [np.arange(len(t), dtype=float) for t in token_ids]\n"
        "def first(token_ids, **_):\n"
        "    return [-np.arange(len(t), dtype=float) for t in token_ids]\n"),
        "study_truth:position,study_truth:first", "--truth", "study_truth:last")
    assert main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    n, pos, first = stats["num_examples"], stats["scorers"]["study_truth:position"], stats["scorers"]["study_truth:first"]
    assert stats["truth"] == "study_truth:last" and stats["truth_fraction"] == pytest.approx(n / stats["num_tokens"])
    assert (pos["recall"], pos["true_positives"]) == (1.0, n)
    assert pos["precision"] == pytest.approx(round(n / pos["num_important"], 4))
    assert (first["recall"], first["precision"], first["true_positives"]) == (0.0, 0.0, 0)
    assert "study_truth:position: precision" in capsys.readouterr().out
    assert main(argv[:-1] + ["nope:missing"]) == 2  # an unknown truth scorer: one line, before any work
    assert "nope" in capsys.readouterr().err
