"""Executors run :class:`~sftgo.sweep.work.RunWork` s and report what became of them; they know nothing of grids, seeds
or selection (the way hydra's launchers know nothing of the sweeper). All share one interface,
:class:`~.base.Executor` (submit, poll, attach, ...); the sweep's one processing loop speaks only to it.

- ``local`` (:mod:`.local`): up to ``slots`` runs at once on this machine, each slot with its own GPUs or its share of
  the CPU threads; interrupting the sweep stops every child.
- ``slurm`` (:mod:`.slurm`): one SLURM job per run through submitit; states from ``squeue``, outcomes from the run
  directories.

A new executor is one module here and one line in :data:`EXECUTORS` (its key is the ``--executor`` / ``executor:``
value).
"""

from __future__ import annotations

from .base import Event, Executor
from .local import LocalExecutor, slot_envs, visible_gpus
from .slurm import (QUEUED_STATES, RUNNING_STATES, SlurmExecutor, sbatch_parameters, short_state, slurm_available,
                    slurm_states)

EXECUTORS: dict[str, type[Executor]] = {
    "local": LocalExecutor,
    "slurm": SlurmExecutor,
}

__all__ = ["EXECUTORS", "Event", "Executor", "LocalExecutor", "QUEUED_STATES", "RUNNING_STATES", "SlurmExecutor",
           "sbatch_parameters", "short_state", "slot_envs", "slurm_available", "slurm_states", "visible_gpus"]
