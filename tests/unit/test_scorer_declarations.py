"""Scorer declarations (``sftgo.scorers.SCORERS``): each scorer declared once, beside its code; the rest of sftgo asks
the declaration (``scorer_spec``) instead of comparing scorer names; cache keys as before the declarations."""

import ast
import dataclasses
import types
from pathlib import Path

import numpy as np
import pytest

import sftgo
from sftgo.scorers import SCORER_SETTINGS, SCORERS, ScorerError, resolve_scorer, scorer_needs_reference, scorer_spec

# ---------------------------------------------------------------- cache keys: the entries users already have still hit


class _Tok:
    name_or_path = "org/tok"
    all_special_ids = [7, 2, 0]
    pad_token_id = 0

    def __len__(self):
        return 50


def _data():
    from sftgo.data import TokenizedData

    ids = [[1, 5, 6, 9, 2], [1, 8, 8, 3]]
    labels = [[-100, 5, 6, 9, 2], [-100, -100, 8, 3]]
    offsets = [np.array([[0, 0], [0, 1], [2, 3], [3, 5], [6, 7]]), np.array([[0, 0], [0, 1], [1, 2], [3, 5]])]
    return TokenizedData(ids, labels, ["a bcd e", "xy zw"], offsets)


# sha256 cache fingerprints (sftgo.cache.fingerprint of the key: an entry's file name) measured on main at 39d596b,
# before the declarations, by running this test's calls (compute_importance with a config namespace,
# score_cmd.score_dataset with `sftgo score` arguments, cached_token_logp) with sftgo.cache.cached_scores /
# lookup_scores replaced by a recorder (/tmp/scorers/measure.py). (scorer, seed, llmlingua2_model) -> fingerprint.
MEASURED = {
    ("tfidf", 0, None): "726ddc5626c5671d8edfebcd2a0ebe48fe6c81484b6a4650e6fa3f32c0359d74",
    ("tfidf", 3, "org/enc"): "726ddc5626c5671d8edfebcd2a0ebe48fe6c81484b6a4650e6fa3f32c0359d74",
    ("frequency", 0, None): "1c318e927558aee45533ad1d84ec6a5f905dd50a0340c050b437b8e5e9a7c31e",
    ("frequency", 3, "org/enc"): "1c318e927558aee45533ad1d84ec6a5f905dd50a0340c050b437b8e5e9a7c31e",
    ("random", 0, None): "26576e506584ce900147a9e5522c0adf9937d2937432ccf79e0019b828161c34",
    ("random", 3, "org/enc"): "ab034f4d611e643f9ded5db8e8d3b41704a15921a04951c7eb7de8ac1358d93b",
    ("llmlingua2", 0, None): "10c75cb15ae8e064e456f47471accc61c84159e812f586c3859674fe972e69ba",
    ("llmlingua2", 3, "org/enc"): "1f06d32ef91518823a53be61bcfc5e8e21094448098d9e2d055f742f773d35a2",
}
# cached_token_logp("org/ref"): measured after the reference cache moved to the one model fingerprint
# (sftgo.models.model_fingerprint, content-based; the old path+size+mtime key was fe5ba75c...: old entries miss once).
MEASURED_REFERENCE = "3336b67b3720dcbb9381f9159bdf4ee00054b846cee0621775edffabffe02a14"
DATA_FINGERPRINT = "ae18f5217c2541f349f1e6fd5af83793973e4f5cc0d12096b4536a97e3363b0f"


def test_score_cache_keys_are_those_of_earlier_versions(monkeypatch):
    import sftgo.cache as C
    from sftgo import pipeline as P
    from sftgo.cache import fingerprint
    from sftgo.score_cmd import score_dataset

    keys = []
    monkeypatch.setattr(C, "cached_scores", lambda key, compute, cache_dir=None, expected_lengths=None:
                        keys.append(key) or [np.zeros(n) for n in expected_lengths])
    monkeypatch.setattr(C, "lookup_scores", lambda key, cache_dir=None, expected_lengths=None:
                        keys.append(key) or [np.zeros(n, np.float32) for n in expected_lengths])
    data, tok = _data(), _Tok()
    for (name, seed, model), want in MEASURED.items():
        cfg = types.SimpleNamespace(scorer=name, seed=seed, llmlingua2_model=model, score_cache_dir=None)
        P.compute_importance(cfg, data, tok)  # sftgo train (and the TRL trainer)
        args = types.SimpleNamespace(seed=seed, llmlingua2_model=model, llmlingua2_batch_size=4, cache_dir=None)
        score_dataset(data, tok, [name], args)  # sftgo score
        assert [fingerprint(k) for k in keys] == [want, want], (name, seed, model, keys)
        keys.clear()
    P.compute_importance(types.SimpleNamespace(scorer="llmlingua2", seed=0, llmlingua2_model="org/enc",
                                               score_cache_dir=None), data, tok)
    assert keys.pop() == {"scorer": "llmlingua2", "settings": {"model": "org/enc", "special_token_ids": [0, 2, 7]},
                          "data": DATA_FINGERPRINT, "tokenizer": "org/tok", "vocab": 50}
    P.cached_token_logp("org/ref", data, tok, dtype="auto")
    assert fingerprint(keys.pop()) == MEASURED_REFERENCE


