"""Crash-safe checkpoints: a checkpoint counts only once every file of it is written.

The Trainer writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG state, ``trainer_state.json``,
then sftgo's own state in ``on_save`` callbacks). A process killed in between leaves a partial folder. The last
``on_save`` callback (:class:`CompleteCheckpointCallback`, registered after every other one) writes the marker
``sftgo_complete.json`` into the folder, through a temporary file and a rename, once all processes have finished
their part. Resuming (``--resume_from_checkpoint true`` / ``last``) takes the newest folder that has the marker and
warns about each newer one it skips; the Trainer later saves over the skipped folder when it reaches that step again.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "sftgo_complete.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(checkpoint: str | os.PathLike) -> bool:
    return (Path(checkpoint) / COMPLETE_MARKER).is_file()


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """Newest ``checkpoint-N`` folder of ``output_dir`` that holds the completion marker, or None."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))),
                   reverse=True)
    for _, path in found:
        if is_complete(path):
            return str(path)
        logger.warning("skipping %s: incomplete (no %s; the run was probably killed while saving it)",
                       path, COMPLETE_MARKER)
    return None


class CompleteCheckpointCallback(TrainerCallback):
    """Marks ``checkpoint-{global_step}`` complete at the end of each save (register it after every other callback)."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every process has written its part (e.g. its RNG state)
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not ckpt.is_dir():
            return
        tmp = ckpt / (COMPLETE_MARKER + ".tmp")
        tmp.write_text(json.dumps({"step": int(state.global_step)}))
        os.replace(tmp, ckpt / COMPLETE_MARKER)
