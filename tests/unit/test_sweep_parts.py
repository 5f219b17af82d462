"""The sweep's pure parts: a run's status from its directory, the local slots' environments, the SLURM options as
sbatch lines, option errors, and the sweep lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from sftgo.sweep.executors import sbatch_parameters, slot_envs
from sftgo.sweep.spec import SweepError
from sftgo.sweep.status import run_status, write_eval_record


def _summary(d, **kw):
    (d / "summary.json").write_text(json.dumps({"steps": 6, "stopped_early": False, "wall_time_s": 1.0, **kw}))


def test_run_status_from_the_directory(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    st = run_status(d, "sig")
    assert (st.trained, st.checkpoint, st.evaluated, st.last_step, st.done) == (False, None, False, None, False)
    (d / "checkpoint-2").mkdir()  # killed while saving: no marker, not a checkpoint to resume from
    (d / "checkpoint-1").mkdir()
    (d / "checkpoint-1" / "sftgo_complete.json").write_text("{}")
    (d / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "loss": 1.')  # torn last line
    st = run_status(d, "sig")
    assert st.checkpoint == str(d / "checkpoint-1") and st.last_step == 2 and not st.trained
    _summary(d, steps=3, stopped_early=True)
    assert not run_status(d, "sig").trained and run_status(d, "sig", stop_after=3).trained  # a selection run
    _summary(d)
    assert run_status(d, None).done  # nothing to evaluate
    assert not run_status(d, "sig").evaluated
    write_eval_record(d, "sig")
    assert run_status(d, "sig").done and not run_status(d, "other").evaluated
    _summary(d, wall_time_s=2.0)  # trained again: a new summary.json
    assert not run_status(d, "sig").evaluated


def test_status_orders_checkpoints_by_step_number(tmp_path, capsys):
    # "checkpoint-9" > "checkpoint-10" as strings: a name order would resume one step back and show step 9 as the last.
    from sftgo.sweep import print_status

    d = tmp_path / "run"
    for step in (9, 10):
        (d / f"checkpoint-{step}").mkdir(parents=True)
        (d / f"checkpoint-{step}" / "sftgo_complete.json").write_text(json.dumps({"step": step}))
    st = run_status(d, None)
    assert st.checkpoint == str(d / "checkpoint-10") and st.last_step == 10
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": [{"name": "run", "dir": "run", "state": "interrupted"}]}))
    assert print_status(tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["run", "interrupted", "–", "10"]


def test_slot_envs(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    envs, k = slot_envs(2, None, ["0", "1", "2", "3"], cpus=8)
    assert k == 1 and [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]
    envs, k = slot_envs(2, 2, ["4", "5", "6", "7"], cpus=8)
    assert k == 2 and [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4,5", "6,7"] and envs[0]["OMP_NUM_THREADS"] == "4"
    with pytest.raises(SweepError, match="needs 6 GPUs, 4 visible"):
        slot_envs(3, 2, ["0", "1", "2", "3"], cpus=8)
    envs, k = slot_envs(2, 0, ["0"], cpus=3)  # CPU runs on a GPU machine: hidden from the GPU, 1 thread each
    assert k == 0 and envs == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}] * 2
    envs, _ = slot_envs(4, None, [], cpus=8)
    assert envs == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice wins
    assert slot_envs(2, None, [], cpus=8)[0] == [{}, {}]


def test_slurm_options_become_sbatch_lines(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    p = sbatch_parameters({"partition": "gpu", "time_min": 90, "gpus_per_node": 8, "cpus_per_task": 32,
                           "mem_gb": 1.5, "account": "lab", "qos": "high", "setup": ["module load cuda"]})
    text = _make_sbatch_string(command="python -m x", folder=str(tmp_path), map_count=4, array_parallelism=2,
                               **{k: v for k, v in p.items() if k != "array_parallelism"})
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=32", "#SBATCH --mem=1536M", "#SBATCH --account=lab", "#SBATCH --qos=high",
                 "#SBATCH --requeue", "#SBATCH --array=0-3%2", "module load cuda"):
        assert line in text.splitlines(), (line, text)


def _sweep(*args, tmp_path, capsys):
    from sftgo.cli import main

    try:
        rc = main(["sweep", "--output_dir", str(tmp_path / "sw"), *args])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--slurm_mem_gb", "lots", "--executor", "slurm"], "argument --slurm_mem_gb: invalid float value"),
    (["--slots", "0"], "slots 0: a whole number >= 1"),
    (["--detach"], "--detach needs --executor slurm"),
    (["--executor", "slurm", "--slots", "2"], "--slots is for --executor local"),
    (["--executor", "slurm", "--gpus_per_run", "2"], "with slurm pass --slurm_gpus_per_node K"),
    (["--prune_checkpoints", "--keep_checkpoints", "all"], "prune_checkpoints is keep_checkpoints none, but the runs "
                                                           "are also given keep_checkpoints all: drop one"),
    (["--keep_checkpoints", "some"], "keep_checkpoints 'some': one of none, last, all"),
])
def test_bad_options_are_one_line(args, message, tmp_path, capsys):
    rc, err = _sweep(*args, tmp_path=tmp_path, capsys=capsys)
    assert rc == 2 and message in err and "Traceback" not in err, err


def test_bad_slurm_key_in_a_sweep_file(tmp_path, capsys):
    f = tmp_path / "sweep.yaml"
    f.write_text("grid: {percentile: [70, 90]}\nexecutor: slurm\nslurm: {partiton: gpu}\n")
    rc, err = _sweep(str(f), tmp_path=tmp_path, capsys=capsys)
    assert rc == 2 and f"{f}: slurm.partiton: not a SLURM option" in err, err


def test_what_a_sweep_says_its_runs_keep_of_their_checkpoints():
    from sftgo.sweep.spec import Spec

    assert Spec().keep_checkpoints is None  # sftgo train's default applies; runs found complete are left alone
    assert Spec(prune_checkpoints=True).keep_checkpoints == "none"
    assert Spec(set={"keep_checkpoints": "last"}).keep_checkpoints == "last"
    assert Spec(config={"keep_checkpoints": "last"},
                train_args=["--keep_checkpoints", "none", "--keep_checkpoints=all"]).keep_checkpoints == "all"


def test_sweep_lock(tmp_path):
    from sftgo.sweep.core import SweepLock

    path = tmp_path / ".sweep.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    with SweepLock(path):  # left by a dead process on this host: taken over
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(SweepError, match="another sweep is running"):
            with SweepLock(path):
                pass
    assert not path.exists()


@pytest.mark.parametrize("timed_out", [False, True], ids=["preempted", "timed-out"])
def test_a_preempted_or_timed_out_slurm_job_is_requeued_and_resumes(tmp_path, monkeypatch, timed_out):
    """The signal path of a SLURM job, without SLURM: submitit's own handler of the pre-emption / time-limit signal
    asks the submitted work for its checkpoint, requeues the job with what that returns, and the requeued job runs the
    same work again, which resumes the run from its last complete checkpoint."""
    pytest.importorskip("submitit")
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths

    from sftgo.sweep.work import RunWork

    run = tmp_path / "run"
    (run / "checkpoint-3").mkdir(parents=True)
    (run / "checkpoint-3" / "sftgo_complete.json").write_text('{"step": 3}')
    # A stand-in for `sftgo train`: records its arguments and finishes the run.
    train = ("import json, sys; from pathlib import Path; d = Path(sys.argv[1]); "
             "(d / 'argv.json').write_text(json.dumps(sys.argv[2:])); "
             "(d / 'summary.json').write_text(json.dumps({'steps': 6, 'stopped_early': False}))")
    work = RunWork(name="run", run_dir=str(run), train_cmd=[sys.executable, "-c", train, str(run)], eval_cmd=None,
                   eval_signature=None, stop_after=None, train_log=str(tmp_path / "train.log"),
                   eval_log=str(tmp_path / "eval.log"))
    delayed = DelayedSubmission(work)
    delayed.set_timeout(60, 3)
    paths = JobPaths(tmp_path / "job", job_id="42")
    paths.folder.mkdir()
    requeued = []
    env = type("Env", (), {"global_rank": 0, "_requeue": lambda self, countdown: requeued.append(countdown)})()
    handler = SignalHandler(env, paths, delayed)
    monkeypatch.setattr(handler, "has_timed_out", lambda: timed_out)
    with pytest.raises(SystemExit):  # submitit exits the job once it is requeued
        handler.checkpoint_and_try_requeue(signal.SIGUSR2)
    assert requeued == [3 - timed_out]  # a time-out uses one of the job's time-outs, a pre-emption none
    again = DelayedSubmission.load(paths.submitted_pickle)  # what the requeued job starts with
    assert isinstance(again.function, RunWork) and again.function.run_dir == str(run)
    assert again.result()["ok"]
    assert json.loads((run / "argv.json").read_text()) == ["--resume_from_checkpoint", "last"]
