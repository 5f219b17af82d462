"""The trainer-owned objective state (the lagged group means, Group-DRO's q) survives a real SIGKILL: with gradient
accumulation 2, a run killed after step 3 and resumed from checkpoint-2 logs the same losses, the same q and ends with
the same weights as the uninterrupted run (the state is saved in every checkpoint and restored exactly)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sftgo.cli import main
from tests.integration.test_kill_resume import LAUNCHER

CASES = {
    "sft-go-lagged": ["--objective", "sft-go", "--group_stats", "lagged", "--percentile", "70"],
    "sft-go-dro": ["--objective", "sft-go-dro", "--dro_eta", "2.0", "--num_groups", "3"],
}


def _train_args(tmp_path, model_dir, data, out, extra, resume=False):
    args = ["train", "--model_name_or_path", model_dir, "--dataset", data,
            "--output_dir", str(out), *extra, "--max_steps", "6", "--save_steps", "2", "--logging_steps", "1",
            "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2", "--learning_rate", "3e-3",
            "--max_length", "64", "--score_cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "true",
            "--use_cpu", "true", "--report_to", "none"]
    return args + (["--resume_from_checkpoint", "true"] if resume else [])


def _run(tmp_path, model_dir, data, out, extra, kill_at):
    """A `sftgo train` process (through test_kill_resume's LAUNCHER), killed at ``kill_at``."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "KILL_AT": kill_at, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(launcher), *_train_args(tmp_path, model_dir, data, out, extra)],
                          env=env, capture_output=True, text=True, timeout=300)


def _records(out):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("case", list(CASES))
def test_objective_state_survives_a_kill_with_accumulation(tmp_path, tiny_model_dir, alpaca_file, case):
    extra = CASES[case]
    full = tmp_path / "full"
    # The runs that are not killed train in this process (`sftgo train` is sftgo.cli.main).
    assert main(_train_args(tmp_path, tiny_model_dir, alpaca_file, full, extra)) == 0

    run = tmp_path / "killed"
    r = _run(tmp_path, tiny_model_dir, alpaca_file, run, extra, kill_at="after_log:3")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    state = json.loads((run / "checkpoint-2" / "sftgo_state.json").read_text())
    assert set(state) == ({"lagged_means"} if "lagged" in case else {"dro_q"})
    assert main(_train_args(tmp_path, tiny_model_dir, alpaca_file, run, extra, resume=True)) == 0
    assert json.loads((run / "summary.json").read_text())["resumed_from"].endswith("checkpoint-2")

    a, b = _records(full), _records(run)
    assert [x["step"] for x in b] == list(range(1, 7))
    keys = ["loss", "loss_ce", "loss_important"] + (["dro_q0", "dro_q1", "dro_q2"] if "dro" in case else ["worst_group"])
    for x, y in zip(a, b):
        for k in keys:
            assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-9), (x["step"], k)
    if "dro" in case:  # q moved away from uniform: the restored state is doing work
        assert abs(a[-1]["dro_q0"] - 1 / 3) > 1e-3
    wa, wb = load_file(full / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-7)
