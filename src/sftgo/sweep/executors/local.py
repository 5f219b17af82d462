"""``--executor local``: up to ``slots`` runs at once on this machine, each slot with its own GPUs
(``CUDA_VISIBLE_DEVICES``) or its share of the CPU threads; each run is a child process of the sweep, so an interrupted
(or killed) sweep stops every child, and there is nothing to attach to afterwards."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from collections import deque
from pathlib import Path

from ..errors import SweepError
from ..work import Children, RunWork, pid_alive, run_work
from .base import Event, Executor

WAIT_S = 0.2  # the longest the sweep waits for a slot's next event (it stays responsive to Ctrl-C / SIGTERM)


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


class LocalExecutor(Executor):
    help = "subprocesses on this machine"
    why_not_detachable = "local runs are children of the sweep process"

    def __init__(self, slots: int = 1, gpus_per_run: int | None = None):
        self.slots = slots
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.envs, self.gpus_per_run = slot_envs(slots, gpus_per_run, visible_gpus(), cpus)
        self.children = Children()
        self._queue: deque[RunWork] = deque()
        self._lock = threading.Lock()
        self._busy = [False] * slots  # a slot's thread is taking works from the queue
        self._threads: list[threading.Thread] = []
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._arrived = threading.Event()

    @classmethod
    def from_spec(cls, spec, out: Path, poll_s: float) -> LocalExecutor:
        return cls(spec.slots, spec.gpus_per_run)

    def submit(self, works: list[RunWork]) -> list[str | None]:
        """Queues the works, in order; the idle slots start taking them (at most one slot per work)."""
        with self._lock:
            self._queue.extend(works)
            idle = [i for i, busy in enumerate(self._busy) if not busy][: max(1, len(works))]
            for i in idle:
                self._busy[i] = True
        for i in idle:
            t = threading.Thread(target=self._slot, args=(i,), name=f"slot{i}", daemon=True)
            self._threads.append(t)
            t.start()
        return [None] * len(works)

    def _emit(self, work: RunWork, kind: str, **data) -> None:
        self._events.put(Event(work.name, kind, data))
        self._arrived.set()

    def _slot(self, i: int) -> None:
        env = self.envs[i]
        while not self.children.stopping:
            with self._lock:
                if not self._queue:
                    self._busy[i] = False
                    return
                w = self._queue.popleft()
            w = RunWork(**{**w.__dict__, "env": {**w.env, **env}})
            try:
                res = run_work(w, self._emit, self.children)
            except Exception as e:  # noqa: BLE001 - one broken run must not stop the other slots
                res = {"ok": False, "stage": "sweep", "rc": None, "log": None, "error": f"{type(e).__name__}: {e}"}
            if self.children.stopping:  # interrupted: its child was stopped, not failed
                return
            self._emit(w, "done", **res)

    def poll(self, jobs: dict[str, str | None]) -> list[Event]:
        self._arrived.clear()
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def wait(self) -> None:
        self._arrived.wait(WAIT_S)

    def interrupt(self) -> None:
        """Stops every child (SIGTERM, then SIGKILL after a grace period) and lets the slots end."""
        self.children.stop_all()
        for t in self._threads:
            t.join(60)

    @classmethod
    def run_states(cls, records: list[dict], sweep_alive: bool) -> dict[str, str]:
        """A run whose sweep is running and whose recorded child process is alive is running."""
        return {e["name"]: "running" for e in records
                if not e.get("job_id") and sweep_alive and e.get("state") in ("training", "evaluating")
                and pid_alive(e.get("pid"))}
