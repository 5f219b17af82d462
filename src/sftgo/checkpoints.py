"""Crash-safe checkpoints: a checkpoint counts only once every file of it is written, and an older one is deleted
only after a newer one counts.

The Trainer writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG state, ``trainer_state.json``,
then sftgo's own state in ``on_save`` callbacks). A process killed in between leaves a partial folder. The last
``on_save`` callback (:class:`CompleteCheckpointCallback`, registered after every other one) checks that the files
written by the callbacks before it are there, then writes the marker ``sftgo_complete.json`` into the folder, through
a temporary file and a rename, once all processes have finished their part. Resuming (``--resume_from_checkpoint
true`` / ``last``) takes the folder with the marker and the highest step number (``checkpoint-10`` after
``checkpoint-9``) and warns about each newer one it skips; the Trainer later saves over the skipped folder when it
reaches that step again. Checkpoint folders without any complete one are an error, not a silent fresh start
(:func:`resolve_resume`).

Rotation (``save_total_limit``): transformers deletes old checkpoints at the end of ``_save_checkpoint``, *before* the
``on_save`` callbacks run, so a kill right after that deletion (with ``save_total_limit 1``) left no complete
checkpoint at all. :class:`RotateAfterCompletion` turns transformers' rotation off and
:class:`CompleteCheckpointCallback` rotates itself, right after the new marker is written (:func:`rotate_checkpoints`).

Which checkpoints are written: every ``save_steps`` and at ``--stop_after_steps``, not at the last step as such
(transformers' default flow adds one there: :class:`SaveOnlyWhenAsked`). What a *complete* run keeps of them
(``--keep_checkpoints none|last|all``) is decided once at its end (:func:`apply_keep_checkpoints`); a run stopped
early or killed keeps them all, to resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import SaveStrategy

from .config import KEEP_CHECKPOINTS, ConfigError
from .rundir import CHECKPOINT_PREFIX, COMPLETE_MARKER, TRAINER_STATE, checkpoint_folders, checkpoint_name, is_complete

logger = logging.getLogger(__name__)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """Newest ``checkpoint-N`` folder (by step number) of ``output_dir`` that holds the completion marker, or None."""
    for _, path in reversed(checkpoint_folders(output_dir)):
        if is_complete(path):
            return str(path)
        logger.warning("skipping %s: incomplete (no %s; the run was probably killed while saving it)",
                       path, COMPLETE_MARKER)
    return None


class NoCompleteCheckpoint(ConfigError):
    """``--resume_from_checkpoint last|true`` found checkpoint folders but none complete (a user decision is needed)."""


def resolve_resume(output_dir: str | os.PathLike, value: str) -> str | None:
    """The checkpoint ``--resume_from_checkpoint last|true`` continues from: the newest complete one; None (a fresh
    start) when ``output_dir`` has no checkpoint folder at all (a first launch, or a requeued job that never saved).
    Folders without a complete one raise :class:`NoCompleteCheckpoint`: starting over silently would throw away the
    run's progress and rewrite its ``metrics.jsonl``, so that stays the user's explicit choice."""
    last = last_complete_checkpoint(output_dir)
    if last is not None:
        return last
    found = checkpoint_folders(output_dir)
    if found:
        names = ", ".join(p.name for _, p in found)
        raise NoCompleteCheckpoint(
            f"resume_from_checkpoint={value}: {output_dir} has checkpoint folders ({names}) but none is complete (no "
            f"{COMPLETE_MARKER}: killed while saving?). To start over from step 0, delete them or pass "
            f"--resume_from_checkpoint false (metrics.jsonl is then rewritten from step 1)")
    logger.warning("resume_from_checkpoint=%s but %s has no checkpoint yet; starting from step 0", value, output_dir)
    return None


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int, newest_step: int, protect=()) -> list[Path]:
    """Delete the checkpoint folders older than ``checkpoint-<newest_step>`` (just marked complete) beyond the ``keep``
    newest complete ones (``checkpoint-<newest_step>`` counts as one) and ``protect`` (e.g. the best model's);
    incomplete folders older than it go too (resuming never uses them). Folders newer than ``newest_step`` (left by a
    leg that ran further before a resume from an older checkpoint) are not touched: the run saves over them.

    Oldest first, and each folder loses its marker before its files, so a kill in the middle of a deletion never
    leaves a folder that looks complete. Returns the deleted folders."""
    protected = {Path(p).resolve() for p in protect if p}
    older = [(s, p) for s, p in checkpoint_folders(output_dir) if s < newest_step]
    kept_complete = [p for _, p in older if is_complete(p)][-(keep - 1):] if keep > 1 else []
    deleted = []
    for _, path in older:
        if path in kept_complete or path.resolve() in protected:
            continue
        logger.info("deleting older checkpoint %s (save_total_limit %d)", path, keep)
        (path / COMPLETE_MARKER).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    return deleted


class RotateAfterCompletion:
    """Trainer mixin: transformers' own checkpoint rotation off (it deletes before the new checkpoint is complete);
    :class:`CompleteCheckpointCallback` rotates after marking. Put it before ``Trainer`` in the bases."""

    def _save_checkpoint(self, model, trial):
        # transformers 5 rotates inside _save_checkpoint through a module function reading args.save_total_limit (no
        # method to override): hide the limit for this call only. The callback reads it again in on_save.
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            return super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit


class CompleteCheckpointCallback(TrainerCallback):
    """Marks ``checkpoint-{global_step}`` complete at the end of each save, then rotates old checkpoints
    (``save_total_limit``; the trainer must use :class:`RotateAfterCompletion`). Register it after every other callback
    that writes into checkpoints; ``required`` names the files those write: a checkpoint missing one is never marked
    (an error: the callbacks are in the wrong order)."""

    def __init__(self, required: tuple[str, ...] = ()):
        self.required = (TRAINER_STATE, *required)

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every process has written its part (e.g. its RNG state)
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / checkpoint_name(state.global_step)
        if not ckpt.is_dir():
            return
        missing = [f for f in self.required if not (ckpt / f).is_file()]
        if missing:
            raise RuntimeError(f"{ckpt} lacks {', '.join(missing)} when it is to be marked complete: "
                               "CompleteCheckpointCallback must be registered after the callbacks that write them")
        tmp = ckpt / (COMPLETE_MARKER + ".tmp")
        tmp.write_text(json.dumps({"step": int(state.global_step)}))
        os.replace(tmp, ckpt / COMPLETE_MARKER)
        if args.save_total_limit is not None and args.save_total_limit > 0:
            rotate_checkpoints(args.output_dir, args.save_total_limit, int(state.global_step),
                               protect=[state.best_model_checkpoint])


class SaveOnlyWhenAsked(TrainerCallback):
    """Undoes the checkpoint transformers' ``DefaultFlowCallback`` adds at the last step when that step is not a
    multiple of ``save_steps``: with optimizer state it is about 3x the model (1.6 GB beside a 0.5 GB ``final/`` for
    SmolLM2-135M, ~100 GB for an 8B model), written for a run that is over. Checkpoints come every ``save_steps`` and
    from whatever callback after this one asks (``--stop_after_steps``). Kept with ``load_best_model_at_end`` (choosing
    the best model compares the last evaluation only through its checkpoint) and with ``--keep_checkpoints last|all``
    (the user keeps checkpoints to continue the run: the last step's is the one to continue from). Register it before
    the callbacks that ask for a save (DefaultFlowCallback is always first)."""

    def on_step_end(self, args, state, control, **kwargs):
        if (control.should_save and state.global_step >= state.max_steps and args.save_strategy == SaveStrategy.STEPS
                and not args.load_best_model_at_end and getattr(args, "keep_checkpoints", "none") == "none"
                and not (state.save_steps > 0 and state.global_step % state.save_steps == 0)):
            control.should_save = False
        return control


TRASH_PREFIX = ".deleting-"  # a checkpoint being deleted: out of the checkpoint-N names, so never resumed from


def delete_checkpoint(path: str | os.PathLike) -> None:
    """Deletes a checkpoint folder so that a kill at any moment leaves either the whole folder or none under its name:
    one rename to ``.deleting-checkpoint-N`` (which :func:`checkpoint_folders` does not list), then the files."""
    path = Path(path)
    trash = path.with_name(TRASH_PREFIX + path.name)
    shutil.rmtree(trash, ignore_errors=True)  # left by a deletion killed before
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def apply_keep_checkpoints(output_dir: str | os.PathLike, policy: str) -> list[Path]:
    """``--keep_checkpoints`` on a run that is complete (``final/`` and ``summary.json`` written, not stopped early):
    ``none`` deletes every ``checkpoint-N``, ``last`` all but the newest complete one, ``all`` none of them. Call it
    on process 0 only, once the others are done with the checkpoints. Also removes what a deletion killed midway left
    (``.deleting-*``). Returns the deleted folders, oldest first."""
    out = Path(output_dir)
    if policy not in KEEP_CHECKPOINTS:
        raise ValueError(f"keep_checkpoints {policy!r}: one of {', '.join(KEEP_CHECKPOINTS)}")
    for trash in out.glob(TRASH_PREFIX + CHECKPOINT_PREFIX + "*"):
        shutil.rmtree(trash, ignore_errors=True)
    if policy == "all":
        return []
    keep = next((p for _, p in reversed(checkpoint_folders(out)) if is_complete(p)), None) if policy == "last" else None
    gone = [p for _, p in checkpoint_folders(out) if p != keep]
    for path in gone:
        delete_checkpoint(path)
    if gone:
        logger.info("deleted %s (keep_checkpoints %s; the run is complete, final/ is its model)",
                    ", ".join(p.name for p in gone), policy)
    return gone
