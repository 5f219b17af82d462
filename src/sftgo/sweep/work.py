"""One run's work: what an executor runs in a local slot or in a SLURM job.

Train the run unless it is trained (resuming from its last complete checkpoint when it has one), then evaluate it
unless its current ``summary.json`` was evaluated. Every decision is made from the run directory when the work
starts (sftgo.sweep.status), so the same work object, started again — a requeued or preempted SLURM job, a sweep
re-run after a crash — continues where the run is, and never trains a finished run again.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .status import is_evaluated, is_trained, last_checkpoint, write_eval_record


@dataclass
class RunWork:
    name: str
    run_dir: str
    train_cmd: list  # `... -m sftgo.cli train CONFIG [flags]`; "--resume_from_checkpoint last" is added when resuming
    eval_cmd: list | None  # None: no evaluation
    eval_signature: str | None  # what evaluated.json must name for the run to count as evaluated
    stop_after: int | None  # a selection run's short budget
    train_log: str
    eval_log: str
    env: dict = field(default_factory=dict)  # the slot's variables (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS)

    # ---- what a SLURM job runs (submitit pickles this object and calls it inside the allocation)
    def __call__(self) -> dict:
        out = run_work(self, on_event=_print_event)
        if not out["ok"]:
            # A failed job is a FAILED job in SLURM's eyes too (the sweep itself reads the run directory).
            raise RuntimeError(f"{self.name}: {out['stage']} failed (exit {out['rc']}); log {out['log']}")
        return out

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on preemption or time-out, then requeues the job with what it returns: the same work,
        which resumes from the run's last complete checkpoint when the job starts again."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _print_event(work: RunWork, kind: str, **data) -> None:
    print(f"sftgo sweep: {work.name}: {kind} {data}", flush=True)


def pid_alive(pid) -> bool:
    """A process of this machine is alive (a zombie, exited and not yet reaped, is not)."""
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return True


class Children:
    """The child processes of the sweep's slots, so that an interrupted sweep stops all of them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False

    def add(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(p)
        if self.stopping:  # started while the sweep was being interrupted
            self.stop_all()

    def discard(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(p)

    def stop_all(self, grace_s: float = 30.0) -> None:
        self.stopping = True
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        t_end = time.time() + grace_s
        for p in procs:
            try:
                p.wait(timeout=max(0.1, t_end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _set_pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the thread that started it dies — with the sweep, even by SIGKILL — so no
    orphan keeps writing into a run directory that a continued sweep resumes. (The slot's thread lives until its
    child has exited.)"""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_child(cmd: list, log_path: str, env: dict, children: Children | None = None, on_pid=None) -> int:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as logf:
        # Start and end stamps (wall clock, to the millisecond) around each child: when each run trained.
        logf.write(f"\n# start {_stamp()}\n$ {shlex.join(cmd)}\n")
        logf.flush()
        full_env = {**os.environ, **env}
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if children is not None and children.stopping:
            return -signal.SIGTERM
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=full_env,
                             preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None)
        if children is not None:
            children.add(p)
        if on_pid:
            on_pid(p.pid)
        try:
            rc = p.wait()
            logf.write(f"\n# end {_stamp()} exit {rc}\n")
            return rc
        finally:
            if p.poll() is None:  # interrupted while waiting: take the child down too
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if children is not None:
                children.discard(p)


def _stamp() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def run_work(work: RunWork, on_event=None, children: Children | None = None) -> dict:
    """Train (or resume) and evaluate one run as far as it needs; returns {ok, stage, rc, log, train_s, eval_s}."""
    on_event = on_event or (lambda *a, **k: None)
    d = Path(work.run_dir)
    out = {"ok": True, "stage": None, "rc": 0, "log": None, "train_s": None, "eval_s": None}
    if not is_trained(d, work.stop_after):
        ckpt = last_checkpoint(d)
        cmd = list(work.train_cmd) + (["--resume_from_checkpoint", "last"] if ckpt else [])
        on_event(work, "train", resumed_from=ckpt, command=shlex.join(cmd))
        t = time.time()
        rc = run_child(cmd, work.train_log, work.env, children, lambda pid: on_event(work, "pid", pid=pid))
        out["train_s"] = round(time.time() - t, 1)
        on_event(work, "trained", rc=rc, seconds=out["train_s"])
        if rc != 0 or not is_trained(d, work.stop_after):
            return {**out, "ok": False, "stage": "training", "rc": rc, "log": work.train_log}
    if work.eval_cmd and not is_evaluated(d, work.eval_signature):
        on_event(work, "eval", command=shlex.join(work.eval_cmd))
        t = time.time()
        rc = run_child(list(work.eval_cmd), work.eval_log, work.env, children,
                       lambda pid: on_event(work, "pid", pid=pid))
        out["eval_s"] = round(time.time() - t, 1)
        if rc == 0:
            write_eval_record(d, work.eval_signature)
        on_event(work, "evaluated", rc=rc, seconds=out["eval_s"])
        if rc != 0:
            return {**out, "ok": False, "stage": "evaluation", "rc": rc, "log": work.eval_log}
    return out
