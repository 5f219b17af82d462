"""The training order is a function of (seed, epoch) only: every optimizer step sees the same examples whatever the
process count / micro-batch / accumulation split of the same global batch (accelerate's own sharding wrapper)."""

import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from sftgo.trainer import StepOrderSampler


def step_sets(n, seed, processes, micro, accum, epoch=0):
    """Examples of each optimizer step, as the Trainer would see them across all processes."""
    per_rank = []
    for rank in range(processes):
        sampler = StepOrderSampler(n, seed)
        sampler.set_epoch(epoch)
        shard = BatchSamplerShard(BatchSampler(sampler, micro, drop_last=False), num_processes=processes,
                                  process_index=rank)
        per_rank.append(list(shard))
    steps = []
    for s in range(len(per_rank[0]) // accum):
        steps.append(sorted(i for r in per_rank for b in r[s * accum:(s + 1) * accum] for i in b))
    return steps


@pytest.mark.parametrize("processes,micro,accum", [(1, 1, 4), (2, 2, 1), (2, 1, 2), (4, 1, 1)])
def test_same_global_batches_for_every_split(processes, micro, accum):
    ref = step_sets(16, 7, 1, 4, 1)
    assert step_sets(16, 7, processes, micro, accum) == ref
    assert ref != [list(range(i, i + 4)) for i in range(0, 16, 4)]  # it does shuffle


def test_epoch_and_seed_change_the_order():
    assert step_sets(16, 7, 1, 4, 1, epoch=1) != step_sets(16, 7, 1, 4, 1, epoch=0)
    assert step_sets(16, 8, 1, 4, 1) != step_sets(16, 7, 1, 4, 1)
