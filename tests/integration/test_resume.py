"""A resume continues the run that was started: `sftgo train --output_dir RUN --resume_from_checkpoint last` trains
the run's own model on its own data, says what it resumed, and ends with the train_loss of an uninterrupted run; a
start that fails leaves the run directory as it was; Ctrl-C prints the command that resumes (tiny models, offline)."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from sftgo.cli import main
from sftgo.rundir import checkpoint_folders, is_complete


@pytest.fixture(scope="module")
def tied_model_dir(tmp_path_factory, chat_tokenizer):
    """A tiny Llama whose lm_head is its input embedding (tie_word_embeddings, as SmolLM2)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tied_model")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(chat_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(d)
    chat_tokenizer.save_pretrained(d)
    return str(d)


def _args(tmp_path, model_dir, data, out, *extra):
    return ["train", "--model_name_or_path", model_dir, "--dataset", data, "--output_dir", str(out),
            "--max_steps", "4", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--max_length", "64",
            "--score_cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "true", "--use_cpu", "true",
            "--report_to", "none", *extra]


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_resume_with_flags_alone_continues_the_run_and_its_train_loss(tmp_path, tied_model_dir, alpaca_file,
                                                                        caplog):
    # Uninterrupted, logging every step: train_loss is the mean of the logged step losses.
    full = tmp_path / "full"
    assert main(_args(tmp_path, tied_model_dir, alpaca_file, full, "--logging_steps", "1", "--save_steps", "2")) == 0
    whole = _losses(full)
    assert sorted(whole) == [1, 2, 3, 4]
    assert _summary(full)["train_loss"] == pytest.approx(sum(whole.values()) / 4, rel=1e-9)

    # The same run stopped after step 3 (logging every 2 steps: step 3's loss was not logged when it was saved), then
    # resumed with nothing but its directory.
    run = tmp_path / "run"
    assert main(_args(tmp_path, tied_model_dir, alpaca_file, run, "--logging_steps", "2", "--save_steps", "3",
                      "--stop_after_steps", "3")) == 0
    warnings = []  # what transformers logs (its loggers do not propagate to the root logger caplog reads)
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO):
            assert main(["train", "--output_dir", str(run), "--resume_from_checkpoint", "last"]) == 0
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert f"resuming {run} from checkpoint-3 (step 3 of 4, leg 2)" in caplog.text
    assert not [w for w in warnings if "lm_head" in w or "missing keys" in w]  # the tied head is not reported missing
    s = _summary(run)
    assert s["steps"] == 4 and s["legs"] == 2 and s["resumed_from"].endswith("checkpoint-3")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model_name_or_path"] == tied_model_dir and cfg["dataset"] == alpaca_file
    assert cfg["stop_after_steps"] is None  # this leg ran to the end; the file says so
    # the window mean at logging_steps 2 is the mean of the steps' losses; train_loss is the whole run's mean
    assert _losses(run)[2] == pytest.approx((whole[1] + whole[2]) / 2, rel=1e-6)
    assert s["train_loss"] == pytest.approx(_summary(full)["train_loss"], rel=1e-6)


