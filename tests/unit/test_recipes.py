"""Bundled recipes (src/sftgo/resources/recipes/, configs/ in a checkout): found by name from any working directory, a
real file keeps priority, an unknown name gets one line with the closest names, `sftgo recipes` lists and copies them,
and sweep files name train configs the same way."""

from pathlib import Path

import pytest

from sftgo.cli import main
from sftgo.config import ConfigError, load_yaml, parse_config
from sftgo.recipes import RECIPE_DIR, recipe_names, resolve_recipe

CHECKOUT = Path(__file__).parents[2]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory with no configs/ in it, as a pip user has."""
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def test_configs_in_a_checkout_are_the_bundled_recipes():
    # configs/ links to the package's recipes: one copy in git, and `sftgo train configs/demo.yaml` still works here.
    assert (CHECKOUT / "configs").resolve() == RECIPE_DIR.resolve()
    assert (CHECKOUT / "configs" / "demo.yaml").read_text() == (RECIPE_DIR / "demo.yaml").read_text()


def test_names_cover_every_yaml_and_kind():
    names = recipe_names()
    assert "demo" in names and "paper/llama32_3b_alpaca_tfidf" in names
    assert "paper/sweeps/table2_alpaca_llama32_3b" in names and "accelerate/fsdp" in names
    assert len(names) == len(list(RECIPE_DIR.rglob("*.yaml")))


@pytest.mark.parametrize("given", ["paper/llama32_3b_alpaca_tfidf", "paper/llama32_3b_alpaca_tfidf.yaml",
                                   "configs/paper/llama32_3b_alpaca_tfidf.yaml"])
def test_train_resolves_a_recipe_by_name_anywhere(elsewhere, given):
    cfg = parse_config([given, "--output_dir", str(elsewhere / "run"), "--bf16", "false"])
    assert (cfg.model_name_or_path, cfg.dataset, cfg.max_length) == ("meta-llama/Llama-3.2-3B", "tatsu-lab/alpaca", 4096)


def test_demo_by_name(elsewhere):
    cfg = parse_config(["demo", "--output_dir", str(elsewhere / "run")])
    assert cfg.max_steps == load_yaml(RECIPE_DIR / "demo.yaml")["max_steps"]


def test_a_real_file_keeps_priority(elsewhere):
    mine = elsewhere / "paper" / "llama32_3b_alpaca_tfidf.yaml"
    mine.parent.mkdir()
    mine.write_text("objective: sft\nlam: 0.25\n")
    cfg = parse_config(["paper/llama32_3b_alpaca_tfidf.yaml", "--output_dir", str(elsewhere / "run")])
    assert (cfg.objective, cfg.lam, cfg.model_name_or_path) == ("sft", 0.25, "smollm2-135m-instruct")
    (elsewhere / "demo").mkdir()  # a folder of that name is no config file: the recipe still resolves
    assert resolve_recipe("demo") == RECIPE_DIR / "demo.yaml"


@pytest.mark.parametrize("given,close", [("paper/llama32_3b_alpaca_tfdif", "paper/llama32_3b_alpaca_tfidf"),
                                         ("llama32_3b_lima_sft", "paper/llama32_3b_lima_sft"),
                                         ("demoo.yaml", "demo")])
def test_unknown_name_one_line_with_closest(elsewhere, capsys, given, close):
    with pytest.raises(ConfigError) as e:
        parse_config([given])
    msg = str(e.value)
    assert "\n" not in msg and given in msg and "sftgo recipes" in msg
    assert close in msg.split("did you mean", 1)[1].split()[0].rstrip(",?")  # the closest name comes first
    assert main(["train", given]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sftgo train: error:" in err and close in err.split("did you mean", 1)[1]


def test_recipes_lists_names_with_descriptions(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert set(lines) == set(recipe_names())
    assert "Llama-3.2-3B on Alpaca" in lines["paper/llama32_3b_alpaca_tfidf"]
    assert "demo" in lines["demo"].split(None, 1)[1]
    assert out.index("paper/llama32_3b_alpaca_tfidf") < out.index("sftgo sweep") < out.index("paper/sweeps/table1")


def test_recipes_copy_then_train_the_copy(elsewhere, capsys):
    assert main(["recipes", "copy", "paper/llama32_3b_lima_sft"]) == 0
    copied = elsewhere / "llama32_3b_lima_sft.yaml"
    assert copied.read_text() == (RECIPE_DIR / "paper" / "llama32_3b_lima_sft.yaml").read_text()
    assert f"sftgo train {copied.name}" in capsys.readouterr().out
    assert main(["recipes", "copy", "paper/llama32_3b_lima_sft"]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    (elsewhere / "mine").mkdir()
    assert main(["recipes", "copy", "demo", "mine"]) == 0 and (elsewhere / "mine" / "demo.yaml").is_file()
    assert main(["recipes", "copy", "demo", "edited.yaml"]) == 0
    capsys.readouterr()
    assert main(["recipes", "copy", "dmeo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "demo" in err and "sftgo recipes" in err
    assert main(["recipes", "path", "accelerate/ddp"]) == 0
    assert Path(capsys.readouterr().out.strip()) == RECIPE_DIR / "accelerate" / "ddp.yaml"


def _plan(path, tmp_path):
    from sftgo.sweep import build_parser, load_spec, plan_runs

    args = build_parser().parse_args([str(path), "--output_dir", str(tmp_path / "sweep")])
    args.train_args = []
    return plan_runs(load_spec(str(path), args))


def test_bundled_sweep_by_name_and_copied(elsewhere, tmp_path):
    runs, points = _plan("paper/sweeps/table2_alpaca_llama32_3b", tmp_path)
    assert {p["config"].get("scorer") for p in points} >= {"tfidf", "llmlingua2", "reference"}
    assert all(p["config"]["model_name_or_path"] == "meta-llama/Llama-3.2-3B" for p in points)
    # a copied sweep file still finds the train configs it names (by recipe name, not relative to its folder)
    assert main(["recipes", "copy", "paper/sweeps/table2_alpaca_llama32_3b", "t2.yaml"]) == 0
    runs2, points2 = _plan(elsewhere / "t2.yaml", tmp_path)
    assert [p["config"] for p in points2] == [p["config"] for p in points]


def test_sweep_file_names_a_recipe(elsewhere, tmp_path):
    (elsewhere / "s.yaml").write_text("config: demo\ngrid: {percentile: [70, 90]}\n")
    runs, points = _plan(elsewhere / "s.yaml", tmp_path)
    assert [p["config"]["max_steps"] for p in points] == [load_yaml(RECIPE_DIR / "demo.yaml")["max_steps"]] * 2
    (elsewhere / "bad.yaml").write_text("config: demoo\ngrid: {percentile: [70, 90]}\n")
    from sftgo.sweep import SweepError

    with pytest.raises(SweepError, match=r"bad.yaml: config: train config demoo does not exist.*did you mean demo"):
        _plan(elsewhere / "bad.yaml", tmp_path)


def test_a_bundled_sweep_reads_its_relative_paths_from_its_own_folder(elsewhere, tmp_path, monkeypatch):
    import sftgo.recipes

    book = tmp_path / "book"
    (book / "mine" / "sweeps").mkdir(parents=True)
    (book / "mine" / "base.yaml").write_text("# base\nmax_steps: 7\n")
    (book / "mine" / "sweeps" / "s.yaml").write_text("# s\nconfig: ../base.yaml\ngrid: {lam: [0.1, 0.2]}\n")
    monkeypatch.setattr(sftgo.recipes, "RECIPE_DIR", book)
    runs, points = _plan("mine/sweeps/s", tmp_path)
    assert [p["config"]["max_steps"] for p in points] == [7, 7]


def test_a_sweep_file_extends_another(elsewhere, tmp_path):
    """`extends:` starts from another sweep file: `set`, `grid`, `slurm` merge key by key (this file's values win),
    other keys are replaced whole, and each file's relative paths are read from its own folder."""
    a, b = elsewhere / "a", elsewhere / "b"
    a.mkdir(), b.mkdir()
    (a / "train.yaml").write_text("objective: sft-go\nscorer: tfidf\nmax_steps: 7\nlearning_rate: 0.001\n")
    (a / "base.yaml").write_text("config: train.yaml\nset: {max_steps: 5, save_steps: 5}\n"
                                 "grid: {lam: [0.1, 0.2], percentile: [70, 90]}\n"
                                 "variants: [{scorer: frequency}, {lam_min: 0.0}]\n"
                                 "seeds: [1, 2]\neval_cmd: 'ev {run_dir}'\n")
    (b / "long.yaml").write_text("extends: ../a/base.yaml\nset: {max_steps: 9}\ngrid: {lam: [0.5]}\nseeds: [3]\n")
    runs, points = _plan(b / "long.yaml", tmp_path)
    assert {r.seed for r in runs} == {3}  # replaced
    cfgs = [r.config() for r in runs]
    assert {(c["max_steps"], c["save_steps"], c["learning_rate"]) for c in cfgs} == {(9, 5, 0.001)}  # set merged
    assert sorted((c["scorer"], c.get("lam_min"), c["lam"], c["percentile"]) for c in cfgs) == sorted(
        v + (0.5, p) for v in (("frequency", None), ("tfidf", 0.0)) for p in (70, 90))  # grid merged, variants kept
    from sftgo.sweep import build_parser, load_spec

    args = build_parser().parse_args([str(b / "long.yaml"), "--output_dir", str(tmp_path / "s")])
    args.train_args = []
    assert load_spec(str(b / "long.yaml"), args).eval_cmd == "ev {run_dir}"  # kept
    # a chain, and a file extending a bundled sweep by name
    (b / "longer.yaml").write_text("extends: long.yaml\nset: {save_steps: 3}\n")
    longer = {(r.config()["max_steps"], r.config()["save_steps"]) for r in _plan(b / "longer.yaml", tmp_path)[0]}
    assert longer == {(9, 3)}
    (b / "paper.yaml").write_text("extends: paper/sweeps/table2_alpaca_llama32_3b\nseeds: [7]\n")
    base_runs, _ = _plan("paper/sweeps/table2_alpaca_llama32_3b", tmp_path)
    runs, _ = _plan(b / "paper.yaml", tmp_path)
    assert [r.name.replace("_s7", "") for r in runs] == [r.name.replace("_s1", "") for r in base_runs if r.seed == 1]
    # mistakes are one line naming the file and the fix
    from sftgo.sweep import SweepError

    (b / "loop1.yaml").write_text("extends: loop2.yaml\ngrid: {lam: [0.5]}\n")
    (b / "loop2.yaml").write_text("extends: loop1.yaml\n")
    with pytest.raises(SweepError, match=r"loop1.yaml: extends loop2.yaml: extends loop1.yaml, which leads back to "
                                         r"itself \(loop1.yaml -> loop2.yaml -> loop1.yaml\)"):
        _plan(b / "loop1.yaml", tmp_path)
    (b / "train_cfg.yaml").write_text("extends: ../a/train.yaml\n")
    with pytest.raises(SweepError, match=r"extends ../a/train.yaml, which is not a sweep file \(a train YAML goes "
                                         r"under `config:`\)"):
        _plan(b / "train_cfg.yaml", tmp_path)
    (b / "typo.yaml").write_text("extends: ../a/bsae.yaml\n")
    with pytest.raises(SweepError, match=r"typo.yaml: extends: sweep file ../a/bsae.yaml does not exist"):
        _plan(b / "typo.yaml", tmp_path)


def test_the_study_sweeps_on_a_longer_schedule_extend_their_40_epoch_files(tmp_path):
    """configs/cpu/sweeps/study4_*_long.yaml: the same runs as the file they extend, with max_steps 3x and nothing
    else changed but save_steps (and, on the synthetic set, one more evaluation)."""
    for name, steps in (("alpaca", 960), ("gsm8k", 960), ("synth", 1440)):
        base, _ = _plan(f"cpu/sweeps/study4_{name}", tmp_path)
        long, _ = _plan(f"cpu/sweeps/study4_{name}_long", tmp_path)
        assert [r.name for r in long] == [r.name for r in base]
        for r, s in zip(long, base):
            c, d = r.config(), s.config()
            assert c.pop("max_steps") == steps == 3 * d.pop("max_steps") and c.pop("save_steps") == 240
            d.pop("save_steps", None)
            assert c == d, r.name
