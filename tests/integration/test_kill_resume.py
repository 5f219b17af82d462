"""A real `sftgo train` process killed with SIGKILL at several moments, a save among them, resumes from the newest
complete checkpoint and ends with the same losses and weights as an uninterrupted run; metrics.jsonl holds every step
exactly once.

The kill lands at a chosen moment because the child process runs sftgo through a small launcher that wraps one
Trainer/sftgo method and sends SIGKILL to its own process there (nothing in sftgo knows about it). The runs that are
not killed (the uninterrupted one, the last resume) train in the test's own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from sftgo.checkpoints import COMPLETE_MARKER
from sftgo.cli import main
from sftgo.trainer import COUNTERS_FILE, STATE_FILE

LAUNCHER = textwrap.dedent('''
    import os, signal, sys
    from sftgo import startup_gc
    startup_gc.pause()  # as the sftgo process starts a run: no garbage collection until its first step
    where, _, at = os.environ.get("KILL_AT", "never:0").partition(":")
    at = int(at)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    import transformers
    import sftgo.checkpoints as ck
    import sftgo.trainer as tr

    if where == "after_log":  # between checkpoints: step `at` is logged, its checkpoint (if any) not yet written
        orig_log = tr.MetricsJsonl.on_log
        def on_log(self, args, state, control, logs=None, **kw):
            orig_log(self, args, state, control, logs=logs, **kw)
            if state.global_step == at:
                die()
        tr.MetricsJsonl.on_log = on_log
    elif where == "in_save":  # weights and optimizer written; RNG state and trainer_state.json not yet
        orig_rng = transformers.Trainer._save_rng_state
        def save_rng(self, output_dir):
            if self.state.global_step == at:
                die()
            return orig_rng(self, output_dir)
        transformers.Trainer._save_rng_state = save_rng
    elif where == "before_marker":  # every Trainer file written, the completion marker not yet
        orig_mark = ck.CompleteCheckpointCallback.on_save
        def on_save(self, args, state, control, **kw):
            if state.global_step == at:
                die()
            return orig_mark(self, args, state, control, **kw)
        ck.CompleteCheckpointCallback.on_save = on_save
    elif where == "after_rmtree":  # right after checkpoint-<at> was deleted (rotation under save_total_limit)
        import shutil
        orig_rmtree = shutil.rmtree
        def rmtree(path, *a, **kw):
            orig_rmtree(path, *a, **kw)
            if os.path.basename(os.path.normpath(str(path))) == f"checkpoint-{at}":
                die()
        shutil.rmtree = rmtree
    elif where == "after_marker":  # right after checkpoint-<at> got its completion marker
        orig_replace = os.replace
        def replace(src, dst, *a, **kw):
            orig_replace(src, dst, *a, **kw)
            d = os.path.dirname(str(dst))
            if os.path.basename(str(dst)) == ck.COMPLETE_MARKER and os.path.basename(d) == f"checkpoint-{at}":
                die()
        os.replace = replace

    from sftgo.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def _train_args(tmp_path, model_dir, data, out, resume=None, extra=()):
    args = ["train", "--model_name_or_path", model_dir, "--dataset", data,
            "--output_dir", str(out), "--objective", "sft-go-dro", "--dro_eta", "0.5", "--lam_min", "0",
            "--max_steps", "8", "--save_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-3", "--max_length", "64", "--score_cache_dir", str(tmp_path / "cache"),
            "--disable_tqdm", "true", "--use_cpu", "true"]
    if resume:
        args += ["--resume_from_checkpoint", resume]
    return args + list(extra)


def _run(tmp_path, model_dir, data, out, kill_at=None, resume=None, extra=()):
    """A `sftgo train` process (through LAUNCHER), killed at ``kill_at``."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "KILL_AT": kill_at or "never:0", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(launcher), *_train_args(tmp_path, model_dir, data, out, resume, extra)],
                          env=env, capture_output=True, text=True, timeout=300)


def _run_here(tmp_path, model_dir, data, out, resume=None, extra=()):
    """The same training, not killed, in this process (`sftgo train` is sftgo.cli.main): no interpreter and
    transformers import per run. Its exit status."""
    return main(_train_args(tmp_path, model_dir, data, out, resume, extra))


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir):
    """The uninterrupted run both tests compare with (checkpoint rotation does not change what is trained)."""
    from tests.conftest import EXAMPLES

    tmp = tmp_path_factory.mktemp("full")
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES))
    assert _run_here(tmp, tiny_model_dir, str(data), tmp / "full") == 0
    return tmp / "full"


