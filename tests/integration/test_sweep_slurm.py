"""`sftgo sweep --executor slurm` against a real SLURM (the one-node cluster of dev/slurm_local.sh): submissions go
through sbatch (SLURM knows the jobs), --detach returns and the same command attaches instead of submitting again,
--status shows the states, and a job requeued mid-training resumes from the run's last complete checkpoint and ends
with the weights of the same run trained locally without interruption.

Marked `slurm`: run whenever sbatch is installed (the module starts the local cluster when it is not running and we
are root), skipped with the reason elsewhere, and a failure when CI=true and SLURM could not be started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_sweep import write_fake_eval

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).parents[2]


def _node_ready() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s.startswith(("idle", "mix", "alloc", "comp")) for s in out.split())


@pytest.fixture(scope="module")
def slurm():
    ci = os.environ.get("CI", "").lower() == "true"
    why = None
    if not shutil.which("sbatch"):
        why = "SLURM is not installed (no sbatch); dev/slurm_local.sh --install starts a one-node cluster"
    elif not _node_ready():
        if os.geteuid() == 0:
            subprocess.run(["bash", str(ROOT / "dev" / "slurm_local.sh")], timeout=180)
        if not _node_ready():
            why = "SLURM is installed but no node answers (sinfo); dev/slurm_local.sh starts the local cluster"
    if not why:
        partition(True)  # a test stopped while the partition was closed
    if why:
        if ci:
            pytest.fail(f"CI=true and {why}")
        pytest.skip(why)


def _env():
    # One thread per process: the SLURM job and the local reference run compute the same sums in the same order.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _sweep_cmd(out, tiny_model_dir, alpaca_file, cache, *extra):
    return [sys.executable, "-m", "sftgo.cli", "sweep", "--output_dir", str(out), "--model_name_or_path",
            tiny_model_dir, "--dataset", alpaca_file, "--per_device_train_batch_size", "2", "--max_length", "64",
            "--score_cache_dir", str(cache), *extra]


SLURM = ["--executor", "slurm", "--slurm_mem_gb", "1", "--slurm_cpus_per_task", "1", "--poll_s", "1"]


def _runs(sweep_dir: Path) -> dict:
    return {r["name"]: r for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"]}


def partition(up: bool):
    """Opens or closes the default partition: a closed one queues jobs without starting them."""
    name = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30).stdout.split()[0]
    subprocess.run(["scontrol", "update", f"partitionname={name}", f"state={'up' if up else 'down'}"], check=True,
                   timeout=30)


def _scontrol(job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout


def _status(sweep_dir: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "sftgo.cli", "sweep", "--status", str(sweep_dir)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {}
    for line in out.stdout.splitlines()[1:-1]:
        name, state, job, step = line.split()
        rows[name] = (state, job, step)
    return rows


def test_detach_status_attach(slurm, tmp_path, tiny_model_dir, alpaca_file):
    """Two grid points through sbatch with --detach; --status lists them queued with their job ids; the same command
    again attaches to both jobs (nothing submitted twice), waits, and every run ends trained and evaluated (the
    evaluation runs inside the job)."""
    fake_eval = write_fake_eval(tmp_path)
    sweep_dir = tmp_path / "sweep"
    cmd = _sweep_cmd(sweep_dir, tiny_model_dir, alpaca_file, tmp_path / "cache", "--grid", "objective=sft,sft-go",
                     "--eval", "paper", "--eval_cmd", f"{sys.executable} {fake_eval} {{run_dir}} {{tasks}}",
                     "--max_steps", "4", "--save_steps", "2", *SLURM)
    # The partition is closed while the sweep submits (jobs queue, none starts), so that both jobs are still SLURM's
    # when the same command runs again: each could otherwise finish in seconds.
    partition(False)
    try:
        first = subprocess.run([*cmd, "--detach"], capture_output=True, text=True, env=_env(), timeout=300)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "detached" in first.stdout
        runs = _runs(sweep_dir)
        jobs = {n: r["job_id"] for n, r in runs.items()}
        assert set(jobs) == {"sft_s1", "sft-go_tfidf_s1"} and all(jobs.values())
        for j in jobs.values():  # SLURM knows the jobs: sbatch submitted them
            assert "JobState=PENDING" in _scontrol(j), _scontrol(j)
        st = _status(sweep_dir)
        assert {n: (s[0], s[1]) for n, s in st.items()} == {n: ("queued", j) for n, j in jobs.items()}
        log = tmp_path / "second.log"
        with open(log, "w") as f:
            second = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, env=_env())
        _wait(lambda: log.read_text().count("attached to SLURM job") == 2, 120, "the sweep to attach", second)
    finally:
        partition(True)
    second.wait(timeout=600)
    out = log.read_text()
    assert second.returncode == 0, out[-4000:]
    for n, j in jobs.items():
        assert f"{n}: attached to SLURM job {j} (queued), not submitted again" in out, out
    assert "submitted as SLURM job" not in out
    assert {n: r["job_id"] for n, r in _runs(sweep_dir).items()} == jobs
    for j in jobs.values():
        assert "JobState=COMPLETED" in _scontrol(j), _scontrol(j)
    for n in jobs:
        s = json.loads((sweep_dir / n / "summary.json").read_text())
        assert s["steps"] == 4 and (sweep_dir / n / "eval" / "paper.json").exists()
    assert sorted((sweep_dir / "eval_calls.txt").read_text().split()) == sorted(jobs)
    st = _status(sweep_dir)
    assert {n: s[:2] for n, s in st.items()} == {n: ("done", j) for n, j in jobs.items()}
    assert {s[2] for s in st.values()} == {"4"}


def _wait(cond, timeout, what, proc=None):
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended while waiting for {what}:\n"
                                 + (proc.stdout.read()[-4000:] if proc.stdout else ""))
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_requeued_job_resumes_and_equals_an_uninterrupted_run(slurm, tmp_path, tiny_model_dir, alpaca_file):
    """`scontrol requeue` of a run's job after its first complete checkpoint: SLURM kills the job and queues it
    again; the job starts again, resumes from the run's last complete checkpoint, and the run's final weights equal
    those of the same run trained locally in one go (within 1e-6); metrics.jsonl holds every step once."""
    from safetensors.torch import load_file

    steps = 100
    train = ["--max_steps", str(steps), "--save_steps", "5", "--save_total_limit", "2"]
    cache = tmp_path / "cache"
    sweep_dir = tmp_path / "slurm"
    proc = subprocess.Popen(_sweep_cmd(sweep_dir, tiny_model_dir, alpaca_file, cache, *train, *SLURM),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    # The uninterrupted reference: the same sweep on this machine.
    local = subprocess.Popen(_sweep_cmd(tmp_path / "local", tiny_model_dir, alpaca_file, cache, *train),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    run = sweep_dir / "sft-go_tfidf_s1"
    _wait(lambda: (run / "checkpoint-5" / "sftgo_complete.json").exists(), 600, "the first checkpoint", proc)
    job = _runs(sweep_dir)["sft-go_tfidf_s1"]["job_id"]
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    # A requeued job becomes eligible again only after a delay (cred_expire); release it now, but in the next second
    # of the clock: slurmd revokes the killed job's credential with a timestamp in whole seconds, so a start within
    # the same second is refused ("Killing non-startable batch job: Job credential revoked") and the job ends FAILED
    # instead of resuming (a race of this test, not of the product).
    _wait(lambda: "JobState=PENDING" in _scontrol(job), 120, "the job back in the queue", proc)
    time.sleep(1.1)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True, timeout=30)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    lout, _ = local.communicate(timeout=600)
    assert local.returncode == 0, lout[-4000:]
    assert out.count("submitted as SLURM job") == 1 and _runs(sweep_dir)["sft-go_tfidf_s1"]["job_id"] == job

    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == steps and s["legs"] == 2, s
    k = int(Path(s["resumed_from"]).name.split("-")[1])
    assert 5 <= k < steps, s["resumed_from"]
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, steps + 1))
    ref_dir = tmp_path / "local" / "sft-go_tfidf_s1"
    assert json.loads((ref_dir / "summary.json").read_text())["resumed_from"] is None
    ref_recs = [json.loads(line) for line in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in recs] == pytest.approx([r["loss"] for r in ref_recs], abs=1e-6)
    got, ref = load_file(run / "final" / "model.safetensors"), load_file(ref_dir / "final" / "model.safetensors")
    assert got.keys() == ref.keys()
    worst = max(float((got[n] - ref[n]).abs().max()) for n in ref)
    assert worst <= 1e-6, worst
