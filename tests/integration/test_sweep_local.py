"""The local executor: `--slots 2` trains two runs at once (their training processes overlap in time, by the start /
end stamps the sweep writes around each child in logs/NAME.train.log) with the results of each run trained alone
(`--slots 1` runs one after the other: tests/integration/test_sweep.py's selection sweep checks that); a killed
sweep (SIGKILL) leaves no child process; a run trained again after it was evaluated is evaluated again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_sweep import alive, intervals, run_here, write_fake_eval

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cmd(out, tiny_model_dir, alpaca_file, cache, fake_eval, *extra):
    return [sys.executable, "-m", "sftgo.cli", "sweep", "--grid", "objective=sft,sft-go", "--seeds", "1",
            "--eval", "paper", "--eval_cmd", f"{sys.executable} {fake_eval} {{run_dir}} {{tasks}}",
            "--output_dir", str(out), "--model_name_or_path", tiny_model_dir, "--dataset", alpaca_file,
            "--per_device_train_batch_size", "2", "--max_length", "64", "--score_cache_dir", str(cache), *extra]


@pytest.mark.serial
def test_two_slots_overlap_and_equal_one_slot(tmp_path, tiny_model_dir, alpaca_file, capfd):
    """The two runs of a --slots 2 sweep train at the same time and end with the weights of each run trained alone:
    `sftgo train CONFIG FLAGS` (the run's config the sweep wrote, the sweep's own training flags), which is what a
    --slots 1 sweep runs one after the other; here in this process, with one thread as the sweep's children have
    (_env), into a folder of its own. (Before: a second sweep with --slots 1, two more training processes.)"""
    import torch
    from safetensors.torch import load_file

    fake_eval = write_fake_eval(tmp_path)
    names = ["sft_s1", "sft-go_tfidf_s1"]
    d = tmp_path / "slots2"
    cmd = _cmd(d, tiny_model_dir, alpaca_file, tmp_path / "cache", fake_eval, "--slots", "2", "--max_steps", "6",
               "--save_steps", "3")
    out = run_here(capfd, cmd, _env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (a0, a1), = intervals(d / "logs" / f"{names[0]}.train.log")
    (b0, b1), = intervals(d / "logs" / f"{names[1]}.train.log")
    overlap = min(a1, b1) - max(a0, b0)
    assert overlap.total_seconds() > 0, (a0, a1, b0, b1)
    assert sorted((d / "eval_calls.txt").read_text().split()) == sorted(names)
    runs = json.loads((d / "sweep.json").read_text())["runs"]
    assert {r["state"] for r in runs} == {"complete"}
    results = {2: {n: load_file(d / n / "final" / "model.safetensors") for n in names}, 1: {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        flags = cmd[cmd.index("--output_dir") + 2:]
        del flags[flags.index("--slots"):flags.index("--slots") + 2]  # the sweep's own flag; the rest go to training
        for n in names:
            alone = tmp_path / "alone" / n
            train = run_here(capfd, [sys.executable, "-m", "sftgo.cli", "train", str(d / "configs" / f"{n}.yaml"),
                                     *flags, "--output_dir", str(alone)], _env())
            assert train.returncode == 0, train.stderr[-3000:]
            results[1][n] = load_file(alone / "final" / "model.safetensors")
    finally:
        torch.set_num_threads(threads)
    for n in names:
        worst = max(float((results[2][n][k] - results[1][n][k]).abs().max()) for k in results[1][n])
        assert worst <= 1e-6, (n, worst)
    # ... and the two runs differ from each other (the comparison above could not pass by accident)
    assert max(float((results[1][names[0]][k] - results[1][names[1]][k]).abs().max()) for k in results[1][names[0]]) > 1e-4


def _descendants_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if alive(p)]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and alive(int(p.name)):
            found.append(int(p.name))
    return found


@pytest.mark.serial
def test_killed_two_slot_sweep_leaves_no_child(tmp_path, tiny_model_dir, alpaca_file):
    """SIGKILL of a sweep whose two slots are both training: no handler runs, and still no child outlives it."""
    fake_eval = write_fake_eval(tmp_path)
    d = tmp_path / "sweep"
    proc = subprocess.Popen(_cmd(d, tiny_model_dir, alpaca_file, tmp_path / "cache", fake_eval, "--slots", "2",
                                 "--max_steps", "100000", "--save_steps", "1000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.time() + 300
    pids = []
    while len(pids) < 2:
        assert proc.poll() is None and time.time() < deadline, "both slots never started training"
        time.sleep(0.1)
        try:
            runs = json.loads((d / "sweep.json").read_text())["runs"]
        except (OSError, ValueError):
            continue
        pids = [r["pid"] for r in runs if r.get("state") == "training" and r.get("pid") and alive(r["pid"])]
    assert len(_processes_mentioning(str(d / "configs"))) >= 2  # the two training children, found by their config
    from sftgo.sweep import sweep_status

    assert {r["name"]: (r["state"], r["pid"]) for r in sweep_status(d)} == {
        r["name"]: ("running", r["pid"]) for r in runs}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while (_descendants_alive(pids) or _processes_mentioning(str(d))) and time.time() < deadline:
        time.sleep(0.2)
    left = _descendants_alive(pids) + _processes_mentioning(str(d))
    for p in set(left):  # do not leave them training (max_steps is large) when the test fails
        os.kill(p, signal.SIGKILL)
    assert not _descendants_alive(pids), f"a training child outlived the killed sweep: {left}"
    assert not left, f"a process of the sweep is still running: {left}"
    assert {r["state"] for r in sweep_status(d)} == {"interrupted"}


def test_run_trained_again_after_evaluation_is_evaluated_again(tmp_path, tiny_model_dir, alpaca_file, capfd):
    """A run evaluated by the sweep, then trained further by hand (its summary.json rewritten): the next sweep
    evaluates it again instead of crediting it with the evaluation of the older training; once evaluated for its
    current training it is not evaluated again."""
    fake_eval = write_fake_eval(tmp_path)
    d = tmp_path / "sweep"
    cmd = _cmd(d, tiny_model_dir, alpaca_file, tmp_path / "cache", fake_eval, "--max_steps", "3", "--save_steps", "3",
               "--keep_checkpoints", "last")
    cmd[cmd.index("objective=sft,sft-go")] = "objective=sft"
    out = run_here(capfd, cmd, _env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (d / "eval_calls.txt").read_text().split() == ["sft_s1"]
    # Train sft_s1 further (3 -> 5 steps) with its own config: its summary is rewritten.
    run = d / "sft_s1"
    train = run_here(capfd, [sys.executable, "-m", "sftgo.cli", "train", str(d / "configs" / "sft_s1.yaml"),
                             "--model_name_or_path", tiny_model_dir, "--dataset", alpaca_file,
                             "--per_device_train_batch_size", "2", "--max_length", "64", "--score_cache_dir",
                             str(tmp_path / "cache"), "--max_steps", "5", "--resume_from_checkpoint", "last"], _env())
    assert train.returncode == 0, train.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["resumed_from"].endswith("checkpoint-3")  # kept: keep_checkpoints last
    again = run_here(capfd, cmd, _env())
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (d / "eval_calls.txt").read_text().split() == ["sft_s1", "sft_s1"]
    # The third time it is evaluated for its current training: nothing to do.
    third = run_here(capfd, cmd, _env())
    assert third.returncode == 0 and "sft_s1: complete, skipped" in third.stdout, third.stdout
    assert (d / "eval_calls.txt").read_text().split() == ["sft_s1", "sft_s1"]