def _same_as_full(full, run):
    a, b = _records(full), _records(run)
    assert [x["step"] for x in b] == list(range(1, 9))  # every step exactly once
    for x, y in zip(a, b):
        for k in ("loss", "loss_ce", "loss_important", "dro_q0", "lam", "learning_rate"):
            assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-9), (x["step"], k)
    wa, wb = load_file(full / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-7)


def test_sigkill_at_any_moment_then_resume_matches_uninterrupted_run(tmp_path, tiny_model_dir, alpaca_file, full_run,
                                                                    caplog):
    full = full_run

    run = tmp_path / "killed"
    # 1. killed between checkpoints, right after step 3 was logged
    r = _run(tmp_path, tiny_model_dir, alpaca_file, run, kill_at="after_log:3")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert [x["step"] for x in _records(run)] == [1, 2, 3]
    # 2. resumed, then killed inside the save of step 4: a partial checkpoint-4 without trainer_state.json
    r = _run(tmp_path, tiny_model_dir, alpaca_file, run, kill_at="in_save:4", resume="true")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    part = run / "checkpoint-4"
    assert part.is_dir() and any(part.glob("*.safetensors")) and not (part / "trainer_state.json").exists()
    assert not (part / COMPLETE_MARKER).exists()
    # 3. resumed with "last": checkpoint-4 is skipped with a warning (checkpoint-2 is used); killed at step 6 once the
    #    Trainer wrote every file but before the completion marker
    r = _run(tmp_path, tiny_model_dir, alpaca_file, run, kill_at="before_marker:6", resume="last")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert "skipping" in r.stderr and "checkpoint-4: incomplete" in r.stderr
    assert (run / "checkpoint-6" / "trainer_state.json").exists() and not (run / "checkpoint-6" / COMPLETE_MARKER).exists()
    assert (run / "checkpoint-4" / COMPLETE_MARKER).exists()  # saved again, completely, by the resumed run
    # 4. resumed to the end from checkpoint-4 (checkpoint-6 skipped)
    assert _run_here(tmp_path, tiny_model_dir, alpaca_file, run, resume="true") == 0
    assert "checkpoint-6: incomplete" in caplog.text
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-4")
    # The summary counts the whole run: its tokens equal the uninterrupted run's, and its times include the legs that
    # trained steps 1-4 (the first process to checkpoint-2, the third from checkpoint-2 to checkpoint-4).
    whole = json.loads((full / "summary.json").read_text())
    assert summary["supervised_tokens"] == whole["supervised_tokens"] > summary["supervised_tokens_this_leg"] > 0
    assert summary["legs"] == 3 and whole["legs"] == 1 and "wall_time_s_this_leg" not in whole
    assert summary["train_time_s"] > summary["train_time_s_this_leg"] and summary["wall_time_s"] > summary["wall_time_s_this_leg"]

    _same_as_full(full, run)


def test_killed_right_after_rotation_with_save_total_limit_1_resumes_from_a_complete_checkpoint(
        tmp_path, tiny_model_dir, alpaca_file, full_run):
    """transformers deletes the older checkpoints before the new one is marked complete; sftgo rotates only after the
    marker. Killed right after checkpoint-2 is deleted (while checkpoint-4 is saved, keeping 1), the run must still
    have a complete checkpoint, and the resumed run must equal the uninterrupted one."""
    run = tmp_path / "killed"
    keep1 = ["--save_total_limit", "1", "--keep_checkpoints", "last"]
    r = _run(tmp_path, tiny_model_dir, alpaca_file, run, kill_at="after_rmtree:2", extra=keep1)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert not (run / "checkpoint-2").exists()
    assert (run / "checkpoint-4" / COMPLETE_MARKER).exists()
    # resumed from checkpoint-4, killed right after checkpoint-6 was marked: sftgo's own files are already in it
    r = _run(tmp_path, tiny_model_dir, alpaca_file, run, kill_at="after_marker:6", resume="true", extra=keep1)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert {COUNTERS_FILE, STATE_FILE, "trainer_state.json"} <= {p.name for p in (run / "checkpoint-6").iterdir()}
    assert _run_here(tmp_path, tiny_model_dir, alpaca_file, run, resume="true", extra=keep1) == 0
    assert json.loads((run / "summary.json").read_text())["resumed_from"].endswith("checkpoint-6")
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-8"]
    _same_as_full(full_run, run)
