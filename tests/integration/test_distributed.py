"""Two CPU processes (torchrun + gloo DDP) train exactly like one process with the same global batch.

This checks the normalization path that multi-GPU runs use: the loss is divided by the supervised-token count of the
whole optimizer step across micro-batches and ranks, and DDP's gradient averaging is undone."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sftgo.cli import main
from tests.conftest import EXAMPLES


def _records(out):
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("objective", ["sft", "dft"])
def test_two_processes_equal_one(tmp_path, tiny_model_dir, objective):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES * 4))
    common = ["--model_name_or_path", tiny_model_dir, "--dataset", str(data), "--max_steps", "3",
              "--gradient_accumulation_steps", "2", "--disable_tqdm", "true", "--objective", objective,
              "--learning_rate", "1e-3", "--score_cache_dir", str(tmp_path / "cache")]
    ddp_out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "sftgo.cli", "train", *common,
         "--output_dir", str(ddp_out), "--per_device_train_batch_size", "2", "--use_cpu", "true", "--ddp_backend", "gloo"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single_out = tmp_path / "single"
    assert main(["train", *common, "--output_dir", str(single_out), "--per_device_train_batch_size", "4"]) == 0
    ddp, single = _records(ddp_out), _records(single_out)
    assert len(ddp) == len(single) == 3
    for a, b in zip(ddp, single):
        assert a["tokens"] == b["tokens"]  # metrics are summed over both ranks
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
