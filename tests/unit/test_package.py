import sftgo


def test_public_api_resolves():
    for name in sftgo.__all__:
        assert getattr(sftgo, name) is not None, name


def test_cli_help_lists_commands(capsys):
    from sftgo.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "score", "report"):
        assert cmd in out
    assert main(["frobnicate"]) == 2


def test_train_help_renders(capsys):
    import pytest

    from sftgo.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--objective" in out and "--per_device_train_batch_size" in out


def build_wheel(dest):
    """sftgo's wheel, built from a copy of the sources (so no build/ or egg-info lands in the checkout) with the
    installed setuptools, offline. Returns its path."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    src = Path(dest) / "source"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = Path(dest) / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    str(src), "-w", str(out)], check=True)
    (wheel,) = out.glob("sftgo-*.whl")
    return wheel


def test_wheel_ships_every_recipe_and_resource(tmp_path):
    """The built wheel holds every bundled recipe (what `sftgo recipes` lists and tests/unit/test_config.py validates)
    and the default data, so a pip user gets `sftgo train demo` and `sftgo train paper/...`."""
    import zipfile

    from sftgo.recipes import RECIPE_DIR, recipe_names

    names = set(zipfile.ZipFile(build_wheel(tmp_path)).namelist())
    prefix = "sftgo/resources/recipes/"
    shipped = {n[len(prefix):].rsplit(".", 1)[0] for n in names if n.startswith(prefix)}
    assert shipped == set(recipe_names())
    assert {p.relative_to(RECIPE_DIR).with_suffix("").as_posix() for p in RECIPE_DIR.rglob("*.yaml")} == shipped
    assert {"sftgo/resources/default_sft.jsonl", "sftgo/recipes.py"} <= names
    assert not [n for n in names if n.endswith(".sh")]  # the CPU study scripts need a checkout: they stay out
