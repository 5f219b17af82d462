"""`--resume_from_checkpoint` reads the run's own config.yaml: flags change only the settings safe to change on a resume,
anything else is refused in one line (or allowed with --allow_config_change), and config.yaml records what changed."""

from __future__ import annotations

import sys

import pytest
import yaml

from sftgo.cli import resume_command
from sftgo.config import ConfigError, config_to_dict, parse_config

FIRST = ["--model_name_or_path", "some/model", "--dataset", "data.jsonl", "--objective", "sft-go", "--lam", "0.5",
         "--per_device_train_batch_size", "4", "--max_steps", "40", "--max_length", "64", "--seed", "7",
         "--stop_after_steps", "20", "--use_cpu", "true", "--report_to", "none"]


@pytest.fixture()
def run(tmp_path):
    """A run directory as `sftgo train` leaves it: its config.yaml (and a checkpoint folder)."""
    d = tmp_path / "run"
    d.mkdir()
    cfg = parse_config([*FIRST, "--output_dir", str(d)])
    (d / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    (d / "checkpoint-20").mkdir()
    return d


def _saved(run):
    return yaml.safe_load((run / "config.yaml").read_text())


def test_flags_alone_continue_with_the_runs_settings(run):
    cfg = parse_config(["--output_dir", str(run), "--resume_from_checkpoint", "last"])
    assert (cfg.model_name_or_path, cfg.dataset, cfg.lam, cfg.seed, cfg.max_length, cfg.max_steps) == \
        ("some/model", "data.jsonl", 0.5, 7, 64, 40)
    # an earlier leg's stop is not inherited: the resumed leg runs to max_steps (and config.yaml says so)
    assert cfg.stop_after_steps is None
    assert cfg.run_config == {**_saved(run), "stop_after_steps": None}
    assert "resume_from_checkpoint" not in cfg.run_config and "allow_config_change" not in cfg.run_config


def test_an_unchanged_resume_records_nothing_new(run):
    cfg = parse_config(["--output_dir", str(run), "--resume_from_checkpoint", "last", "--stop_after_steps", "20"])
    assert cfg.run_config == _saved(run)


def test_safe_changes_are_taken_and_recorded(run):
    cfg = parse_config(["--output_dir", str(run), "--resume_from_checkpoint", "true", "--max_steps", "60",
                        "--logging_steps", "5", "--save_steps", "10", "--dataloader_num_workers", "2"])
    assert (cfg.max_steps, cfg.logging_steps, cfg.save_steps, cfg.dataloader_num_workers) == (60, 5, 10, 2)
    assert cfg.lam == 0.5 and cfg.model_name_or_path == "some/model"
    rec = cfg.run_config
    assert (rec["max_steps"], rec["logging_steps"], rec["save_steps"], rec["dataloader_num_workers"]) == (60, 5, 10, 2)
    assert rec["lam"] == 0.5


@pytest.mark.parametrize("flags,listed", [
    (["--objective", "sft"], ["objective: sft-go -> sft"]),
    (["--lam", "0.9", "--objective", "sft-go-dro"], ["objective: sft-go -> sft-go-dro", "lam: 0.5 -> 0.9"]),
    (["--model_name_or_path", "other/model"], ["model_name_or_path: some/model -> other/model"]),
    (["--dataset", "more.jsonl"], ["dataset: data.jsonl -> more.jsonl"]),
    (["--seed", "8"], ["seed: 7 -> 8"]),
    (["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"],
     ["per_device_train_batch_size: 4 -> 2", "gradient_accumulation_steps: 1 -> 2"]),
    (["--max_length", "128"], ["max_length: 64 -> 128"]),
    (["--packing", "true"], ["packing: false -> true"]),
    (["--warmup_steps", "5"], ["warmup_steps: 0 -> 5"]),  # not in config.yaml (a default then): compared to it
])
def test_a_change_of_the_training_is_refused_in_one_line(run, flags, listed):
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError) as e:
        parse_config(["--output_dir", str(run), "--resume_from_checkpoint", "last", *flags])
    msg = str(e.value)
    assert "\n" not in msg and "--allow_config_change true" in msg and str(run / "config.yaml") in msg
    for item in listed:
        assert item in msg
    assert msg.count(" -> ") == len(listed)
    assert (run / "config.yaml").read_text() == before
    # on purpose: allowed, and recorded
    cfg = parse_config(["--output_dir", str(run), "--resume_from_checkpoint", "last", *flags,
                        "--allow_config_change", "true"])
    for item in listed:
        key, change = item.split(": ", 1)
        assert cfg.run_config[key] == yaml.safe_load(change.split(" -> ")[1])
    assert "allow_config_change" not in cfg.run_config and "allow_config_change" not in config_to_dict(cfg)


def test_a_yaml_file_is_compared_the_same_way(run, tmp_path):
    same = tmp_path / "same.yaml"
    same.write_text((run / "config.yaml").read_text())
    cfg = parse_config([str(same), "--resume_from_checkpoint", "last"])
    assert cfg.run_config == _saved(run) and cfg.lam == 0.5
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**_saved(run), "objective": "sft", "max_steps": 80}))
    with pytest.raises(ConfigError, match="objective: sft-go -> sft") as e:
        parse_config([str(changed), "--resume_from_checkpoint", "last"])
    assert "max_steps" not in str(e.value)  # a safe change: not listed
    # a YAML file is the whole config, as for a fresh start: a setting it leaves out is at its default
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({k: v for k, v in _saved(run).items() if k != "lam"}))
    with pytest.raises(ConfigError, match=r"lam: 0\.5 -> 0\.9"):
        parse_config([str(partial), "--resume_from_checkpoint", "last"])


