import pytest

from sftgo.config import ConfigError, SFTGoConfig, config_to_dict, load_yaml, parse_config
from sftgo.recipes import RECIPE_DIR

# The bundled recipes (configs/ in a checkout links to them; tests/unit/test_package.py checks the wheel holds them all).
# accelerate/ holds `accelerate launch` configs, not sftgo settings: tests/unit/test_launch_configs.py loads them.
ALL_YAML = sorted(p for p in RECIPE_DIR.rglob("*.yaml") if "accelerate" not in p.relative_to(RECIPE_DIR).parts)


def _is_sweep(path):
    import yaml

    from sftgo.sweep import is_sweep_file

    return is_sweep_file(yaml.safe_load(path.read_text()) or {})


CONFIGS = [p for p in ALL_YAML if not _is_sweep(p)]
SWEEPS = [p for p in ALL_YAML if _is_sweep(p)]


def test_configs_exist():
    assert len(CONFIGS) >= 3
    names = {p.name for p in CONFIGS}
    for model in ("llama32_3b", "llama31_8b"):  # the paper recipes: 2 models x 2 datasets x 4 methods
        for data in ("lima", "alpaca"):
            for method in ("sft", "tfidf", "llmlingua2", "rho1"):
                assert f"{model}_{data}_{method}.yaml" in names
    assert len(SWEEPS) >= 4


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
            got = getattr(cfg, k)
            if isinstance(v, dict):  # e.g. fsdp_config: TrainingArguments adds its defaults to what we set
                assert v.items() <= got.items(), k
                continue
            assert got == v or str(got) == str(v), k


def test_paper_recipes_follow_appendix_f():
    """LIMA: 15 epochs, lr 1e-5, weight decay 0.1, batch 64 on 8 GPUs, cosine, no warmup, max length 4096; Rho-1
    grouping uses eta (percentile) like the other groupings."""
    for p in CONFIGS:
        if p.parent.name != "paper":
            continue
        v = load_yaml(p)
        batch = v["per_device_train_batch_size"] * v.get("gradient_accumulation_steps", 1) * 8
        assert v["max_length"] == 4096, p.name
        assert "torchrun --nproc_per_node 8" in p.read_text(), p.name  # the one command for an 8-GPU node
        if "_lima_" in p.name:
            assert (v["num_train_epochs"], float(v["learning_rate"]), v["weight_decay"], batch,
                    v["lr_scheduler_type"], v.get("warmup_steps", 0)) == (15, 1e-5, 0.1, 64, "cosine", 0), p.name
        if p.name.endswith("_rho1.yaml"):  # stage 2: its reference is the stage-1 recipe's model
            assert v["scorer"] == "reference" and "percentile" in v, p.name
            stage1 = p.with_name(p.name.replace("_rho1", "_reference"))
            assert v["ref_model_name_or_path"] == load_yaml(stage1)["output_dir"] + "/final", p.name
        if p.name.endswith("_sft.yaml"):
            assert v["objective"] == "sft", p.name


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_file_plans(path, tmp_path):
    """Each sweep file loads, names train configs that exist and validate, and plans distinct runs."""
    import torch

    from sftgo.sweep import build_parser, load_spec, plan_runs

    args = build_parser().parse_args([str(path), "--output_dir", str(tmp_path / "sweep")])
    args.train_args = []
    spec = load_spec(str(path), args)
    runs, points = plan_runs(spec)
    assert len({r.name for r in runs}) == len(runs) == len(spec.seeds) * (len(points) + (spec.baseline is not None))
    if path.parent.parent.name == "paper":  # the paper's sweeps name their 8-GPU command
        assert spec.launcher and "nproc_per_node 8" in spec.launcher and "sftgo sweep" in path.read_text()
    for r in runs[: len(points) + 1]:  # one seed's worth: every distinct configuration
        cfg = r.config()
        y = tmp_path / f"{r.name}.yaml"
        import yaml

        y.write_text(yaml.safe_dump(cfg))
        extra = ["--bf16", "false"] if cfg.get("bf16") and not torch.cuda.is_available() else []
        parse_config([str(y), "--output_dir", str(tmp_path / r.name), *extra])


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
    ({"objective": "eaft", "eaft_k": 1}, "eaft_k"), ({"objective": "eaft", "eaft_alpha": -0.5}, "eaft_alpha"),
    ({"objective": "eaft", "eaft_alpha": float("nan")}, "eaft_alpha"),
    ({"objective": "asft", "ref_model_name_or_path": "initial", "asft_alpha": -0.1}, "asft_alpha"),
    ({"objective": "asft", "ref_model_name_or_path": "initial", "asft_kl": "js"}, "asft_kl"),
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