# ---------------------------------------------------------------- every declaration


@pytest.mark.parametrize("name", list(SCORERS))
def test_declared_scorer_settings_are_config_fields_and_flags_and_feed_the_key(name):
    from sftgo.config import SFTGoConfig
    from sftgo.objectives import METRIC_SETTINGS
    from sftgo.score_cmd import build_parser

    spec = SCORERS[name]
    assert spec.name == name and scorer_spec(name) is spec
    fields = {f.name: f for f in dataclasses.fields(SFTGoConfig)}
    flags = {a.dest: a for a in build_parser()._actions}
    for s in spec.settings:
        assert s.name in fields, f"{name}: setting {s.name} is no config field (sftgo train --{s.name})"
        if s.field:  # the scorer's own field: same default, and not reported as ignored by the objectives
            assert fields[s.name].default == s.default and s.name in METRIC_SETTINGS and SCORER_SETTINGS[s.name] is s
        other = (s.default or 0) + 1 if s.type is int else f"other-{s.default}"
        key = spec.cache_settings({}, _Tok())
        assert spec.cache_settings({s.name: other}, _Tok()) != key, f"{name}: setting {s.name} does not feed the key"
    for s in (*spec.settings, *spec.run_settings):
        assert flags[s.name].default == s.default and flags[s.name].type is s.type, f"sftgo score {s.flag}"
    if spec.uses_reference_model:  # reference, influence: computed by sftgo from reference log-probs
        assert spec.score is None and not spec.reads_text
        with pytest.raises(ScorerError, match="--ref_model_name_or_path"):
            spec([[1, 2]])
    else:
        assert callable(spec.score) and spec.cached


def _batch(tokenizer):
    """Responses tokenized by the chat tokenizer: supervised ids, texts, offsets (a prompt before each response)."""
    responses = ["The cat sat, then it slept.", "Plants use sunlight and water.", "Sort these numbers: 5, 2, 9."]
    token_ids, texts, offsets = [], [], []
    for r in responses:
        prompt = "Question: tell me.\nAnswer: "
        enc = tokenizer(prompt + r, return_offsets_mapping=True)
        spans = np.asarray(enc["offset_mapping"], dtype=np.int64)
        keep = spans[:, 0] >= len(prompt)
        token_ids.append(np.asarray(enc["input_ids"])[keep].tolist())
        texts.append(prompt + r)
        offsets.append(spans[keep])
    return token_ids, texts, offsets, responses


def _runnable(name, responses):
    """Settings that let each scorer run offline (a setting not listed here keeps its default)."""
    if name == "llmlingua2":
        from tests.unit.test_scorers import tiny_encoder

        words = {w.strip(".,:").lower() for r in responses for w in r.split()} | {".", ",", ":"}
        return {"llmlingua2_model": tiny_encoder(sorted(words))}
    return {}


@pytest.mark.parametrize("name", [n for n, s in SCORERS.items() if s.score is not None])
def test_reads_text_is_what_the_scorer_needs(name, chat_tokenizer):
    """A scorer declared text-free gets what the TRL trainer gives it (no decoded text: empty texts, zero-length
    offsets) and must score the same; one declared text-reading must score differently without its text."""
    spec = SCORERS[name]
    token_ids, texts, offsets, responses = _batch(chat_tokenizer)
    settings = {**spec.cache_settings(_runnable(name, responses), chat_tokenizer), "progress": False}
    with_text = spec(token_ids, texts=texts, offsets=offsets, **settings)
    without = spec(token_ids, texts=[""] * len(texts), offsets=[np.zeros((len(t), 2), np.int64) for t in token_ids],
                   **settings)
    same = all(np.array_equal(a, b) for a, b in zip(with_text, without))
    assert same != spec.reads_text, f"{name}: reads_text={spec.reads_text}, but its scores " + (
        "do not depend on the text" if same else "change without the text")


