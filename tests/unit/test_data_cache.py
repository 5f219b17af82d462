"""Tokenized-data cache (sftgo.data.tokenize_cached): hits equal a fresh tokenization, every key part misses,
corrupted entries are rebuilt with a warning, nothing is pickled."""

from __future__ import annotations

import json
import logging
import zipfile

import numpy as np
import pytest

from sftgo.data import (Examples, TokenizedData, tokenize_cached, tokenize_examples, tokenized_cache_dir,
                        tokenizer_fingerprint)

RECORDS = [
    {"messages": [{"role": "user", "content": "Add three and four."},
                  {"role": "assistant", "content": "Three plus four equals seven."}]},
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "The capital of France is Paris."},
                  {"role": "user", "content": "And of Italy?"},
                  {"role": "assistant", "content": "Rome."}]},
    {"messages": [{"role": "user", "content": "Explain photosynthesis."},
                  {"role": "assistant", "content": "Plants use sunlight, water and carbon dioxide to make sugar and oxygen."}]},
]


def make_examples(records=RECORDS, num_empty=0) -> Examples:
    ex = Examples(json.loads(json.dumps(records)))  # deep copy: tests may edit them
    ex.num_empty = num_empty
    return ex


def assert_same(a: TokenizedData, b: TokenizedData):
    assert a.input_ids == b.input_ids and a.labels == b.labels and a.texts == b.texts
    assert len(a.offsets) == len(b.offsets)
    for x, y in zip(a.offsets, b.offsets):
        assert x.dtype == y.dtype == np.int64 and x.shape == y.shape and np.array_equal(x, y)
    assert a.num_dropped == b.num_dropped and a.num_empty == b.num_empty and a.columns == b.columns
    assert all(type(t) is int for ids in a.input_ids for t in ids)  # plain ints, like a fresh tokenization


def entry(tmp_path):
    npz = list(tmp_path.glob("*.npz"))
    js = list(tmp_path.glob("*.json"))
    assert len(npz) == 1 and len(js) == 1
    return npz[0], js[0]


class Spy:
    """Counts calls of tokenize_examples made by tokenize_cached (a miss calls it, a hit does not)."""

    def __init__(self, monkeypatch):
        import sftgo.data.cache as data  # the module whose tokenize_cached calls it

        self.calls = 0
        real = data.tokenize_examples

        def wrapped(*a, **k):
            self.calls += 1
            return real(*a, **k)

        monkeypatch.setattr(data, "tokenize_examples", wrapped)


def test_hit_equals_fresh_tokenization(chat_tokenizer, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    fresh = tokenize_examples(make_examples(num_empty=2), chat_tokenizer, 64)  # reference, outside the spy count
    spy.calls = 0
    first = tokenize_cached(make_examples(num_empty=2), chat_tokenizer, 64, cache_dir=tmp_path)
    second = tokenize_cached(make_examples(num_empty=2), chat_tokenizer, 64, cache_dir=tmp_path)
    assert spy.calls == 1  # the second call was served from the cache
    assert_same(first, fresh)
    assert_same(second, fresh)
    assert second.num_supervised() == fresh.num_supervised() > 0
    for i in range(len(fresh)):  # the derived views agree too
        a, b = second.supervised(i), fresh.supervised(i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    entry(tmp_path)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))  # temp files moved into place


def test_num_dropped_cached_and_num_empty_from_call(chat_tokenizer, tmp_path, caplog):
    # A long first turn pushes the last response past max_length=24: that example is dropped.
    recs = RECORDS + [{"messages": [{"role": "user", "content": "word " * 60},
                                    {"role": "assistant", "content": "Seven."}]}]
    fresh = tokenize_examples(make_examples(recs), chat_tokenizer, 24)
    assert fresh.num_dropped >= 1
    tokenize_cached(make_examples(recs, num_empty=0), chat_tokenizer, 24, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="sftgo.data"):
        hit = tokenize_cached(make_examples(recs, num_empty=5), chat_tokenizer, 24, cache_dir=tmp_path)
    assert hit.num_dropped == fresh.num_dropped
    assert hit.num_empty == 5  # from the Examples passed now, not from the cached entry (which saw 0)
    assert "dropped" in caplog.text  # a hit repeats the warning of a fresh tokenization
    fresh.num_empty = 5
    assert_same(hit, fresh)


@pytest.mark.parametrize("change", ["max_length", "examples", "tokenizer", "chat_template", "added_token"])
def test_key_parts_miss(chat_tokenizer, plain_tokenizer, tmp_path, monkeypatch, change):
    import copy

    tokenize_cached(make_examples(), chat_tokenizer, 64, cache_dir=tmp_path)
    spy = Spy(monkeypatch)
    ex, tok, n = make_examples(), chat_tokenizer, 64
    if change == "max_length":
        n = 63
    elif change == "examples":
        ex[1]["messages"][-1]["content"] = "Rome, of course."
    elif change == "tokenizer":
        tok = plain_tokenizer
    elif change == "chat_template":
        tok = copy.deepcopy(chat_tokenizer)
        tok.chat_template = chat_tokenizer.chat_template.replace("\n{{ m['content'] }}", "\n\n{{ m['content'] }}")
    else:  # same vocabulary file, one token added after loading: the backend serialization changes
        tok = copy.deepcopy(chat_tokenizer)
        tok.add_tokens(["France"])
    out = tokenize_cached(ex, tok, n, cache_dir=tmp_path)
    assert spy.calls == 1  # a miss, computed fresh
    assert len(list(tmp_path.glob("*.npz"))) == 2
    spy.calls = 0
    assert_same(out, tokenize_examples(ex, tok, n))


