"""Start-up cost of the ``sftgo`` commands: what each import pulls in, checked in a fresh interpreter.

The test suite and the sweeps start dozens of ``sftgo train`` processes, so a heavy import that slips in at module
level (matplotlib for a figure drawn at the end, pandas, scipy, datasets, ...) costs every one of them. Layering between
sftgo's own modules is tests/unit/test_imports.py; this file checks the third-party packages actually loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sftgo.cli import main

# sftgo's light commands (the command table, report, sweep planning, recipes) load none of these at import
HEAVY = ("torch", "transformers", "numpy", "peft", "matplotlib", "pandas", "scipy", "datasets", "sklearn", "lm_eval",
         "trl", "accelerate", "pyarrow")

# peft comes with transformers' TrainingArguments itself whenever it is installed (transformers.trainer_utils imports
# it, and with it modeling_utils and scipy): marked absent here, so that what sftgo adds on top shows
PROBE = """
import json, sys
def top():
    return {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
import sftgo.cli, sftgo.report, sftgo.sweep, sftgo.recipes
light = top()
sys.modules["peft"] = None
import transformers.training_args
base = top()
import sftgo.config, sftgo.pipeline
print(json.dumps({"light": sorted(light), "added": sorted(top() - base - {"sftgo"})}))
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_imports_pull_in_no_heavy_package_they_do_not_need():
    r = _run(PROBE)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.splitlines()[-1])
    assert not set(got["light"]) & set(HEAVY), got["light"]
    # sftgo.config / sftgo.pipeline (what `sftgo train` imports before it trains): nothing beyond TrainingArguments'
    # own imports; matplotlib (figures), datasets/pandas (Hub and parquet data), peft (LoRA) come when used
    assert got["added"] == [], got["added"]


def test_train_help_skips_peft_and_prints_the_same_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code = ("import sys\nfrom sftgo.cli import main\nsys.argv = ['sftgo', 'train', '--help']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('PEFT', repr(sys.modules.get('peft', 'never imported')))")
    r = _run(code)
    assert r.returncode == 0, r.stderr[-2000:]
    text, _, peft = r.stdout.rpartition("PEFT ")
    assert peft.strip() == "None", peft  # transformers saw no peft: 3-4 s of CPU less
    with pytest.raises(SystemExit):  # in-process, with an argv: peft left alone (this process may train later)
        main(["train", "--help"])
    assert capsys.readouterr().out == text
    assert sys.modules.get("peft", "never imported") is not None
