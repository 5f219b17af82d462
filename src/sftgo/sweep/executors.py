"""Executors run a list of :class:`~sftgo.sweep.work.RunWork` and report outcomes; they know nothing of grids, seeds
or selection (the way hydra's launchers know nothing of the sweeper).

- :class:`LocalExecutor`: up to ``slots`` runs at once on this machine, each slot with its own GPUs
  (``CUDA_VISIBLE_DEVICES``) or its share of the CPU threads; interrupting the sweep stops every child.
- :class:`SlurmExecutor`: one SLURM job per run (a job array per submission) through submitit; states come from
  ``squeue`` (no accounting database needed), outcomes from the run directories.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import threading
from collections import deque
from pathlib import Path

from .spec import SweepError
from .work import Children, RunWork, run_work

# squeue states of a job that is still SLURM's (queued, starting, running, being requeued or stopped).
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
                 "STOPPED", "RESIZING", "SPECIAL_EXIT"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


# ----------------------------------------------------------------------------------------------------- local slots


def visible_gpus() -> list[str]:
    """The GPUs this sweep may hand out: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [d.strip() for d in cvd.split(",") if d.strip() and d.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def slot_envs(slots: int, gpus_per_run: int | None, gpus: list[str], cpus: int) -> tuple[list[dict], int]:
    """Each slot's environment, and the GPUs per run. On GPUs slot i gets devices [i*K, (i+1)*K) of ``gpus``; every
    slot gets cpus // slots threads (OMP / MKL), unless OMP_NUM_THREADS is set for the sweep (the user's choice)."""
    k = (1 if gpus else 0) if gpus_per_run is None else gpus_per_run
    threads = str(max(1, cpus // slots))
    base = {} if os.environ.get("OMP_NUM_THREADS") else {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if k == 0:
        # CPU runs: none of them may take a GPU it was not given (they would all pile onto GPU 0).
        return [{**base, **({"CUDA_VISIBLE_DEVICES": ""} if gpus else {})} for _ in range(slots)], 0
    if slots * k > len(gpus):
        raise SweepError(f"--slots {slots} x --gpus_per_run {k} needs {slots * k} GPUs, {len(gpus)} visible "
                         f"({','.join(gpus) or 'none'}): lower --slots, or --gpus_per_run 0 for CPU runs")
    return [{**base, "CUDA_VISIBLE_DEVICES": ",".join(gpus[i * k:(i + 1) * k])} for i in range(slots)], k


class LocalExecutor:
    def __init__(self, slots: int = 1, gpus_per_run: int | None = None):
        self.slots = slots
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.envs, self.gpus_per_run = slot_envs(slots, gpus_per_run, visible_gpus(), cpus)
        self.children = Children()

    def run(self, works: list[RunWork], on_event) -> dict[str, dict]:
        """Runs every work, at most ``slots`` at once, in order; blocks until all are done. ``on_event(work, kind,
        **data)`` is called from the slots' threads, one call at a time. KeyboardInterrupt (Ctrl-C, or SIGTERM turned
        into it by the CLI) stops every child and is raised again."""
        queue, results, lock = deque(works), {}, threading.Lock()

        def event(work, kind, **data):
            with lock:
                on_event(work, kind, **data)

        def slot(env):
            while not self.children.stopping:
                with lock:
                    if not queue:
                        return
                    w = queue.popleft()
                w = RunWork(**{**w.__dict__, "env": {**w.env, **env}})
                try:
                    res = run_work(w, event, self.children)
                except Exception as e:  # noqa: BLE001 - one broken run must not stop the other slots
                    res = {"ok": False, "stage": "sweep", "rc": None, "log": None, "error": f"{type(e).__name__}: {e}"}
                if self.children.stopping:  # interrupted: its child was stopped, not failed
                    return
                with lock:
                    results[w.name] = res
                event(w, "done", **res)

        threads = [threading.Thread(target=slot, args=(env,), name=f"slot{i}", daemon=True)
                   for i, env in enumerate(self.envs[: max(1, len(works))])]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # a timed join: the main thread stays responsive to Ctrl-C / SIGTERM
        except KeyboardInterrupt:
            self.children.stop_all()
            for t in threads:
                t.join(60)
            raise
        return results


# ----------------------------------------------------------------------------------------------------------- SLURM


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def slurm_states() -> dict[str, str] | None:
    """{job id: state} of this user's jobs SLURM still holds (array tasks one by one, as ``123_4``); None when squeue
    does not answer. A job missing from the answer has ended: its run directory says how."""
    try:
        p = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return None
    out = {}
    for line in p.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            out[jid] = state
    return out


def short_state(slurm_state: str | None) -> str | None:
    if slurm_state is None:
        return None
    return "running" if slurm_state in RUNNING_STATES else "queued"


def sbatch_parameters(o: dict) -> dict:
    """The sweep's SLURM options (sftgo.sweep.spec.SLURM_KEYS) -> submitit.SlurmExecutor parameters (each becomes an
    ``#SBATCH`` line)."""
    p = {"time": int(o.get("time_min", 24 * 60)), "nodes": 1, "ntasks_per_node": 1, "job_name": "sftgo",
         # scontrol requeue / node failure / preemption put the job back in the queue (it resumes)
         "additional_parameters": {"requeue": True}}
    for key in ("partition", "cpus_per_task", "account", "qos", "array_parallelism", "setup"):
        if o.get(key) not in (None, "", []):
            p[key] = o[key]
    if o.get("gpus_per_node"):
        p["gpus_per_node"] = int(o["gpus_per_node"])
    if o.get("mem_gb") is not None:
        p["mem"] = f"{int(round(float(o['mem_gb']) * 1024))}M"  # sbatch --mem in MB: a fraction of a GB works
    return p


class SlurmExecutor:
    """Submits works as SLURM jobs through submitit. Each job is requeued when it is preempted or reaches its time
    limit (submitit signals it ahead of the limit and requeues it; :meth:`RunWork.checkpoint`), and ``--requeue``
    lets an administrator's or a node failure's requeue restart it too; either way the work resumes from the run's
    last complete checkpoint."""

    def __init__(self, folder: Path, options: dict, gpus_per_run: int | None = None):
        if not slurm_available():
            raise SweepError("--executor slurm: sbatch / squeue not found on this machine (run the sweep on a "
                             "SLURM login node; dev/slurm_local.sh starts a one-node SLURM for trying it)")
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise SweepError("--executor slurm needs submitit: pip install submitit") from None
        self.folder = Path(folder)
        self.options = dict(options)
        self.gpus_per_run = int(options.get("gpus_per_node") or 0) if gpus_per_run is None else gpus_per_run

    def submit(self, works: list[RunWork]) -> list[str]:
        """Submits every work (one job array); returns their job ids, in order."""
        import submitit

        self.folder.mkdir(parents=True, exist_ok=True)
        ex = submitit.SlurmExecutor(folder=str(self.folder / "%j"), max_num_timeout=1000)
        ex.update_parameters(**sbatch_parameters(self.options))
        with ex.batch():
            jobs = [ex.submit(w) for w in works]
        return [str(j.job_id) for j in jobs]
