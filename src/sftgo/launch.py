"""How `sftgo train` was launched: a warning when several processes were asked for but this one runs alone.

accelerate 1.16's simple launcher — what `accelerate launch --cpu --num_processes N` (or a config without a
multi-process backend) uses — starts ONE process: several CPU processes only come through MPI (--mpirun_hostfile).
It still sets MASTER_ADDR / MASTER_PORT, which it does only when num_processes > 1, but no WORLD_SIZE / RANK, so the
"N-process" run is a 1-process run with a 1/N global batch. torchrun (and accelerate's multi-GPU launcher, which is
torchrun) set WORLD_SIZE in every process.
"""

from __future__ import annotations

import os

CPU_COMMAND = "torchrun --nproc_per_node N -m sftgo.cli train ... --use_cpu true --ddp_backend gloo"


def lone_process_warning(env=None) -> str | None:
    """The warning for a process that accelerate launched as one of several but that runs alone, else None."""
    env = os.environ if env is None else env
    by_accelerate = "ACCELERATE_MIXED_PRECISION" in env  # set by every accelerate launcher
    world = env.get("WORLD_SIZE")
    if by_accelerate and env.get("MASTER_ADDR") and world in (None, "", "1"):
        return ("accelerate launch was asked for several processes (it set MASTER_ADDR) but started only this one "
                "(no WORLD_SIZE): its --cpu launcher runs one process. For N CPU processes use: " + CPU_COMMAND)
    return None
