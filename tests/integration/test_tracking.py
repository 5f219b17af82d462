"""Experiment tracking: TensorBoard is the default tracker when installed, and everything sftgo logs (group losses,
lam, diagnostics) reaches the trackers, not only metrics.jsonl."""

from __future__ import annotations

import pytest

from sftgo.config import SFTGoConfig
from tests.integration.test_train import _records, _train

pytest.importorskip("tensorboard")


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((run_dir / "runs").rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {run_dir / 'runs'}"
    out = {}
    for f in files:
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def test_report_to_auto_is_tensorboard_when_installed(tmp_path, monkeypatch):
    assert SFTGoConfig(output_dir=str(tmp_path)).report_to == ["tensorboard"]
    import transformers.integrations as integ

    monkeypatch.setattr(integ, "is_tensorboard_available", lambda: False)
    assert SFTGoConfig(output_dir=str(tmp_path)).report_to == []
    assert SFTGoConfig(output_dir=str(tmp_path), report_to="none").report_to == []


def test_group_losses_lam_and_diagnostics_reach_tensorboard(tmp_path, tiny_model_dir, alpaca_file):
    out = _train(tmp_path, tiny_model_dir, alpaca_file, "--objective", "sft-go", "--lam", "0.9", "--lam_min", "0.1",
                 "--max_steps", "3", "--per_device_train_batch_size", "2")
    records = _records(out)
    tb = _scalars(out)
    keys = ["loss", "loss_ce", "loss_important", "loss_unimportant", "frac_important", "lam", "mean_p", "tokens"]
    for r in records:
        for k in keys:
            assert f"train/{k}" in tb, f"{k} missing from TensorBoard (tags: {sorted(tb)})"
            assert tb[f"train/{k}"][r["step"]] == pytest.approx(r[k], rel=1e-6), (k, r["step"])
    assert len({round(r["lam"], 6) for r in records}) == 3  # the decaying schedule, step by step
