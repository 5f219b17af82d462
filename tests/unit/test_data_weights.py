"""Weights from the data (``weight`` per example, ``loss_weight`` per assistant message): validation, weight-0 tokens
unsupervised, the ``loss_weight`` column on its tokens through truncation, the cache and every batch layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sftgo.data import (IGNORE_INDEX, Collator, DataError, Examples, TokenDataset, load_examples, tokenize_cached,
                        tokenize_examples)
from sftgo.tokens import TokenBatch


def _conv(i, weights=(None, None), weight=None):
    """A two-turn chat example; distinct text per i. ``weights``: loss_weight of the two assistant messages."""
    msgs = [{"role": "user", "content": f"Question {i}: the capital of France?"},
            {"role": "assistant", "content": f"The capital of France is Paris {i}."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": f"Rome, {i} times over."}]
    for j, w in zip((1, 3), weights):
        if w is not None:
            msgs[j]["loss_weight"] = w
    rec = {"messages": msgs}
    if weight is not None:
        rec["weight"] = weight
    return rec


def _load(tmp_path, records, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return load_examples(str(p))


def _decode_groups(tok, tb: TokenBatch, key):
    """{(example, weight): decoded text of those supervised tokens, in order}."""
    groups: dict = {}
    for t, e, w in zip(tb.targets.tolist(), tb.example.tolist(), tb.columns[key].tolist()):
        groups.setdefault((e, round(w, 4)), []).append(t)
    return {k: tok.decode(v) for k, v in groups.items()}


def test_message_loss_weight_zero_removes_exactly_that_message(tmp_path, chat_tokenizer):
    plain = tokenize_examples(_load(tmp_path, [_conv(0)], "a.jsonl"), chat_tokenizer, 512)
    data = tokenize_examples(_load(tmp_path, [_conv(0, weights=(0, None))], "b.jsonl"), chat_tokenizer, 512)
    assert data.input_ids == plain.input_ids  # the same tokens; only labels change
    before, after = np.asarray(plain.labels[0]), np.asarray(data.labels[0])
    removed = (before != IGNORE_INDEX) & (after == IGNORE_INDEX)
    assert ((before == after) | removed).all()  # nothing else changed
    # Exactly the first assistant message (and its end-of-turn marker) is gone; the second is supervised as before.
    assert chat_tokenizer.decode(before[removed]) == "The capital of France is Paris 0.<|im_end|>"
    assert chat_tokenizer.decode(after[after != IGNORE_INDEX]) == "Rome, 0 times over.<|im_end|>"
    assert data.columns["loss_weight"][0].tolist() == [1.0] * int((after != IGNORE_INDEX).sum())
    assert "loss_weight" not in plain.columns  # no weight fields: no column (batches as before)
    ones = tokenize_examples(_load(tmp_path, [_conv(0, weight=1), _conv(1)], "c.jsonl"), chat_tokenizer, 512)
    assert ones.labels[0] == plain.labels[0]  # a weight field, even 1 on one example: the column, all ones here
    assert [set(w.tolist()) for w in ones.columns["loss_weight"]] == [{1.0}, {1.0}]


def test_weights_multiply_and_zero_weight_examples_are_skipped(tmp_path, chat_tokenizer):
    ex = _load(tmp_path, [_conv(0, weights=(0.5, 3), weight=2), _conv(1, weight=0), _conv(2, weights=(0, 0)), _conv(3)])
    assert len(ex) == 2 and ex.num_zero_weight == 2 and ex.num_empty == 0 and ex.weighted
    data = tokenize_examples(ex, chat_tokenizer, 512)
    assert data.num_zero_weight == 2
    w = data.columns["loss_weight"]
    assert sorted(set(w[0].tolist())) == [1.0, 6.0] and set(w[1].tolist()) == {1.0}
    with pytest.raises(DataError, match="weight 0"):
        _load(tmp_path, [_conv(1, weight=0)], "z.jsonl")


@pytest.mark.parametrize("layout", ["padded", "packed", "padding_free"])
def test_weights_stay_on_their_tokens_in_every_layout(tmp_path, chat_tokenizer, layout):
    # Distinct examples, each message its own weight: every (example, weight) group of the batch's supervised tokens
    # must decode to exactly that message (a weight shifted by one position would put a message's first token in the
    # prompt's group (weight 0) or the previous message's, or drop its end marker).
    recs = [_conv(i, weights=(1 + i, 0.25 * (i + 1)), weight=[1.0, 3.0, 0.5, 2.0, 1.5][i]) for i in range(5)]
    data = tokenize_examples(_load(tmp_path, recs), chat_tokenizer, 512)
    # A scorer-like column (one value per supervised token: here the token's own id) must line up the same way.
    data.columns["importance"] = [data.supervised(i)[0].astype(np.float32) for i in range(len(data))]
    items = [TokenDataset(data)[i] for i in range(len(data))]
    cap = 2 * max(len(it["input_ids"]) for it in items)
    batch = Collator(chat_tokenizer.pad_token_id, layout=layout, max_length=cap)(items)
    assert batch["loss_weight"].dtype == torch.float32 and batch["loss_weight"].shape == batch["labels"].shape
    assert (batch["loss_weight"][batch["example_index"] == -1] == 0).all()  # padding
    if layout == "packed":
        assert batch["input_ids"].shape[0] < len(items)
    tb = TokenBatch.from_inputs(batch)
    got = _decode_groups(chat_tokenizer, tb, "loss_weight")
    want = {}
    for i, r in enumerate(recs):
        for j in (1, 3):
            want[(i, round(r["weight"] * r["messages"][j]["loss_weight"], 4))] = r["messages"][j]["content"] + "<|im_end|>"
    assert got == want
    assert len(tb) == sum(len(w) for w in data.columns["loss_weight"])
    assert torch.equal(tb.columns["importance"], tb.targets.float())


def test_truncation_cuts_weights_with_their_tokens(tmp_path, chat_tokenizer):
    recs = [_conv(7, weights=(2, 5), weight=1.5)]
    full = tokenize_examples(_load(tmp_path, recs), chat_tokenizer, 4096)
    n = len(full.input_ids[0])
    # Cut inside the second response: its first tokens stay, with their weight.
    lab = np.asarray(full.labels[0])
    second = np.flatnonzero(lab != IGNORE_INDEX)[-4]
    cut = tokenize_examples(_load(tmp_path, recs, "c.jsonl"), chat_tokenizer, int(second) + 1)
    assert len(cut.input_ids[0]) == second + 1 < n
    k = int((np.asarray(cut.labels[0]) != IGNORE_INDEX).sum())
    assert np.array_equal(cut.columns["loss_weight"][0], full.columns["loss_weight"][0][:k])
    assert cut.columns["loss_weight"][0][-1] == 7.5 and cut.columns["loss_weight"][0][0] == 3.0


def test_cache_keeps_weights_and_misses_when_only_a_weight_changes(tmp_path, chat_tokenizer):
    recs = [_conv(0, weights=(2, None)), _conv(1, weight=0.5)]
    cache = tmp_path / "cache"
    first = tokenize_cached(_load(tmp_path, recs), chat_tokenizer, 512, cache_dir=cache)
    hit = tokenize_cached(_load(tmp_path, recs), chat_tokenizer, 512, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1
    for a, b in zip(first.columns["loss_weight"], hit.columns["loss_weight"]):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    recs[1]["weight"] = 0.75  # only a weight changes
    changed = tokenize_cached(_load(tmp_path, recs), chat_tokenizer, 512, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    assert set(changed.columns["loss_weight"][1].tolist()) == {0.75}
    recs[0]["messages"][1]["loss_weight"] = 0  # a message weight to 0: its tokens leave the labels
    zero = tokenize_cached(_load(tmp_path, recs), chat_tokenizer, 512, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 3
    fresh = tokenize_examples(_load(tmp_path, recs), chat_tokenizer, 512)
    assert zero.labels == fresh.labels and zero.labels != first.labels


@pytest.mark.parametrize("value", ['"2"', "true", "NaN", "-1", "Infinity", "[1]"])
def test_bad_example_weight_names_file_line_and_field(tmp_path, value):
    p = tmp_path / "w.jsonl"
    good = json.dumps({"prompt": "a", "completion": "b", "weight": 1})
    p.write_text(good + "\n" + '{"prompt": "a", "completion": "b", "weight": ' + value + "}\n")
    with pytest.raises(DataError) as e:
        load_examples(str(p))
    msg = str(e.value)
    assert f"{p}:2:" in msg and "'weight'" in msg and "finite number >= 0" in msg and "\n" not in msg


def test_bad_message_loss_weight_names_the_message(tmp_path):
    rec = _conv(0, weights=(None, "heavy"))
    p = tmp_path / "m.json"
    p.write_text(json.dumps([_conv(1), rec]))
    with pytest.raises(DataError, match=r"m\.json\[1\]: messages\[3\]\.loss_weight is 'heavy'.*finite number"):
        load_examples(str(p))
    rec = _conv(0)
    rec["messages"][0]["loss_weight"] = 1.0  # on a user message
    p.write_text(json.dumps([rec]))
    with pytest.raises(DataError, match=r"messages\[0\]\.loss_weight is set on a 'user' message; only assistant"):
        load_examples(str(p))


def test_cli_bad_weight_is_one_line(tmp_path, tiny_model_dir, capsys):
    from sftgo.cli import main

    p = tmp_path / "w.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b", "weight": -2}\n')
    assert main(["train", "--model_name_or_path", tiny_model_dir, "--dataset", str(p), "--output_dir",
                 str(tmp_path / "run"), "--max_steps", "1", "--report_to", "none",
                 "--score_cache_dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{p}:2" in err[0] and "'weight'" in err[0]


def test_csv_and_parquet_carry_weights_and_channels(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    c = tmp_path / "d.csv"
    c.write_text('instruction,output,weight,channel\nAdd,"Two, three",2.5,math\nSay hi,Hi,,chat\nBad,x,heavy,math\n')
    with pytest.raises(DataError, match=r"d\.csv:4: field 'weight' is 'heavy'"):
        load_examples(str(c))
    c.write_text('instruction,output,weight,channel\nAdd,"Two, three",2.5,math\nSay hi,Hi,,chat\n')
    ex = load_examples(str(c))
    assert [e.get("weight") for e in ex] == [2.5, None] and [e["channel"] for e in ex] == ["math", "chat"]
    assert ex[0]["messages"][1]["content"] == "Two, three" and ex.weighted
    rows = [_conv(0, weights=(2, None), weight=1.5), _conv(1)]
    rows[0]["channel"], rows[1]["channel"] = None, "web"
    q = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), q)  # columnar: absent fields come back as null = not set
    ex = load_examples(str(q))
    assert ex[0]["weight"] == 1.5 and ex[0]["loss_weights"] == [None, 2.0, None, None] and "weight" not in ex[1]
    assert [e["channel"] for e in ex] == ["default", "web"]  # the example without one: the default channel
