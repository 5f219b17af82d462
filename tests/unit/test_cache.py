import json
import logging

import numpy as np
import pytest

from sftgo.cache import cached_scores, default_cache_dir, fingerprint

KEY = {"dataset": "abc123", "tokenizer": "tok", "scorer": "tfidf", "settings": {"seed": 0}}


class Counter:
    def __init__(self, arrays):
        self.arrays = arrays
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return [a.copy() for a in self.arrays]


def arrays():
    rng = np.random.default_rng(0)
    return [rng.random(n).astype(np.float32) for n in (5, 0, 3, 11)]


def entry_paths(tmp_path):
    npz = list(tmp_path.glob("*.npz"))
    js = list(tmp_path.glob("*.json"))
    assert len(npz) == 1 and len(js) == 1
    return npz[0], js[0]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_hit_returns_identical_arrays(tmp_path):
    c = Counter(arrays())
    first = cached_scores(KEY, c, tmp_path)
    second = cached_scores(dict(reversed(list(KEY.items()))), c, tmp_path)  # key order does not matter
    assert c.calls == 1
    assert_same(first, arrays())
    assert_same(second, arrays())
    assert not list(tmp_path.glob("*.tmp"))  # temp files were moved into place


def test_different_key_is_a_different_entry(tmp_path):
    c = Counter(arrays())
    cached_scores(KEY, c, tmp_path)
    cached_scores({**KEY, "settings": {"seed": 1}}, c, tmp_path)
    assert c.calls == 2 and len(list(tmp_path.glob("*.npz"))) == 2


def test_truncated_file_is_rebuilt(tmp_path, caplog):
    c = Counter(arrays())
    cached_scores(KEY, c, tmp_path)
    npz, _ = entry_paths(tmp_path)
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="sftgo.cache"):
        out = cached_scores(KEY, c, tmp_path)
    assert c.calls == 2 and "corrupted" in caplog.text
    assert_same(out, arrays())
    assert_same(cached_scores(KEY, c, tmp_path), arrays())  # the rebuilt entry is valid again
    assert c.calls == 2


def test_checksum_mismatch_is_rebuilt(tmp_path, caplog):
    c = Counter(arrays())
    cached_scores(KEY, c, tmp_path)
    npz, _ = entry_paths(tmp_path)
    flat = np.concatenate(arrays())
    flat[0] += 1.0  # same shape, different values: only the checksum can tell
    np.savez(npz, flat=flat, lengths=np.array([5, 0, 3, 11]))
    with caplog.at_level(logging.WARNING, logger="sftgo.cache"):
        out = cached_scores(KEY, c, tmp_path)
    assert c.calls == 2 and "checksum" in caplog.text
    assert_same(out, arrays())


def test_stale_key_is_rebuilt(tmp_path, caplog):
    c = Counter(arrays())
    cached_scores(KEY, c, tmp_path)
    _, js = entry_paths(tmp_path)
    meta = json.loads(js.read_text())
    meta["key"]["scorer"] = "frequency"  # e.g. a collision or a hand-edited sidecar
    js.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="sftgo.cache"):
        cached_scores(KEY, c, tmp_path)
    assert c.calls == 2 and "stale" in caplog.text


def test_missing_sidecar_is_rebuilt(tmp_path):
    c = Counter(arrays())
    cached_scores(KEY, c, tmp_path)
    _, js = entry_paths(tmp_path)
    js.unlink()
    cached_scores(KEY, c, tmp_path)
    assert c.calls == 2


def test_wrong_lengths_are_rebuilt_and_checked(tmp_path, caplog):
    c = Counter(arrays())
    cached_scores(KEY, c, tmp_path)
    with caplog.at_level(logging.WARNING, logger="sftgo.cache"):
        out = cached_scores(KEY, c, tmp_path, expected_lengths=[5, 0, 3, 11])
        assert c.calls == 1
        bad = Counter([np.zeros(2)])
        with pytest.raises(ValueError, match="one score per supervised token"):
            cached_scores(KEY, bad, tmp_path, expected_lengths=[5, 0, 4, 11])
    assert "expected" in caplog.text
    assert_same(out, arrays())


def test_object_arrays_are_never_unpickled(tmp_path):
    c = Counter(arrays())
    cached_scores(KEY, c, tmp_path)
    npz, js = entry_paths(tmp_path)
    obj = np.empty(1, dtype=object)
    obj[0] = {"evil": 1}
    np.savez(npz, flat=obj, lengths=np.array([1]))
    cached_scores(KEY, c, tmp_path)  # load with allow_pickle=False fails -> rebuilt, not unpickled
    assert c.calls == 2


def test_default_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SFTGO_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "scores"  # beside the converted models in $SFTGO_CACHE/models
    c = Counter(arrays())
    cached_scores(KEY, c)
    assert len(list((tmp_path / "x" / "scores").glob("*.npz"))) == 1


def test_fingerprint():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"a": (1, 2)}) == fingerprint({"a": [1, 2]})
    assert fingerprint(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    x = np.arange(4, dtype=np.int32)
    assert fingerprint({"x": x}) != fingerprint({"x": x.astype(np.int64)})
    with pytest.raises(TypeError, match="cannot hash"):
        fingerprint({"f": object()})
    with pytest.raises(ValueError, match="dict"):
        cached_scores(["not", "a", "dict"], lambda: [], "/tmp")
