"""The sweep's pure parts: a run's status from its directory, the local slots' environments, the SLURM options as
sbatch lines, option errors, and the sweep lock; the executors' one interface (a new executor, defined here, run
through the sweep's processing loop)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

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


# ------------------------------------------------------------------------------------------------------ executors


def test_every_executor_implements_the_interface():
    """Each entry of EXECUTORS is a complete Executor: no abstract method left, the interface's signatures, a help
    phrase (shown by `sftgo sweep --help`), and what the sweep says when --detach is refused or an interrupted sweep
    leaves jobs running."""
    import inspect

    from sftgo.sweep import build_parser
    from sftgo.sweep.executors import EXECUTORS, Executor

    assert EXECUTORS and list(EXECUTORS) == [k.lower() for k in EXECUTORS]
    methods = [n for n, f in vars(Executor).items() if callable(getattr(Executor, n)) and not n.startswith("_")]
    assert {"submit", "poll", "attach", "wait", "interrupt", "from_spec", "run_states", "check_spec"} <= set(methods)
    help_ = next(a.help for a in build_parser()._actions if "--executor" in a.option_strings)
    for name, kind in EXECUTORS.items():
        assert issubclass(kind, Executor) and not inspect.isabstract(kind), name
        for m in methods:
            assert inspect.signature(getattr(kind, m)).parameters.keys() == \
                inspect.signature(getattr(Executor, m)).parameters.keys(), (name, m)
        assert kind.help and (f"{name}: {kind.help}" in help_ or f"{name} (default): {kind.help}" in help_), name
        assert kind.interrupted_note if kind.detachable else kind.why_not_detachable, name


def test_no_executor_name_is_compared_outside_its_module():
    """The sweep (core, spec, CLI) never branches on an executor's name: what differs lives in the executor."""
    import ast
    from pathlib import Path

    import sftgo.sweep
    from sftgo.sweep.executors import EXECUTORS

    root = Path(sftgo.sweep.__file__).parent
    found = []
    for f in sorted(root.glob("*.py")):  # the executors/ package holds the executors themselves
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Compare):
                consts = {c.value for side in [node.left, *node.comparators] for c in ast.walk(side)
                          if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                found += [f"{f.name}:{node.lineno} {n}" for n in consts & set(EXECUTORS)]
    assert not found, found


def _fake_executor():
    """A new executor as a newcomer would write it: a scheduler in a class attribute (its jobs outlive the sweep
    process, like SLURM's). A job shows as running at its first poll and ends at the second, having trained its run
    (a summary.json) unless its run is in ``fail`` (then it ends without one, once)."""
    from sftgo.sweep.executors import Event, Executor

    class FakeExecutor(Executor):
        help = "jobs of a fake scheduler"
        detachable = True
        interrupted_note = "the fake jobs keep running"
        held: dict = {}  # job id -> [work, polls seen]
        submitted: list = []  # run names, one per submission
        fail: set = set()

        @classmethod
        def from_spec(cls, spec, out, poll_s):
            return cls()

        def submit(self, works):
            ids = []
            for w in works:
                self.submitted.append(w.name)
                ids.append(f"f{len(self.submitted)}")
                self.held[ids[-1]] = [w, 0]
            return ids

        def attach(self, records):
            return {run: "queued" for run, e in records.items() if e.get("job_id") in self.held}

        def poll(self, jobs):
            out = []
            for run, jid in jobs.items():
                job = self.held[jid]
                job[1] += 1
                if job[1] == 1:
                    out.append(Event(run, "state", {"state": "running"}))
                    continue
                del self.held[jid]
                if run in self.fail:
                    self.fail.discard(run)
                else:
                    run_dir = Path(job[0].run_dir)
                    run_dir.mkdir(parents=True, exist_ok=True)
                    (run_dir / "summary.json").write_text(json.dumps({"steps": 3, "stopped_early": False}))
                out.append(Event(run, "done", {"ok": None, "job_log": f"fake/{jid}"}))
            return out

        def wait(self):
            pass

        def label(self, job_id):
            return f"fake job {job_id}"

    return FakeExecutor


def test_a_new_executor_is_one_class_and_one_dict_entry(tmp_path, monkeypatch, capsys):
    """An executor defined here and added to EXECUTORS (nothing else) runs a sweep through the real processing loop:
    `--executor fake` is accepted, --detach submits and returns, the same command attaches to the jobs instead of
    submitting them again and polls them to their end (one run trained, one job that ended without training its run:
    failed), and once more resubmits only the failed run."""
    from sftgo.cli import main
    from sftgo.sweep import sweep_status
    from sftgo.sweep.executors import EXECUTORS

    fake = _fake_executor()
    monkeypatch.setitem(EXECUTORS, "fake", fake)
    out = tmp_path / "sw"
    cmd = ["sweep", "--grid", "percentile=70,90", "--executor", "fake", "--output_dir", str(out), "--poll_s", "0"]
    runs = ["sft-go_tfidf_p70_s1", "sft-go_tfidf_p90_s1"]
    fake.fail.add(runs[1])

    def records():
        return {r["name"]: r for r in json.loads((out / "sweep.json").read_text())["runs"]}

    assert main([*cmd, "--detach"]) == 0
    said = capsys.readouterr().out
    assert fake.submitted == runs and set(fake.held) == {"f1", "f2"}
    for i, run in enumerate(runs, 1):
        assert f"{run}: submitted as fake job f{i}" in said, said
        assert records()[run]["job_id"] == f"f{i}" and records()[run]["state"] == "queued"
    assert "2 jobs submitted, 0 already queued or running; detached" in said
    assert {r["name"]: (r["state"], r["job_id"]) for r in sweep_status(out)} == {
        runs[0]: ("pending", "f1"), runs[1]: ("pending", "f2")}

    # Run again: attached to both jobs, nothing submitted; polled until both ended.
    assert main(cmd) == 1
    said = capsys.readouterr().out
    assert fake.submitted == runs and not fake.held
    for i, run in enumerate(runs, 1):
        assert f"{run}: attached to fake job f{i} (queued), not submitted again" in said, said
        assert f"{run}: running (fake job f{i})" in said, said
    assert f"{runs[0]}: done (fake job f1)" in said
    assert f"{runs[1]}: fake job f2 ended without finishing the run; job log fake/f2" in said
    assert {n: (r["state"], r["job_id"], r["attempts"]) for n, r in records().items()} == {
        runs[0]: ("complete", "f1", 1), runs[1]: ("failed", "f2", 1)}
    assert {r["name"]: r["state"] for r in sweep_status(out)} == {runs[0]: "done", runs[1]: "failed"}

    # Once more: the complete run is skipped, only the failed one is submitted again, and now trains.
    assert main(cmd) == 0
    said = capsys.readouterr().out
    assert fake.submitted == [*runs, runs[1]]
    assert f"{runs[0]}: complete, skipped" in said and f"{runs[1]}: submitted as fake job f3" in said
    assert {n: (r["state"], r["job_id"], r["attempts"]) for n, r in records().items()} == {
        runs[0]: ("complete", "f1", 1), runs[1]: ("complete", "f3", 2)}
    assert {r["name"]: r["state"] for r in sweep_status(out)} == {runs[0]: "done", runs[1]: "done"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_an_interrupted_local_sweep_records_its_runs_interrupted(tmp_path, capsys):
    """SIGTERM while two local slots train: the sweep stops both children and records the runs as interrupted (what
    --status shows and the same command resumes), not as failed by the exit code of the child it stopped."""
    import threading
    import time

    from sftgo.cli import main
    from sftgo.sweep import sweep_status
    from sftgo.sweep.work import pid_alive

    out = tmp_path / "sw"
    sleeper = f"{sys.executable} -c 'import time; time.sleep(120)'"  # stands in for `sftgo train`
    pids = []

    def stop_when_both_train():
        deadline = time.time() + 120
        while time.time() < deadline and len(pids) < 2:
            time.sleep(0.05)
            try:
                runs = json.loads((out / "sweep.json").read_text())["runs"]
            except (OSError, ValueError, KeyError):
                continue
            pids[:] = [r["pid"] for r in runs if r.get("state") == "training" and r.get("pid")]
        os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=stop_when_both_train, daemon=True)
    t.start()
    rc = main(["sweep", "--grid", "percentile=70,90", "--slots", "2", "--gpus_per_run", "0", "--launcher", sleeper,
               "--output_dir", str(out)])
    t.join()
    assert rc == 130 and len(pids) == 2, capsys.readouterr()
    assert not any(pid_alive(p) for p in pids)
    assert {r["state"] for r in json.loads((out / "sweep.json").read_text())["runs"]} == {"interrupted"}
    assert {r["state"] for r in sweep_status(out)} == {"interrupted"}
