"""The CLI's error contract: the user's mistakes (UserError) are one line and exit 2; a bug keeps its traceback."""

from __future__ import annotations

import pytest

from sftgo.cli import main


def test_bad_setting_is_one_line_exit_2(capsys):
    assert main(["train", "--lam", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lam" in err[0] and "Traceback" not in err[0]


def test_transformers_validation_is_a_user_error_with_its_cause(capsys):
    from sftgo.config import ConfigError, parse_config

    assert main(["train", "--load_best_model_at_end", "true", "--eval_strategy", "steps", "--save_strategy", "epoch"]) == 2
    assert "load_best_model_at_end" in capsys.readouterr().err
    with pytest.raises(ConfigError) as e:
        parse_config(["--load_best_model_at_end", "true", "--eval_strategy", "steps", "--save_strategy", "epoch"])
    assert e.value.__cause__ is not None  # the library's own error is kept as the cause


def test_a_bug_inside_training_keeps_its_traceback(monkeypatch):
    import sftgo.pipeline

    def broken(cfg):
        raise ValueError("an internal bug, not the user's input")

    monkeypatch.setattr(sftgo.pipeline, "run_training", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["train", "--max_steps", "1", "--report_to", "none"])


@pytest.mark.parametrize("flags", [
    ["--objective", "rho1", "--scorer", "reference"],  # Rho-1's own score: the current excess loss
    ["--objective", "sft-go", "--scorer", "reference"],
])
def test_dataset_scope_with_a_dynamic_score_is_refused_saying_why(capsys, flags):
    """--group_scope dataset fixes a threshold before training: the excess loss, which moves every step, is refused."""
    assert main(["train", *flags, "--group_scope", "dataset", "--ref_model_name_or_path", "some/ref"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "group_scope: dataset fixes one threshold before training" in err[0]
    assert "changes every step" in err[0] and "--scorer influence" in err[0] and "Traceback" not in err[0]
