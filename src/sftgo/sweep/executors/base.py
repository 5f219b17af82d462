"""What every executor offers the sweep (in the manner of submitit's ``Executor`` and hydra's launchers): submit works,
poll what became of them, attach to jobs a stopped sweep left queued or running, stop on an interrupt, and tell
``sftgo sweep --status`` the states it knows. The sweep's one processing loop (:meth:`sftgo.sweep.core.Sweep.process`)
speaks only to this interface; an executor is one module and one line in :data:`sftgo.sweep.executors.EXECUTORS`.

A job is named by its run (the run's name) and, where a scheduler holds it, by the scheduler's job id (``job_id`` in
``sweep.json``; None for a child process of the sweep). What happens to a job comes back from :meth:`Executor.poll`
as :class:`Event` s, in one vocabulary whatever the executor:

- ``train`` (``resumed_from``, ``command``), ``eval`` (``command``): the run's training / evaluation started;
- ``pid`` (``pid``): its process; ``trained`` / ``evaluated`` (``rc``, ``seconds``): that process ended;
- ``state`` (``state``: ``queued`` or ``running``): what the scheduler says of a job it still holds;
- ``done``: the work ended: ``ok`` (True / False; None where only the run directory can say, e.g. a job that left the
  scheduler), and on a failure ``stage`` (training / evaluation / sweep), ``rc``, ``log``, ``error``, or ``job_log``;
- ``note`` (``text``, no run): a line for the sweep's log (e.g. the scheduler does not answer).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from ..work import RunWork


@dataclass
class Event:
    run: str | None  # the run's name (None for a note)
    kind: str  # train | eval | pid | trained | evaluated | state | done | note
    data: dict = field(default_factory=dict)


class Executor(ABC):
    help: str = ""  # what --executor NAME does (one phrase of `sftgo sweep --help`)
    detachable: bool = False  # its jobs outlive the sweep process: --detach, and a sweep run again attaches to them
    why_not_detachable: str = ""  # why --detach is refused (when not detachable)
    interrupted_note: str = ""  # what an interrupted sweep adds to its last line (detachable: the jobs keep running)
    summary_s: float | None = None  # seconds between the lines "N running, M queued" while waiting (None: none)
    slots: int = 1  # runs at once (the remaining-time estimate)
    gpus_per_run: int = 0  # GPUs each run's training gets (> 1: the sweep starts it with torchrun)

    @classmethod
    def check_spec(cls, spec) -> None:
        """Rejects sweep options this executor cannot honour (a SweepError naming the option and the fix)."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec, out: Path, poll_s: float) -> Executor:
        """The executor of a sweep (its Spec, its directory, --poll_s)."""

    @abstractmethod
    def submit(self, works: list[RunWork]) -> list[str | None]:
        """Starts (or queues) every work; returns each one's job id, in order (None: a child of this process)."""

    def attach(self, records: dict[str, dict]) -> dict[str, str]:
        """{run: state} of the runs whose recorded job (``records[run]["job_id"]``) is still queued or running, so
        that a sweep run again waits for them instead of submitting them again. Jobs that die with the sweep: none."""
        return {}

    @abstractmethod
    def poll(self, jobs: dict[str, str | None]) -> list[Event]:
        """What became of ``jobs`` ({run: job id}) since the last poll; returns at once."""

    @abstractmethod
    def wait(self) -> None:
        """Until the next poll is worth making (an event arrived, or the polling interval passed)."""

    def interrupt(self) -> None:
        """The sweep is interrupted (Ctrl-C, SIGTERM): stop what dies with it. Detachable jobs keep running."""

    def label(self, job_id: str) -> str:
        """How the sweep's log names a job: ``SLURM job 123``."""
        return f"job {job_id}"

    def job_record(self, job_id: str) -> dict:
        """What ``sweep.json`` records of a submitted job beside its id (e.g. the scheduler's log folder)."""
        return {}

    @classmethod
    def run_states(cls, records: list[dict], sweep_alive: bool) -> dict[str, str]:
        """``sftgo sweep --status``: {run: state} of the runs of ``records`` (sweep.json's) that are not done and that
        this executor can tell about (a job its scheduler holds, a child process alive); others are left out."""
        return {}
