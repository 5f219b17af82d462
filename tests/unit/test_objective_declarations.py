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
    # the names users rely on stay (a new objective is one module and one row: no list here to extend)
    assert {"sft", "sft-go", "rho1", "dft", "infosft", "target-sft", "sft-go-dro", "eaft", "asft"} <= set(OBJECTIVES)
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


@pytest.mark.parametrize("kw,message", [
    ({"objective": "sft", "token_weight": "focal"}, "token_weight: 'focal' is not one of none, dft, infosft, eaft"),
    ({"objective": "target-sft", "token_weight": "dft"}, "token_weight: target-sft is a loss over whole logits rows"),
    ({"objective": "dft", "token_weight": "infosft"}, "objective dft is sft with token_weight dft"),
])
def test_token_weight_errors_name_the_field(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        cfg(tmp_path, **kw)


@pytest.mark.parametrize("objective,token_weight,setting,value,warned", [
    ("sft", "infosft", "infosft_p", 0.9, False),  # the weighting's own setting is read by the aggregator
    ("sft-go", "none", "infosft_p", 0.9, True),  # ... but not without the weighting
    ("rho1", "eaft", "eaft_k", 5, False),
    ("sft-go-dro", "eaft", "infosft_p", 0.9, True),
    ("sft-go", "power", "power_window", "top", False),
    ("sft", "dft", "power_alpha", 0.5, True),
])
def test_token_weight_settings_are_read_only_with_their_weighting(tmp_path, caplog, objective, token_weight, setting,
                                                                  value, warned):
    extra = {"ref_model_name_or_path": "initial"} if objective == "rho1" else {}
    with caplog.at_level(logging.WARNING, logger="sftgo.config"):
        cfg(tmp_path, objective=objective, token_weight=token_weight, **{setting: value}, **extra)
    said = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert bool(said) == warned and (not warned or f"{setting}=" in said[0])


def test_combinations_get_distinct_readable_names_and_labels():
    """A combination is named by its aggregator, its weighting and the weighting's settings; the shorthand keeps its
    name; names and labels of the runs of one comparison are all different."""
    from sftgo.report.runs import method_label
    from sftgo.sweep.plan import point_name

    runs = [{"objective": "sft", "token_weight": "none", "infosft_p": 0.93},
            {"objective": "infosft", "token_weight": "none", "infosft_p": 0.93},
            {"objective": "sft", "token_weight": "infosft", "infosft_p": 0.93},
            {"objective": "sft-go", "scorer": "tfidf", "token_weight": "infosft", "infosft_p": 0.9},
            {"objective": "sft-go", "scorer": "tfidf", "token_weight": "none", "infosft_p": 0.9},
            {"objective": "sft-go", "scorer": "tfidf", "token_weight": "eaft", "infosft_p": 0.9}]
    keys = ["objective", "token_weight", "infosft_p"]
    names = [point_name(c, keys) for c in runs]
    labels = [method_label(c, keys) for c in runs]
    assert names == ["sft_none", "infosft_P0.93", "sft_infosft_P0.93", "sft-go_tfidf_infosft_P0.9", "sft-go_tfidf_none",
                     "sft-go_tfidf_eaft"]
    assert labels[1] == "infosft infosft_p=0.93" and labels[3] == "sft-go tfidf token_weight=infosft infosft_p=0.9"
    assert len(set(labels)) == len(labels)


# ----- the settings' declarations (sftgo.objectives.declare): what ObjectiveArgs, both configs and the checks read

def _declarations():
    from sftgo.objectives import OBJECTIVES, SETTINGS, TOKEN_WEIGHTS
    from sftgo.objectives.common import RunSettings, SharedSettings
    from sftgo.objectives.declare import declared

    parts = [SharedSettings, RunSettings, *(o.Settings for o in OBJECTIVES.values()),
             *(w.Settings for w in TOKEN_WEIGHTS.values())]
    return SETTINGS, [s for part in parts for s in declared(part)]


def test_every_declared_setting_is_a_field_of_both_configs_with_its_default_and_help():
    from dataclasses import fields

    from sftgo.objectives import OBJECTIVES, TOKEN_WEIGHTS, ObjectiveArgs

    settings, every = _declarations()
    assert {s.name for s in every} <= set(settings) and every
    for o in [*OBJECTIVES.values(), *TOKEN_WEIGHTS.values()]:  # a class's settings are declared ones
        assert set(o.settings) <= set(settings), o
    configs = [ObjectiveArgs, SFTGoConfig]
    trl = pytest.importorskip("sftgo.integrations.trl", exc_type=ImportError)
    configs.append(trl.SFTGoSFTConfig)
    for c in configs:
        by_name = {f.name: f for f in fields(c)}
        for s in every:
            f = by_name[s.name]
            assert f.default == s.default, (c.__name__, s.name)
            assert f.metadata["help"] == s.help and s.help.strip(), (c.__name__, s.name)
    assert [f.name for f in fields(ObjectiveArgs)] == list(settings)  # one field per declared setting, in order


# Candidate values, one of which each declared check refuses (a check that refuses none of them fails the test too).
BAD_VALUES = (-1, -1.0, 0, 0.0, 0.5, 1.5, 200.0, float("inf"), True, "nope", 2.5)


@pytest.mark.parametrize("name", [s.name for s in _declarations()[1] if s.check is not None])
def test_a_bad_value_of_each_checked_setting_is_refused_naming_the_field(name):
    from sftgo.objectives import SETTINGS, ObjectiveArgs

    s = SETTINGS[name]
    def refused(v):
        try:
            return s.check(v) is not None
        except (TypeError, ValueError):  # a value of another type (the flag parser converts to the field's type)
            return False

    bad = [v for v in BAD_VALUES if refused(v)]
    assert bad, f"{name}: its check refuses none of {BAD_VALUES}"
    ObjectiveArgs().check_objective()  # the defaults pass
    with pytest.raises(ConfigError, match=f"^{name}: "):
        ObjectiveArgs(**{name: bad[0]}).check_objective()


def test_report_defaults_and_labels_come_from_the_declarations():
    from sftgo.objectives import SETTINGS
    from sftgo.report.runs import SETTINGS_ADDED, SHORT

    # settings older runs lack stay known (an old run directory still groups with a new identical one)
    assert {"token_weight", "eaft_alpha", "eaft_k", "eaft_normalize", "asft_alpha", "asft_kl"} <= set(SETTINGS_ADDED)
    for name, s in SETTINGS.items():
        assert (name in SETTINGS_ADDED) == s.added and (not s.added or SETTINGS_ADDED[name] == s.default)
        assert SHORT.get(name) == s.short
