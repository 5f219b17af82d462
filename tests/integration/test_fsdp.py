"""FSDP2 full shard with sftgo's per-token head, on CPU with 2 gloo processes: the same losses and the same updated
weights as one process with the whole batch. (DeepSpeed ZeRO-2/3 cannot run here: no CUDA; see the README.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("fsdp_worker.py")


def _run_fsdp(tmp_path, objectives, *extra, port=29531):
    out = tmp_path / "fsdp.pt"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), str(WORKER), str(out),
                           objectives, *extra], capture_output=True, text=True, timeout=300, env=env)
    return proc, out


def _single(tmp_path, objective):
    from tests.integration.fsdp_worker import batch_for, setup

    model, tok, trainer, examples, columns = setup(objective, 1, str(tmp_path / "single"))
    full = batch_for(tok, examples, columns)
    K = (full["labels"][:, 1:] != -100).sum()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(2):
        loss = trainer.compute_loss(model, dict(full), num_items_in_batch=K)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    return losses, model.state_dict()


@pytest.mark.serial
def test_fsdp_full_shard_equals_one_process(tmp_path):
    objectives = ["sft", "dft"]  # additive objectives: the step's loss is a sum over tokens, whatever the split
    proc, out = _run_fsdp(tmp_path, ",".join(objectives))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(out)
    for objective in objectives:
        got = results[objective]
        losses, state = _single(tmp_path, objective)
        assert got["losses"] == pytest.approx(losses, rel=1e-5), objective
        if objective == "sft":
            assert losses[1] < losses[0]  # the steps moved the weights
        for k, v in state.items():
            torch.testing.assert_close(got["state"][k], v, atol=1e-5, rtol=1e-5, msg=lambda m: f"{objective} {k}: {m}")


@pytest.mark.serial
def test_lm_head_in_its_own_fsdp_unit_is_a_clear_error(tmp_path):
    proc, _ = _run_fsdp(tmp_path, "sft", "wrap_head", port=29532)
    assert proc.returncode != 0
    assert "FSDP unit" in proc.stderr