def test_tokenizer_fingerprint_stable_and_sensitive(chat_tokenizer, plain_tokenizer):
    import copy

    assert tokenizer_fingerprint(chat_tokenizer) == tokenizer_fingerprint(copy.deepcopy(chat_tokenizer))
    assert tokenizer_fingerprint(chat_tokenizer) != tokenizer_fingerprint(plain_tokenizer)


def _corrupt_npz_truncate(npz, js):
    b = npz.read_bytes()
    npz.write_bytes(b[: len(b) // 2])


def _corrupt_npz_values(npz, js):
    # A valid npz with one token id changed: only the checksum can tell.
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["input_ids"][0] += 1
    np.savez(npz, **arrays)


def _corrupt_npz_lengths(npz, js):
    # Lengths no longer add up to the token count (checksum recomputed would still not make it valid).
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["lengths"][0] += 1
    np.savez(npz, **arrays)


def _corrupt_npz_pickle(npz, js):
    # An object array needs pickle to load: it must be refused, not unpickled.
    np.savez(npz, input_ids=np.array([[1], "x"], dtype=object), labels=np.zeros(1), offsets=np.zeros((1, 2)),
             lengths=np.ones(1))


def _corrupt_sidecar_json(npz, js):
    js.write_text(js.read_text()[:-10])


def _corrupt_sidecar_texts(npz, js):
    meta = json.loads(js.read_text())
    meta["texts"][0] = meta["texts"][0] + " tampered"
    js.write_text(json.dumps(meta))


def _corrupt_sidecar_key(npz, js):
    meta = json.loads(js.read_text())
    meta["key"]["max_length"] = 65
    js.write_text(json.dumps(meta))


def _delete_sidecar(npz, js):
    js.unlink()


def _delete_npz(npz, js):
    npz.unlink()


@pytest.mark.parametrize("corrupt", [_corrupt_npz_truncate, _corrupt_npz_values, _corrupt_npz_lengths, _corrupt_npz_pickle,
                                     _corrupt_sidecar_json, _corrupt_sidecar_texts, _corrupt_sidecar_key,
                                     _delete_sidecar, _delete_npz], ids=lambda f: f.__name__.lstrip("_"))
def test_corrupted_entry_rebuilt_with_warning(chat_tokenizer, tmp_path, monkeypatch, caplog, corrupt):
    fresh = tokenize_examples(make_examples(), chat_tokenizer, 64)
    tokenize_cached(make_examples(), chat_tokenizer, 64, cache_dir=tmp_path)
    corrupt(*entry(tmp_path))
    spy = Spy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="sftgo.data"):
        out = tokenize_cached(make_examples(), chat_tokenizer, 64, cache_dir=tmp_path)
    assert spy.calls == 1  # recomputed, not served from the bad entry
    assert "tokenized cache" in caplog.text and "rebuilding" in caplog.text
    assert_same(out, fresh)
    # The rebuilt entry is valid again: the next call is a silent hit.
    spy.calls = 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sftgo.data"):
        again = tokenize_cached(make_examples(), chat_tokenizer, 64, cache_dir=tmp_path)
    assert spy.calls == 0 and "rebuilding" not in caplog.text
    assert_same(again, fresh)


def test_no_pickle_in_entry(chat_tokenizer, tmp_path):
    tokenize_cached(make_examples(), chat_tokenizer, 64, cache_dir=tmp_path)
    npz, js = entry(tmp_path)
    with np.load(npz, allow_pickle=False) as z:  # would raise on an object array
        assert sorted(z.files) == ["input_ids", "labels", "lengths", "offsets"]
        assert all(z[k].dtype == np.int64 for k in z.files)
        assert z["offsets"].shape == (z["input_ids"].size, 2) and int(z["lengths"].sum()) == z["input_ids"].size
    with zipfile.ZipFile(npz) as zf:
        assert all(n.endswith(".npy") for n in zf.namelist())
    meta = json.loads(js.read_text())  # the sidecar is plain JSON
    assert meta["num_sequences"] == len(RECORDS) and len(meta["texts"]) == len(RECORDS)


def test_default_root_and_non_fast_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTGO_CACHE", str(tmp_path / "c"))
    assert tokenized_cache_dir() == tmp_path / "c" / "tokenized"  # next to $SFTGO_CACHE/scores
    assert tokenized_cache_dir(tmp_path / "s") == tmp_path / "s" / "tokenized"

    class Slow:
        is_fast = False

    from sftgo.data import DataError

    with pytest.raises(DataError, match="fast tokenizer"):
        tokenize_cached(make_examples(), Slow(), 64, cache_dir=tmp_path)
