"""Flags behave like a careful CLI: whole names only, one line per mistake with the closest names, and a `--help`
that starts with sftgo's own options."""

from __future__ import annotations

import re

import pytest

from sftgo.cli import main


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# Each command with a real flag shortened (argparse's prefix matching took these for the whole flag).
ABBREVIATED = [
    (["train", "--learning_rat", "1e-4"], "--learning_rate"),
    (["score", "--output_dir", "o", "--scor", "tfidf"], "--scorer"),
    (["eval", "run", "--heldou", "data.jsonl"], "--heldout"),
    (["generate", "run", "--prompt", "p.jsonl"], "--prompts"),
    (["sweep", "c.yaml", "--output_dir", "sw", "--gri", "lam=0.5"], "--grid"),
    (["report", "run", "--output_d", "out"], "--output_dir"),
]


@pytest.mark.parametrize("argv,whole", ABBREVIATED, ids=[a[0] for a, _ in ABBREVIATED])
def test_abbreviations_are_refused_in_every_command(argv, whole, capsys, monkeypatch, tmp_path):
    import sftgo.pipeline
    import sftgo.score_cmd
    import sftgo.sweep

    def started(*a, **k):
        raise AssertionError("the command started its work")

    for module, name in ((sftgo.pipeline, "run_training"), (sftgo.score_cmd, "score_dataset"), (sftgo.sweep.Sweep, "run")):
        monkeypatch.setattr(module, name, started)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("max_steps: 1\n")
    assert main(argv) == 2
    err = _err(capsys)
    assert len(err) == 1 and "usage" not in err[0], err
    assert err[0] == f"sftgo {argv[0]}: error: unknown flag {argv[-2]}; did you mean {whole}?", err


def test_an_abbreviation_never_reaches_the_config():
    from sftgo.cliargs import FlagError
    from sftgo.config import parse_config

    with pytest.raises(FlagError, match="unknown flag --learning_rat; did you mean --learning_rate"):
        parse_config(["--learning_rat", "1e-4"])


@pytest.mark.parametrize("argv,expected", [
    (["--learnign_rate", "1e-4"], "unknown flag --learnign_rate; did you mean --learning_rate?"),
    (["--learnign-rate=1e-4"], "unknown flag --learnign-rate; did you mean --learning_rate?"),
    (["--eval", "3"], "unknown flag --eval; did you mean "),  # ambiguous as a prefix: once 137 lines of usage
    (["--lam", "x"], "argument --lam: invalid float value: 'x'"),
    (["--learning_rate", "x"], "argument --learning_rate: invalid float value: 'x'"),
    (["--lam"], "argument --lam: expected one argument"),
    (["--zzzqqq", "1"], "unknown flag --zzzqqq; `sftgo train --help` lists the flags"),
])
def test_train_flag_mistakes_are_one_line(argv, expected, capsys):
    assert main(["train", *argv]) == 2
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith(f"sftgo train: error: {expected}"), err


def test_unknown_flag_beats_a_required_one(capsys):
    """`--output_di x` is a typo of the required --output_dir: say so, not that --output_dir is missing."""
    assert main(["score", "--output_di", "x"]) == 2
    assert _err(capsys) == ["sftgo score: error: unknown flag --output_di; did you mean --output_dir?"]


def test_every_spelling_transformers_accepts_still_parses(tmp_path):
    from sftgo.config import parse_config

    cfg = parse_config(["--no_eaft_normalize", "--packing", "--learning-rate", "1e-4", "--lam=0.5",
                        "--output_dir", str(tmp_path), "--report_to", "none"])
    assert (cfg.eaft_normalize, cfg.packing, cfg.learning_rate, cfg.lam) == (False, True, 1e-4, 0.5)
    assert {"eaft_normalize", "packing", "learning_rate", "lam"} <= cfg.explicit_fields
    assert parse_config(["--eaft_normalize", "false", "--output_dir", str(tmp_path)]).eaft_normalize is False


def test_sweep_checks_train_flags_up_front_and_passes_good_ones_on(tmp_path, capsys):
    from sftgo.sweep import build_parser, load_spec, split_argv

    (tmp_path / "c.yaml").write_text("max_steps: 1\n")
    base = [str(tmp_path / "c.yaml"), "--grid", "lam=0.5,0.9", "--output_dir", str(tmp_path / "sw"), "--dry_run"]
    assert main(["sweep", *base, "--learnign_rate", "1e-4"]) == 2
    assert _err(capsys) == ["sftgo sweep: error: unknown flag --learnign_rate; did you mean --learning_rate?"]
    parser = build_parser()
    mine, train = split_argv(parser, [*base, "--no_eaft_normalize", "--learning-rate=1e-4", "--weight_decay", "0.1"])
    args = parser.parse_args(mine)
    args.train_args = train
    assert load_spec(args.config, args).train_args == ["--no_eaft_normalize", "--learning-rate=1e-4", "--weight_decay", "0.1"]


def _help(capsys, flag="--help") -> str:
    with pytest.raises(SystemExit) as e:
        main(["train", flag])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_train_help_shows_sftgo_options_first_with_their_help(capsys):
    from dataclasses import fields

    from sftgo.config import SFTGoConfig, sftgo_field_names

    out = _help(capsys)
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("--objective"))
    assert first < 40, first
    assert "--help_all" in out and "--adam_beta1" not in out  # the transformers options: behind --help_all
    flat = " ".join(out.split()).replace("- ", "-")  # argparse wraps lines after hyphens too
    helps = {f.name: f.metadata.get("help", "") for f in fields(SFTGoConfig)}
    for name in sftgo_field_names():
        assert re.search(rf"^  --{name}\b", out, re.M), name
        words = " ".join(helps[name].split()).replace("- ", "-")[:60]
        assert words and words in flat, (name, words)
    full = _help(capsys, "--help_all")
    assert "--adam_beta1" in full and "--weight_decay" in full
    assert full.index("--objective") < full.index("--adam_beta1")


def test_output_piped_into_head_ends_quietly():
    """`sftgo recipes | head -1`: the reader closes the pipe early; sftgo stops without a BrokenPipeError traceback."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "sftgo.cli", "recipes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         bufsize=0)
    p.stdout.read(1)  # one byte of the first line is out: the rest goes to a closed pipe
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
