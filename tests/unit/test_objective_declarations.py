"""The objective declarations are the one table of objective facts: what config validation, the pipeline, report
labels and logging read."""

from __future__ import annotations

import logging

import pytest

from sftgo.config import ConfigError, SFTGoConfig, field_names
from sftgo.objectives import METHOD_SETTINGS, METRIC_SETTINGS, OBJECTIVES


def cfg(tmp_path, **kw):
    return SFTGoConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kw)


def test_declared_settings_are_config_fields():
    assert set(METHOD_SETTINGS) | set(METRIC_SETTINGS) <= field_names()
    assert set(OBJECTIVES) == {"sft", "sft-go", "rho1", "dft", "infosft", "target-sft", "sft-go-dro", "eaft", "asft"}
    assert [n for n, o in OBJECTIVES.items() if o.baseline] == ["sft"]


@pytest.mark.parametrize("objective,setting,value,warned", [
    ("sft", "lam", 0.5, True),
    ("sft-go", "lam", 0.5, False),
    ("rho1", "group_scope", "batch", True),  # Rho-1 always ranks the whole step
    ("rho1", "lam", 0.3, True),
    ("sft-go-dro", "dro_eta", 0.3, False),
    ("sft-go", "dro_eta", 0.3, True),
    ("infosft", "target_topk", 3, True),
    ("eaft", "eaft_k", 5, False),
    ("sft", "eaft_alpha", 2.0, True),
])
def test_a_setting_the_objective_ignores_is_warned_about(tmp_path, caplog, objective, setting, value, warned):
    extra = {"ref_model_name_or_path": "initial"} if objective == "rho1" else {}
    with caplog.at_level(logging.WARNING, logger="sftgo.config"):
        cfg(tmp_path, objective=objective, **{setting: value}, **extra)
    said = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert bool(said) == warned and (not warned or f"{setting}=" in said[0])


def test_reference_requirement_comes_from_the_declaration(tmp_path):
    with pytest.raises(ConfigError, match="ref_model_name_or_path"):
        cfg(tmp_path, objective="rho1")
    with pytest.raises(ConfigError, match="ref_model_name_or_path"):
        cfg(tmp_path, objective="sft-go", scorer="reference")
    cfg(tmp_path, objective="sft-go", scorer="tfidf")  # no reference needed
    with pytest.raises(ConfigError, match="ref_model_name_or_path: objective=asft .*--ref_model_name_or_path initial"):
        cfg(tmp_path, objective="asft")
    assert OBJECTIVES["asft"].needs_ref_model(cfg(tmp_path, objective="asft", ref_model_name_or_path="initial"))
    assert OBJECTIVES["target-sft"].needs_ref_model(cfg(tmp_path, objective="target-sft", target_residual="reference"))
    assert not OBJECTIVES["target-sft"].needs_ref_model(cfg(tmp_path, objective="target-sft"))


def test_report_labels_follow_the_declarations():
    from sftgo.report.runs import method_label

    varying = ["objective", "lam", "percentile", "infosft_p"]
    assert method_label({"objective": "sft", "lam": 0.9, "percentile": 70}, varying) == "sft"
    assert method_label({"objective": "sft-go", "scorer": "tfidf", "lam": 0.9, "percentile": 70}, varying) \
        == "sft-go tfidf lam=0.9 eta=70"
    assert method_label({"objective": "infosft", "infosft_p": 0.9, "lam": 0.9}, varying) == "infosft infosft_p=0.9"
