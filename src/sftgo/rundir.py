"""A run directory's names and the small readers of its files: the one place they are spelled. The trainer, the
pipeline, checkpoints, eval, generate, the report and the sweep all read and write these.

The names are the on-disk format: old run directories must keep loading, so never change one. Standard library only
(``yaml`` is imported where a config is read), at the bottom of the import layers: anything may import it.

    RUN/config.yaml             every setting of the run (written before training; ``sftgo train --resume`` reads it)
    RUN/metrics.jsonl           one JSON record per logging step (a killed run may leave a torn last line)
    RUN/summary.json            written at the end of training: a sweep reads it to decide "trained"
    RUN/loss_groups.png, RUN/loss_channels.png
    RUN/checkpoint-N/           resumable; ``sftgo_complete.json`` marks a complete one, beside the trainer's
                                ``trainer_state.json`` and sftgo's ``sftgo_state.json`` / ``sftgo_counters.json``
    RUN/final/                  the trained model (+ tokenizer)
    RUN/eval/<suite>.json, RUN/eval/heldout.json, RUN/eval/heldout-<data stem>.json
    RUN/generations/<prompts stem>.jsonl
    SWEEP/sweep.json, RUN/evaluated.json, RUN/selection_heldout.json   (the sweep's)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOSS_GROUPS_PNG = "loss_groups.png"
LOSS_CHANNELS_PNG = "loss_channels.png"
FINAL = "final"
EVAL_DIR = "eval"
HELDOUT = "heldout.json"  # in EVAL_DIR: the last held-out set evaluated; each one also as heldout-<data stem>.json
GENERATIONS_DIR = "generations"
GENERATIONS_KIND = "sftgo.generations"  # the "kind" of a generations file's header line

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_RE = re.compile("^" + re.escape(CHECKPOINT_PREFIX) + r"(\d+)$")
COMPLETE_MARKER = "sftgo_complete.json"  # in checkpoint-N: the checkpoint is complete (sftgo.checkpoints)
TRAINER_STATE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME: the last file _save_checkpoint writes
STATE_FILE = "sftgo_state.json"  # in checkpoint-N: the objective's trainer state (sftgo.trainer)
COUNTERS_FILE = "sftgo_counters.json"  # in checkpoint-N: the run's running totals (sftgo.trainer)

SWEEP_STATE = "sweep.json"  # in a sweep directory
EVAL_RECORD = "evaluated.json"  # in a sweep's run: which summary.json was evaluated with which settings
SELECTION_HELDOUT = "selection_heldout.json"


def checkpoint_name(step: int) -> str:
    """``checkpoint-<step>``, the Trainer's folder name."""
    return f"{CHECKPOINT_PREFIX}{step}"


def is_complete(checkpoint) -> bool:
    """The checkpoint folder holds the completion marker (sftgo.checkpoints writes it once all else is saved)."""
    return (Path(checkpoint) / COMPLETE_MARKER).is_file()


def checkpoint_folders(output_dir) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-N`` folder of ``output_dir``, oldest step first (numeric order:
    ``checkpoint-9`` before ``checkpoint-10``)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name)))


def read_run_config(run_dir) -> dict:
    """The run's ``config.yaml`` as a dict ({} when empty); yaml.YAMLError / OSError to the caller."""
    import yaml

    return yaml.safe_load((Path(run_dir) / CONFIG).read_text()) or {}


def read_metrics(path) -> list[dict]:
    """The JSON-object lines of ``metrics.jsonl`` (or any JSON-lines file; [] if it does not exist); a torn line (a
    killed writer) is skipped."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_generations(path) -> tuple[dict | None, list[dict]]:
    """(header, rows) of a generations file; a torn last line (a killed call) is skipped; (None, []) if unreadable."""
    try:
        recs = read_metrics(path)
    except (OSError, UnicodeDecodeError):
        return None, []
    if not recs or recs[0].get("kind") != GENERATIONS_KIND:
        return None, []
    return recs[0], recs[1:]
