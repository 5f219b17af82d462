from pathlib import Path

import pytest

from sftgo.config import ConfigError, SFTGoConfig, config_to_dict, load_yaml, parse_config

# configs/accelerate/ holds `accelerate launch` configs, not sftgo settings: tests/unit/test_launch_configs.py loads them.
CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "configs").rglob("*.yaml") if "accelerate" not in p.parts)


def test_configs_exist():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path, tmp_path):
    import torch

    values = load_yaml(path)
    extra = []
    if values.get("bf16") and not torch.cuda.is_available():
        extra = ["--bf16", "false"]  # GPU recipes: TrainingArguments refuses bf16 on a CPU-only machine
    cfg = parse_config([str(path), "--output_dir", str(tmp_path), *extra])
    for k, v in values.items():
        if k not in ("output_dir", "bf16"):
            assert getattr(cfg, k) == v or str(getattr(cfg, k)) == str(v), k


def test_flags_override_yaml(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lam: 0.3\nobjective: dft\n")
    cfg = parse_config([str(y), "--lam", "0.7", "--output_dir", str(tmp_path)])
    assert cfg.lam == 0.7 and cfg.objective == "dft"


def test_defaults_are_the_demo(tmp_path):
    cfg = parse_config(["--output_dir", str(tmp_path)])
    assert (cfg.objective, cfg.scorer, cfg.percentile, cfg.lam) == ("sft-go", "tfidf", 90.0, 0.9)


@pytest.mark.parametrize("kw,field", [
    ({"objective": "nope"}, "objective"), ({"lam": 1.5}, "lam"), ({"percentile": 101}, "percentile"),
    ({"target_gamma": "x"}, "target_gamma"), ({"token_head": "gpu"}, "token_head"), ({"infosft_p": 0.4}, "infosft_p"),
])
def test_validation_names_the_field(kw, field, tmp_path):
    with pytest.raises(ConfigError, match=field):
        SFTGoConfig(output_dir=str(tmp_path), **kw)


def test_config_dict_is_yaml_roundtrippable(tmp_path):
    import yaml

    cfg = parse_config(["--output_dir", str(tmp_path), "--lam", "0.4", "--gradient_accumulation_steps", "3"])
    d = config_to_dict(cfg)
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump(d))
    again = parse_config([str(y)])
    assert again.lam == 0.4 and again.gradient_accumulation_steps == 3
