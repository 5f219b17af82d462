"""``--executor slurm``: one SLURM job per run (a job array per submission) through submitit; states come from
``squeue`` (no accounting database needed), outcomes from the run directories. The jobs outlive the sweep process:
``--detach`` returns once they are submitted, and the same command again attaches to the ones still queued or
running."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import SweepError
from ..work import RunWork
from .base import Event, Executor

# squeue states of a job that is still SLURM's (queued, starting, running, being requeued or stopped).
QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
                 "STOPPED", "RESIZING", "SPECIAL_EXIT"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


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


class SlurmExecutor(Executor):
    """Submits works as SLURM jobs through submitit. Each job is requeued when it is preempted or reaches its time
    limit (submitit signals it ahead of the limit and requeues it; :meth:`RunWork.checkpoint`), and ``--requeue``
    lets an administrator's or a node failure's requeue restart it too; either way the work resumes from the run's
    last complete checkpoint."""

    help = "one SLURM job per run through submitit (requeued jobs resume from the run's last checkpoint)"
    detachable = True
    interrupted_note = "the SLURM jobs keep running, the same command attaches to them"
    summary_s = 60.0

    def __init__(self, folder: Path, options: dict, gpus_per_run: int | None = None, poll_s: float = 10.0):
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
        self.poll_s = poll_s

    @classmethod
    def check_spec(cls, spec) -> None:
        if spec.gpus_per_run is not None:
            raise SweepError("--gpus_per_run is for --executor local; with slurm pass --slurm_gpus_per_node K")
        if spec.slots != 1:
            raise SweepError("--slots is for --executor local; with slurm every run is its own job "
                             "(--slurm_array_parallelism caps how many run at once)")

    @classmethod
    def from_spec(cls, spec, out: Path, poll_s: float) -> SlurmExecutor:
        return cls(Path(out) / "slurm", spec.slurm, poll_s=poll_s)

    def submit(self, works: list[RunWork]) -> list[str | None]:
        """Submits every work (one job array); returns their job ids, in order."""
        import submitit

        self.folder.mkdir(parents=True, exist_ok=True)
        ex = submitit.SlurmExecutor(folder=str(self.folder / "%j"), max_num_timeout=1000)
        ex.update_parameters(**sbatch_parameters(self.options))
        with ex.batch():
            jobs = [ex.submit(w) for w in works]
        return [str(j.job_id) for j in jobs]

    def attach(self, records: dict[str, dict]) -> dict[str, str]:
        live = slurm_states()
        if live is None:
            raise SweepError("squeue does not answer: is SLURM up (sinfo)? Nothing was submitted")
        return {run: short_state(live[e["job_id"]]) for run, e in records.items()
                if e.get("job_id") and e["job_id"] in live}

    def poll(self, jobs: dict[str, str | None]) -> list[Event]:
        live = slurm_states()
        if live is None:
            return [Event(None, "note", {"text": "squeue does not answer; waiting"})]
        out = []
        for run, job in jobs.items():
            st = short_state(live.get(job))
            # A job that has left SLURM is done: the run directory says whether it did its work.
            out.append(Event(run, "state", {"state": st}) if st is not None
                       else Event(run, "done", {"ok": None, "job_log": str(self.folder / job)}))
        return out

    def wait(self) -> None:
        time.sleep(self.poll_s)

    def label(self, job_id: str) -> str:
        return f"SLURM job {job_id}"

    def job_record(self, job_id: str) -> dict:
        return {"slurm_log": str(self.folder / job_id)}

    @classmethod
    def run_states(cls, records: list[dict], sweep_alive: bool) -> dict[str, str]:
        """A run with a job id: its job's state while SLURM holds it; failed once it left SLURM (the run is not
        done); unknown when squeue does not answer."""
        mine = [e for e in records if e.get("job_id")]
        live = slurm_states() if mine and slurm_available() else None
        return {e["name"]: (short_state(live[e["job_id"]]) if e["job_id"] in live else "failed")
                if live is not None else "unknown (squeue does not answer)" for e in mine}
