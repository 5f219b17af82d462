"""Channels: the vocabulary (order, the --max_channels cap, held-out-only channels), the channel column, and the
report's per-channel figure (drawn only for runs with channels)."""

from __future__ import annotations

import json
import logging

import numpy as np

from sftgo.data import TokenizedData, add_channels, channel_tokens, channel_vocabulary


def _data(channels, lengths):
    """TokenizedData with the given channel per example and that many supervised tokens each."""
    labels = [[-100] + [5] * n for n in lengths]
    return TokenizedData([[1] * len(x) for x in labels], labels, [""] * len(labels),
                         [np.zeros((len(x), 2), dtype=np.int64) for x in labels], channels=list(channels))


def test_vocabulary_order_and_cap(caplog):
    counts = {"b": 5, "a": 5, "c": 9, "d": 1, "e": 2}
    assert channel_vocabulary(counts, 32) == ["c", "a", "b", "e", "d"]  # by tokens, ties by name
    assert channel_vocabulary(counts, 5) == ["c", "a", "b", "e", "d"]  # exactly at the cap: nothing merged
    with caplog.at_level(logging.WARNING):
        names = channel_vocabulary(counts, 3)
    assert names == ["c", "a", "other"]
    assert "5, more than --max_channels 3" in caplog.text
    assert "3 channel(s) with the fewest supervised tokens (8 tokens in all) are merged into 'other'" in caplog.text
    assert channel_vocabulary({"x": 3, "y": 2, "z": 1}, 2) == ["x", "other"]
    assert channel_vocabulary({"x": 3, "y": 2, "z": 1}, 1) == ["other"]
    # a real channel called 'other' is one of the merged ones; it does not take a kept channel's place
    assert channel_vocabulary({"other": 50, "x": 3, "y": 2}, 2) == ["x", "other"]
    assert channel_vocabulary({"other": 50, "x": 3}, 2) == ["other", "x"]  # within the cap: an ordinary channel


def test_channel_column_train_and_eval_share_ids(caplog):
    train = _data(["web", "math", "web", "code", "tiny", "math", "web"], [4, 6, 4, 3, 1, 6, 4])
    held = _data(["code", "poetry", "web", "tiny", "novel"], [2, 3, 2, 1, 5])
    with caplog.at_level(logging.WARNING):
        names = add_channels(train, held, max_channels=5)
    assert channel_tokens(train) == {"web": 12, "math": 12, "code": 3, "tiny": 1}
    assert names == ["math", "web", "code", "tiny", "other"]  # room for one more id: 'novel' (5) and 'poetry' merged
    ids = lambda d: [sorted(set(c.tolist())) for c in d.columns["channel"]]  # noqa: E731
    assert ids(train) == [[1.0], [0.0], [1.0], [2.0], [3.0], [0.0], [1.0]]
    assert ids(held) == [[2.0], [4.0], [1.0], [3.0], [4.0]]
    assert all(len(c) == n for c, n in zip(held.columns["channel"], held.supervised_lengths()))
    assert "merged into 'other'" in caplog.text
    names = add_channels(_data(["a", "b"], [1, 2]), _data(["c", "a"], [3, 1]), max_channels=32)
    assert names == ["b", "a", "c"]  # held-out-only channels appended after the training ones
    none = _data(["a"], [1])
    none.channels = None
    assert add_channels(none, None) == [] and "channel" not in none.columns  # no channels: no column


def _records(channels):
    out = []
    for s in range(1, 13):
        r = {"step": s, "loss": 2.0 - s / 40, "loss_ce": 2.0, "loss_important": 3.0, "loss_unimportant": 1.5}
        for i, c in enumerate(channels):
            r[f"loss/{c}"] = 2.0 + i / 3 - s / 50
            if s % 4 == 0:
                r[f"eval_loss/{c}"] = 2.1 + i / 3
        out.append(r)
    return out


def test_report_draws_a_channel_figure_only_for_runs_with_channels(tmp_path):
    from sftgo.report import build_report, report_run
    from tests.unit.test_report import make_run

    for name, channels in (("with", ["math", "code", "chat"]), ("without", [])):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(channels)))
        report_run(d)
        assert (d / "loss_groups.png").exists()
        assert (d / "loss_channels.png").exists() == bool(channels), name
    assert (tmp_path / "with" / "loss_channels.png").stat().st_size > 5000
    # the multi-run report: a per-channel figure when some run logged channels, none otherwise
    plain = make_run(tmp_path / "sw", "plain", 1)
    rep = build_report([plain], tmp_path / "r1")
    assert not any("channel" in p.name for p in rep["figures"])
    chan = make_run(tmp_path / "sw", "chan", 1, objective="sft")
    (chan / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(["math", "code"])))
    rep = build_report([plain, chan], tmp_path / "r2")
    assert [p.name for p in rep["figures"] if "channel" in p.name] == ["fig_channel_losses.png"]
    assert "Training loss per channel" in rep["md"].read_text()