def test_a_checkpoint_path_resumes_its_own_run(run, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(["--resume_from_checkpoint", str(run / "checkpoint-20")])
    assert cfg.output_dir == str(run) and cfg.model_name_or_path == "some/model" and cfg.lam == 0.5
    with pytest.raises(ConfigError, match="objective: sft-go -> sft"):
        parse_config(["--resume_from_checkpoint", str(run / "checkpoint-20"), "--objective", "sft"])
    # into another directory (a copy of the run): the run's settings, the new place recorded
    cfg = parse_config(["--resume_from_checkpoint", str(run / "checkpoint-20"), "--output_dir", str(tmp_path / "fork")])
    assert cfg.output_dir == str(tmp_path / "fork") and cfg.lam == 0.5
    assert cfg.run_config["output_dir"] == str(tmp_path / "fork")


def test_without_a_config_yaml_the_flags_are_the_config(tmp_path):
    cfg = parse_config(["--output_dir", str(tmp_path / "new"), "--resume_from_checkpoint", "last", "--lam", "0.3"])
    assert cfg.lam == 0.3 and getattr(cfg, "run_config", None) is None


def test_resume_command_adds_or_replaces_the_resume_flag(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/lib/python3/site-packages/sftgo/cli.py"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    py = sys.executable
    assert resume_command(["--output_dir", "runs/my run", "--lam", "0.5"]) == \
        f"{py} -m sftgo.cli train --output_dir 'runs/my run' --lam 0.5 --resume_from_checkpoint last"
    assert resume_command(["c.yaml", "--resume_from_checkpoint", "runs/x/checkpoint-4", "--seed", "1"]) == \
        f"{py} -m sftgo.cli train c.yaml --seed 1 --resume_from_checkpoint last"
    assert resume_command(["--resume_from_checkpoint=true"]).endswith(" train --resume_from_checkpoint last")
    monkeypatch.setattr(sys, "argv", ["/nowhere/bin/sftgo"])  # a console script that is not the one on PATH
    assert resume_command([]) == "/nowhere/bin/sftgo train --resume_from_checkpoint last"


def test_interrupted_prints_one_line_and_returns_130(monkeypatch, capsys):
    import signal

    from sftgo.cli import interrupted

    monkeypatch.setattr(sys, "argv", ["/x/sftgo/cli.py"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert interrupted(["--output_dir", "runs/x"], 48) == 130
        assert capsys.readouterr().err == (f"interrupted at step 48; resume with: {sys.executable} -m sftgo.cli train "
                                           "--output_dir runs/x --resume_from_checkpoint last\n")
        assert interrupted(["--output_dir", "runs/x"], None) == 130  # before training: the same command again
        assert capsys.readouterr().err == (f"interrupted before training began; run again with: {sys.executable} -m "
                                           "sftgo.cli train --output_dir runs/x\n")
        monkeypatch.setenv("RANK", "1")  # one line from the job, not one per process
        assert interrupted(["--output_dir", "runs/x"], 48) == 130 and capsys.readouterr().err == ""
    finally:
        signal.signal(signal.SIGINT, handler)


@pytest.mark.parametrize("cmd", ["train", "eval"])
def test_ctrl_c_during_the_first_imports_is_one_line(cmd, monkeypatch, capsys):
    """Ctrl-C in a command's first seconds (its imports, before it handles Ctrl-C itself) gives one line and 130, not
    a traceback of the import machinery (measured: 11-28 frames within 3 s of `sftgo train`)."""
    import signal

    import sftgo.cli
    from sftgo import startup_gc

    def ctrl_c(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(sftgo.cli, "lean_start", ctrl_c)  # where the entry point's heavy imports begin
    monkeypatch.setattr(startup_gc, "pause", lambda: None)
    monkeypatch.setattr(sys, "argv", ["/x/sftgo/cli.py", cmd, "--output_dir", "runs/x"])
    monkeypatch.delenv("RANK", raising=False)
    handler = signal.getsignal(signal.SIGINT)
    try:
        rc = sftgo.cli.main()
    except KeyboardInterrupt:  # it escaped main: a traceback for the user (and, uncaught, the end of this pytest run)
        rc = "KeyboardInterrupt escaped sftgo.cli.main"
    finally:
        signal.signal(signal.SIGINT, handler)
    assert rc == 130
    want = {"train": f"interrupted before training began; run again with: {sys.executable} -m sftgo.cli train "
                     "--output_dir runs/x\n", "eval": "sftgo eval: interrupted\n"}
    assert capsys.readouterr().err == want[cmd]


def test_the_recorded_dataset_threshold_is_kept_by_a_resume(run, tmp_path):
    """--group_scope dataset: `sftgo train` records the threshold it fixed in config.yaml; a resume takes it, with flags
    alone or with the YAML file the run started from (which leaves it unset), and a different one is refused."""
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump({**{k: v for k, v in _saved(run).items() if k != "group_threshold"},
                                     "group_scope": "dataset"}))
    (run / "config.yaml").write_text(yaml.safe_dump({**_saved(run), "group_scope": "dataset",
                                                     "group_threshold": 0.1234567}))
    for argv in (["--output_dir", str(run)], [str(first)]):
        cfg = parse_config([*argv, "--resume_from_checkpoint", "last"])
        assert (cfg.group_scope, cfg.group_threshold) == ("dataset", 0.1234567), argv
        assert cfg.run_config["group_threshold"] == 0.1234567
    with pytest.raises(ConfigError, match="group_threshold: 0.1234567 -> 0.5"):
        parse_config([str(first), "--resume_from_checkpoint", "last", "--group_threshold", "0.5"])
