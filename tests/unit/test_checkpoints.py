"""Which checkpoint a resume takes, and which ones rotation deletes (sftgo.checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sftgo.checkpoints import (COMPLETE_MARKER, CompleteCheckpointCallback, NoCompleteCheckpoint, TRAINER_STATE,
                               last_complete_checkpoint, resolve_resume, rotate_checkpoints)


def _ckpt(out, step, complete=True):
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_text("w")
    (d / TRAINER_STATE).write_text("{}")
    if complete:
        (d / COMPLETE_MARKER).write_text(json.dumps({"step": step}))
    return d


def test_newest_complete_checkpoint_by_step_number_not_by_name(tmp_path):
    # "checkpoint-9" > "checkpoint-10" as strings: a name sort would resume 1 step back (and 91 steps back at 100).
    _ckpt(tmp_path, 9)
    _ckpt(tmp_path, 10)
    _ckpt(tmp_path, 2)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert resolve_resume(tmp_path, "last") == str(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-10" / COMPLETE_MARKER).unlink()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-9")


def test_resume_with_only_incomplete_checkpoints_is_an_error_naming_them(tmp_path):
    assert resolve_resume(tmp_path, "true") is None  # no checkpoint folder at all: a first launch starts at step 0
    _ckpt(tmp_path, 4, complete=False)
    _ckpt(tmp_path, 10, complete=False)
    with pytest.raises(NoCompleteCheckpoint) as e:
        resolve_resume(tmp_path, "true")
    msg = str(e.value)
    assert "checkpoint-4, checkpoint-10" in msg and "--resume_from_checkpoint false" in msg and "\n" not in msg


def test_rotation_keeps_the_newest_complete_ones_and_never_a_newer_leg(tmp_path):
    for s, done in ((2, True), (4, True), (6, False), (8, True), (10, True), (12, True)):
        _ckpt(tmp_path, s, done)
    deleted = rotate_checkpoints(tmp_path, keep=2, newest_step=10)
    assert sorted(p.name for p in deleted) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    # checkpoint-8: the other kept complete one; checkpoint-12 (newer than the one just marked) is not touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-12", "checkpoint-8"]
    rotate_checkpoints(tmp_path, keep=1, newest_step=10, protect=[str(tmp_path / "checkpoint-8")])  # best model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-12", "checkpoint-8"]
    rotate_checkpoints(tmp_path, keep=1, newest_step=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-12"]


def test_marker_refused_while_a_required_file_is_missing(tmp_path):
    d = _ckpt(tmp_path, 3, complete=False)
    args = SimpleNamespace(output_dir=str(tmp_path), save_total_limit=None)
    state = SimpleNamespace(is_world_process_zero=True, global_step=3, best_model_checkpoint=None)
    cb = CompleteCheckpointCallback(required=("sftgo_counters.json",))
    with pytest.raises(RuntimeError, match="sftgo_counters.json"):
        cb.on_save(args, state, None)
    assert not (d / COMPLETE_MARKER).exists()
    (d / "sftgo_counters.json").write_text("{}")
    cb.on_save(args, state, None)
    assert (d / COMPLETE_MARKER).exists()


def test_keep_checkpoints_none_last_all(tmp_path):
    from sftgo.checkpoints import apply_keep_checkpoints

    def run(name):
        out = tmp_path / name
        for s, done in ((2, True), (4, True), (6, False)):  # checkpoint-6: a leg killed while saving it
            _ckpt(out, s, done)
        (out / "final").mkdir()
        return out

    out = run("all")
    assert apply_keep_checkpoints(out, "all") == []
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "checkpoint-4", "checkpoint-6", "final"]
    out = run("last")
    assert [p.name for p in apply_keep_checkpoints(out, "last")] == ["checkpoint-2", "checkpoint-6"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-4", "final"]  # the newest *complete* one
    out = run("none")
    assert [p.name for p in apply_keep_checkpoints(out, "none")] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert sorted(p.name for p in out.iterdir()) == ["final"]


def test_keep_checkpoints_killed_mid_deletion_never_leaves_a_gutted_checkpoint_that_reads_complete(tmp_path, monkeypatch):
    """A kill while a checkpoint's files are being deleted: no checkpoint-N folder may read complete without its
    weights (a resume would load it), and the next pass removes what is left."""
    import shutil

    import sftgo.checkpoints as ck

    for s in (2, 4):
        _ckpt(tmp_path, s)
    real_rmtree = shutil.rmtree

    class Killed(BaseException):
        pass

    def killed_rmtree(path, *a, **kw):  # deletes the weights, then the process dies
        path = Path(path)
        if (path / "model.safetensors").exists():
            (path / "model.safetensors").unlink()
            raise Killed
        real_rmtree(path, *a, **kw)

    monkeypatch.setattr(ck.shutil, "rmtree", killed_rmtree)
    with pytest.raises(Killed):
        ck.apply_keep_checkpoints(tmp_path, "last")
    for _, p in ck.checkpoint_folders(tmp_path):
        assert not ck.is_complete(p) or (p / "model.safetensors").exists(), p
    assert resolve_resume(tmp_path, "last") == str(tmp_path / "checkpoint-4")
    monkeypatch.setattr(ck.shutil, "rmtree", real_rmtree)
    ck.apply_keep_checkpoints(tmp_path, "last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]


def test_no_checkpoint_at_the_last_step_unless_save_steps_or_a_later_callback_asks():
    """transformers' DefaultFlowCallback saves at the last step whatever save_steps says; SaveOnlyWhenAsked (after it)
    takes that back, but not a save of save_steps, of --stop_after_steps (a later callback) or for the best model."""
    from transformers.trainer_callback import DefaultFlowCallback, TrainerControl
    from transformers.trainer_utils import IntervalStrategy, SaveStrategy

    from sftgo.checkpoints import SaveOnlyWhenAsked
    from sftgo.pipeline import StopAfterSteps

    def saves(step, max_steps=3, save_steps=100, best=False, stop_after=None, keep="none"):
        args = SimpleNamespace(logging_first_step=False, logging_strategy=IntervalStrategy.STEPS,
                               eval_strategy=IntervalStrategy.NO, save_strategy=SaveStrategy.STEPS, eval_delay=0,
                               load_best_model_at_end=best, keep_checkpoints=keep)
        state = SimpleNamespace(global_step=step, max_steps=max_steps, save_steps=save_steps, logging_steps=1,
                                eval_steps=1)
        control = TrainerControl()
        for cb in [DefaultFlowCallback(), SaveOnlyWhenAsked()] + ([StopAfterSteps(stop_after)] if stop_after else []):
            control = cb.on_step_end(args, state, control) or control
        return control.should_save

    assert not saves(3)  # the last step, save_steps past the run
    assert [saves(s, save_steps=2) for s in (1, 2, 3)] == [False, True, False]
    assert saves(4, max_steps=4, save_steps=2)  # the last step is also a save_steps step
    assert saves(2, stop_after=2) and saves(3, stop_after=3)
    assert saves(3, best=True)
    assert saves(3, keep="last") and saves(3, keep="all")  # kept checkpoints: the last step's is the one to continue
    assert not saves(2, keep="last")


class _Killed(BaseException):
    """The process dying in the middle of a write."""


def test_a_kill_while_writing_the_marker_never_leaves_a_checkpoint_that_reads_as_complete(tmp_path, monkeypatch):
    # Every write in sftgo.checkpoints stops half-way (the first half of the text is on disk, then the process dies):
    # the marker must go to a temporary name first and be renamed, so a torn one never carries the marker's name.
    import builtins
    import pathlib

    from sftgo import checkpoints

    builtins_open = builtins.open
    _ckpt(tmp_path, 2)
    d = _ckpt(tmp_path, 3, complete=False)

    def torn_write_text(self, data, *a, **k):
        with builtins_open(self, "w") as f:
            f.write(data[: len(data) // 2])
        raise _Killed

    class TornFile:
        def __init__(self, path, mode="r", *a, **k):
            self.f = builtins_open(path, mode, *a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise _Killed

    monkeypatch.setattr(pathlib.Path, "write_text", torn_write_text)
    monkeypatch.setattr(checkpoints, "open", lambda p, mode="r", *a, **k: TornFile(p, mode, *a, **k)
                        if "w" in mode else builtins_open(p, mode, *a, **k), raising=False)
    args = SimpleNamespace(output_dir=str(tmp_path), save_total_limit=1)
    state = SimpleNamespace(is_world_process_zero=True, global_step=3, best_model_checkpoint=None)
    with pytest.raises(_Killed):
        CompleteCheckpointCallback().on_save(args, state, None)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")  # not the torn checkpoint-3
    assert (tmp_path / "checkpoint-2").is_dir()  # nor rotated away on its account
    monkeypatch.undo()
    CompleteCheckpointCallback().on_save(args, state, None)  # the next save of step 3 marks it
    assert last_complete_checkpoint(tmp_path) == str(d)
    assert json.loads((d / COMPLETE_MARKER).read_text()) == {"step": 3}
