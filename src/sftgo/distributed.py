"""Work done once per job in a multi-process run (torchrun / accelerate launch), not once per process.

Before training, every process needs the same tokenized data and the same static token columns (scorer importance,
reference log-probs). Computing them in every process multiplies the work by the number of processes (8 GPUs ran the
same Rho-1 reference pass 8 times) and had every process write the same cache files at once. Here:

* :func:`on_main` -- process 0 computes, every process receives the result (``broadcast_object_list``: no shared
  filesystem needed, so it also holds across nodes);
* :func:`shard` / :func:`gather_shards` -- each process computes its share of a list of work items and every process
  gets the whole result, in order (the reference forward pass: 8 GPUs do 1/8 each).

An exception in the computing process reaches every process (re-raised there), instead of leaving the others
waiting at the collective forever. Without an initialized process group (one process) these are plain calls.
"""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(this process's global rank, number of processes); (0, 1) without an initialized process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _broadcast(obj, src: int = 0):
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class _Failed:
    """What process 0 sends instead of a result when its computation raised."""

    def __init__(self, error: BaseException):
        self.error = error


def on_main(compute: Callable[[], T]) -> T:
    """``compute()`` in process 0 only; every process returns its result (or raises its exception)."""
    rank, size = world()
    if size == 1:
        return compute()
    result = None
    if rank == 0:
        try:
            result = compute()
        except Exception as e:
            _broadcast(_Failed(e))
            raise
    result = _broadcast(result)
    if isinstance(result, _Failed):
        raise result.error
    return result


def shard(items: list, rank: int, size: int) -> list:
    """This process's share of ``items``: every ``size``-th one starting at ``rank`` (balanced when ``items`` is
    sorted by cost, e.g. batches sorted by length)."""
    return items[rank::size]


def gather_shards(compute_shard: Callable[[list], list], items: list) -> list:
    """``compute_shard`` over this process's share of ``items`` (one result per item); every process returns the
    results of all items in the order of ``items``. An exception in any process is raised in every process."""
    import torch.distributed as dist

    rank, size = world()
    if size == 1:
        return compute_shard(items)
    mine: object
    try:
        mine = compute_shard(shard(items, rank, size))
    except Exception as e:
        mine = _Failed(e)
    parts: list = [None] * size
    dist.all_gather_object(parts, mine)
    for p in parts:
        if isinstance(p, _Failed):
            raise p.error
    out: list = [None] * len(items)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out