def test_a_module_function_scorer_is_declared_on_the_fly(tmp_path, monkeypatch):
    (tmp_path / "decl_mod.py").write_text("def length(token_ids, **_):\n    return [[float(len(t))] * len(t) for t in token_ids]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = scorer_spec("decl_mod:length")  # not imported: the config check needs no user module
    assert (spec.score, spec.reads_text, spec.cached, spec.needs_reference) == (None, True, False, False)
    assert resolve_scorer("decl_mod:length")([[1, 2]]) == [[2.0, 2.0]]
    assert [scorer_needs_reference(n) for n in ("decl_mod:length", "", None, "reference")] == [False, False, False, True]
    with pytest.raises(ScorerError, match=r"unknown scorer 'tf-idf'; valid names: frequency, influence, llmlingua2, random, "
                                          r"reference, tfidf, or 'my_module:my_function'"):
        scorer_spec("tf-idf")
    with pytest.raises(ScorerError, match="cannot import"):
        scorer_spec("no_such_module_xyz:fn", load=True)


def test_declarations_import_without_torch():
    import subprocess
    import sys

    code = ("import sys; from sftgo.scorers import SCORERS, scorer_spec; scorer_spec('reference'); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- no scorer name compared outside sftgo.scorers

# Settings whose values may equal a scorer's name without naming a scorer (``--target_residual reference``, the
# Trainer's ``train_sampling_strategy == "random"``).
NOT_SCORERS = {"target_residual", "residual", "train_sampling_strategy"}
# Modules allowed to compare scorer names for a while (each must still compare one, so the allowance cannot rot);
# empty since issue 27 connected config / objectives to scorer_spec.
PENDING: set[str] = set()


def _scorer_name_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):  # ==, !=, in, not in: `scorer == "x"`, `scorer in ("x", "y")`
            continue
        parts = [sub for side in (node.left, *node.comparators) for sub in ast.walk(side)]
        named = {p.value for p in parts if isinstance(p, ast.Constant) and p.value in SCORERS}
        mentions = ({p.id for p in parts if isinstance(p, ast.Name)} | {p.attr for p in parts if isinstance(p, ast.Attribute)}
                    | {p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)})
        if named and not mentions & NOT_SCORERS:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_scorer_name_is_compared_outside_sftgo_scorers():
    root = Path(sftgo.__file__).parent
    found, pending = [], {}
    for path in sorted(root.rglob("*.py")):
        top = path.relative_to(root).parts[0].removesuffix(".py")
        if top == "scorers":
            continue
        hits = _scorer_name_comparisons(path)
        (pending.setdefault(top, []) if top in PENDING else found).extend(hits)
    assert not found, "compare scorer names through sftgo.scorers.scorer_spec(name), not by name:\n" + "\n".join(found)
    assert set(PENDING) <= {k for k, v in pending.items() if v}, "a PENDING module compares no scorer name now: drop it"


def test_heldout_with_a_reference_scorer_needs_the_runs_reference():
    from sftgo.config import ConfigError
    from sftgo.evaluation.heldout import heldout_config

    with pytest.raises(ConfigError, match="held-out group losses with --scorer reference need the run's ref_model"):
        heldout_config({"objective": "sft-go"}, scorer="reference")
    assert heldout_config({"objective": "sft-go", "ref_model_name_or_path": "initial"}, scorer="reference").scorer \
        == "reference"


def test_heldout_of_a_dataset_scope_run_refuses_another_scorer_or_eta():
    """--group_scope dataset: the run's recorded threshold is a cut of its own scorer's scores at its own eta, so a
    held-out evaluation with another --scorer or --percentile is refused, not silently cut at the old threshold."""
    from sftgo.config import ConfigError
    from sftgo.evaluation.heldout import heldout_config

    run = {"objective": "sft-go", "group_scope": "dataset", "scorer": "tfidf", "percentile": 70.0,
           "group_threshold": 1.25}
    for over in ({"scorer": "frequency"}, {"percentile": 50.0}):
        with pytest.raises(ConfigError, match="group_threshold 1.25"):
            heldout_config(run, **over)
    cfg = heldout_config(run, scorer="tfidf", percentile=70.0)  # the run's own: kept, with its threshold
    assert (cfg.group_scope, cfg.group_threshold, cfg.scorer) == ("dataset", 1.25, "tfidf")
    assert heldout_config({**run, "group_scope": "sequence", "group_threshold": None}, scorer="frequency").scorer \
        == "frequency"