def test_a_kept_missing_key_is_still_reported(tied_model_dir, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from sftgo.trainer import tied_aliases

    tied = AutoModelForCausalLM.from_pretrained(tied_model_dir)
    assert tied_aliases(tied, ["lm_head.weight"]) == {"lm_head.weight"}
    assert tied_aliases(tied, ["lm_head.weight", "model.embed_tokens.weight"]) == set()  # neither was loaded
    untied = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tied_aliases(untied, ["lm_head.weight"]) == set()


def _snapshot(d):
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*"))}


def test_a_start_that_fails_leaves_the_run_directory_as_it_was(tmp_path, tiny_model_dir, alpaca_file, capsys):
    run = tmp_path / "run"
    assert main(_args(tmp_path, tiny_model_dir, alpaca_file, run, "--max_steps", "2", "--save_steps", "1")) == 0
    before = _snapshot(run)
    for bad in (["--model_name_or_path", "/does/not/exist"], ["--dataset", "/does/not/exist.jsonl"]):
        capsys.readouterr()
        assert main(_args(tmp_path, tiny_model_dir, alpaca_file, run, *bad)) == 2  # a fresh start into the run
        assert main(_args(tmp_path, tiny_model_dir, alpaca_file, run, *bad, "--resume_from_checkpoint", "last",
                          "--allow_config_change", "true")) == 2
        assert "does not exist" in capsys.readouterr().err
        assert _snapshot(run) == before
    assert main(["train", "--output_dir", str(run), "--resume_from_checkpoint", "last", "--objective", "sft"]) == 2
    assert "objective: sft-go -> sft" in capsys.readouterr().err
    assert _snapshot(run) == before


LAUNCHER = textwrap.dedent('''
    import os, sys, time
    from sftgo import startup_gc
    startup_gc.pause()  # as the sftgo process starts a run: no garbage collection until its first step
    import sftgo.trainer as tr

    orig = tr._StepEnd.on_step_end
    def on_step_end(self, *a, **kw):  # slow steps, so that the test's Ctrl-C lands while training
        time.sleep(float(os.environ["STEP_SLEEP"]))
        return orig(self, *a, **kw)
    tr._StepEnd.on_step_end = on_step_end

    from sftgo.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def test_ctrl_c_prints_the_command_that_resumes(tmp_path, tiny_model_dir, alpaca_file, caplog):
    run = tmp_path / "run"
    args = _args(tmp_path, tiny_model_dir, alpaca_file, run, "--max_steps", "12", "--save_steps", "2",
                 "--logging_steps", "1", "--objective", "sft-go-dro", "--dro_eta", "0.5")
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "STEP_SLEEP": "1.0", "CUDA_VISIBLE_DEVICES": ""}
    # SIGINT at its default in the child, as in a terminal's foreground job: a suite started in the background from a
    # script (`make test &`, nohup) inherits SIGINT ignored, Python then leaves it ignored, and the run finished with
    # rc 0 (a fresh-clone `make test` started from a background script failed so; `(trap '' INT; pytest ...)`
    # reproduces it)
    p = subprocess.Popen([sys.executable, str(launcher), *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        # any complete checkpoint: checkpoint-2 alone is deleted at step 6 (save_total_limit 2)
        while not (any(is_complete(c) for _, c in checkpoint_folders(run)) and len(_losses_or_none(run)) >= 3):
            assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.time() < deadline, "training did not get to step 3"
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("interrupted")] == lines[-1:]
    m = re.fullmatch(r"interrupted at step (\d+); resume with: (.*)", lines[-1])
    assert m, lines[-1]
    step, command = int(m.group(1)), m.group(2)
    logged = max(_losses_or_none(run))
    assert 3 <= logged <= step <= logged + 1 < 12
    assert command == shlex.join([sys.executable, "-m", "sftgo.cli", *args, "--resume_from_checkpoint", "last"])
    done = [s for s, c in checkpoint_folders(run) if is_complete(c)]
    assert done and done[-1] >= 2
    for s in done:  # every checkpoint marked complete holds what a resume reads
        names = {f.name for f in (run / f"checkpoint-{s}").iterdir()}
        assert {"trainer_state.json", "sftgo_counters.json", "optimizer.pt", "model.safetensors"} <= names
    config = (run / "config.yaml").read_bytes(), (run / "config.yaml").stat().st_mtime_ns

    # The printed command, run here (in this process: one interpreter start less)
    words = shlex.split(command)
    assert words[:3] == [sys.executable, "-m", "sftgo.cli"]
    with caplog.at_level(logging.INFO):
        assert main(words[3:]) == 0
    s = _summary(run)
    assert s["steps"] == 12 and s["resumed_from"].endswith(f"checkpoint-{done[-1]}")
    assert f"from checkpoint-{done[-1]} (step {done[-1]} of 12, leg 2)" in caplog.text
    assert sorted(_losses(run)) == list(range(1, 13))
    # the same settings: config.yaml not rewritten
    assert ((run / "config.yaml").read_bytes(), (run / "config.yaml").stat().st_mtime_ns) == config


def _losses_or_none(run):
    try:
        return {r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r}
    except (OSError, ValueError):
        return set()
