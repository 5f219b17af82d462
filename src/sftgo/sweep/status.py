"""A run's status, read from its directory alone (no sweep.json, no clock, no file times): what a requeued SLURM job,
a re-run sweep on another machine and ``sftgo sweep --status`` all decide from.

- trained: ``summary.json`` exists and the run was not stopped early (``--stop_after_steps``); a selection run
  (``stop_after``) counts as trained once it has a summary at or past its short budget.
- resumable: it has a complete checkpoint (``checkpoint-N/sftgo_complete.json``; sftgo.checkpoints).
- evaluated: ``evaluated.json`` names the evaluation (its signature: suites, held-out data, arguments) and the
  SHA-256 of the ``summary.json`` it evaluated. A run trained again rewrites its summary (new times, steps, losses),
  so an older evaluation no longer matches and the run is evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..rundir import EVAL_RECORD, METRICS, SUMMARY, checkpoint_folders, is_complete


@dataclass
class RunStatus:
    trained: bool  # reached the budget asked for (the full one, or stop_after for a selection run)
    checkpoint: str | None  # last complete checkpoint (what a resume starts from)
    evaluated: bool  # the current summary.json was evaluated with this signature (True when there is no evaluation)
    last_step: int | None  # the newest step the run reached (metrics.jsonl or a complete checkpoint)

    @property
    def done(self) -> bool:
        return self.trained and self.evaluated


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def summary_sha256(run_dir: Path) -> str | None:
    try:
        return hashlib.sha256((Path(run_dir) / SUMMARY).read_bytes()).hexdigest()
    except OSError:
        return None


def is_trained(run_dir: Path, stop_after: int | None = None) -> bool:
    s = read_json(Path(run_dir) / SUMMARY)
    if not isinstance(s, dict):
        return False
    if stop_after:
        return int(s.get("steps") or 0) >= int(stop_after) or not s.get("stopped_early")
    return not s.get("stopped_early")


def is_evaluated(run_dir: Path, signature: str | None) -> bool:
    """The run's current summary.json was evaluated with ``signature`` (see the module docstring)."""
    if signature is None:
        return True
    rec = read_json(Path(run_dir) / EVAL_RECORD)
    if not isinstance(rec, dict):
        return False
    current = summary_sha256(run_dir)
    return current is not None and rec.get("signature") == signature and rec.get("summary_sha256") == current


def write_eval_record(run_dir: Path, signature: str) -> None:
    """After a successful evaluation: which evaluation, of which summary.json (written through a rename)."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".{EVAL_RECORD}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"signature": signature, "summary_sha256": summary_sha256(run_dir)}, indent=2))
    os.replace(tmp, run_dir / EVAL_RECORD)


def last_step(run_dir: Path) -> int | None:
    """The newest step a run reached: its last metrics.jsonl record, or its newest complete checkpoint."""
    run_dir = Path(run_dir)
    step = None
    try:
        with open(run_dir / METRICS, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))  # the last records are enough
            for line in f.read().decode(errors="replace").splitlines():
                try:
                    s = json.loads(line).get("step")
                except (ValueError, AttributeError):
                    continue
                if isinstance(s, int):
                    step = max(step or 0, s)
    except OSError:
        pass
    ckpt = last_checkpoint(run_dir)
    if ckpt is not None:
        step = max(step or 0, int(Path(ckpt).name.split("-")[1]))
    return step


def last_checkpoint(run_dir: Path) -> str | None:
    """Newest complete checkpoint (quietly: sftgo.checkpoints.last_complete_checkpoint warns about incomplete ones,
    which the training itself reports when it resumes)."""
    return next((str(p) for _, p in reversed(checkpoint_folders(run_dir)) if is_complete(p)), None)


def run_status(run_dir: Path, eval_signature: str | None, stop_after: int | None = None) -> RunStatus:
    trained = is_trained(run_dir, stop_after)
    return RunStatus(trained=trained, checkpoint=last_checkpoint(run_dir),
                     evaluated=trained and is_evaluated(run_dir, eval_signature), last_step=last_step(run_dir))
