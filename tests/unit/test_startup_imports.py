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

from sftgo.cli import NOT_FOR_TRANSFORMERS, main

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
            "from transformers.utils import import_utils as iu\n"
            "print('PEFT', repr(sys.modules.get('peft', 'never imported')), iu.is_peft_available())")
    r = _run(code)
    assert r.returncode == 0, r.stderr[-2000:]
    text, _, peft = r.stdout.rpartition("PEFT ")
    assert peft.strip() == "'never imported' False", peft  # transformers saw no peft: 3-4 s of CPU less
    with pytest.raises(SystemExit):  # in-process, with an argv: peft left alone (this process may train later)
        main(["train", "--help"])
    assert capsys.readouterr().out == text
    assert sys.modules.get("peft", "never imported") is not None


# `sftgo train` as the sftgo process runs it (main() without argv), stopped by a missing model folder right after
# sftgo.config has loaded transformers' TrainingArguments, model code and Trainer (what every run imports)
LEAN = """
import json, sys
from sftgo.cli import main
sys.argv = ["sftgo", "train", "--model_name_or_path", "/nonexistent/model", "--output_dir", {out!r}]
rc = main()
import sftgo.pipeline, sftgo.trainer, transformers.trainer, transformers.modeling_utils
from transformers.utils import import_utils as iu
loaded = sorted(m for m in ("datasets", "scipy", "pandas", "pyarrow", "peft") if m in sys.modules)
import datasets  # still there for whoever asks for it: sftgo's Hub / save_to_disk reader, lm-evaluation-harness
print(json.dumps({{"rc": rc, "loaded": loaded,
                  "transformers_sees": [iu.is_datasets_available(), iu.is_scipy_available(), iu.is_peft_available()],
                  "rows": datasets.Dataset.from_dict({{"a": [1, 2]}}).num_rows}}))
"""


def test_sftgo_commands_start_without_datasets_and_scipy(tmp_path):
    """transformers imports datasets (+ pandas, pyarrow) with its Trainer, scipy with its model code and peft with
    TrainingArguments whenever they are installed, ~1.4 s of each training process's start-up; the sftgo process of a
    run without LoRA has transformers see none of them, and leaves them importable."""
    r = _run(LEAN.format(out=str(tmp_path / "run")))
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["rc"] == 2 and "/nonexistent/model" in r.stderr  # the one-line error, after transformers was loaded
    assert got["loaded"] == [], got["loaded"]
    assert got["transformers_sees"] == [False, False, False]
    assert got["rows"] == 2


def test_transformers_without_leaves_a_loaded_transformers_alone(monkeypatch):
    """In a process where transformers is loaded (a user's script, the test runner), it answers as before, even for a
    package it has not asked about yet and that is not imported."""
    from transformers.utils import import_utils as iu

    from sftgo.cli import transformers_without

    checks = [iu.is_datasets_available, iu.is_scipy_available]
    for name in NOT_FOR_TRANSFORMERS:
        monkeypatch.delitem(sys.modules, name, raising=False)  # restored after the test
    try:
        for c in checks:
            c.cache_clear()
        transformers_without()
        assert [c() for c in checks] == [True, True]
        assert not {"datasets", "scipy"} & {k for k, v in sys.modules.items() if v is None}
    finally:
        for c in checks:
            c.cache_clear()


SWEEP = """
import json, sys
from sftgo.cli import main
sys.argv = ["sftgo", "sweep", "--grid", "percentile=70,90", "--dry_run", "--output_dir", {out!r}, "--max_steps", "2"]
rc = main()
print(json.dumps({{"rc": rc, "loaded": sorted(m for m in ("transformers", "peft", "datasets", "scipy") if m in sys.modules)}}))
"""


def test_sweep_process_checks_train_flags_without_peft_datasets_scipy(tmp_path):
    """The `sftgo sweep` process reads every run's train settings (transformers' TrainingArguments) but never loads a
    model: transformers loads none of the three there."""
    r = _run(SWEEP.format(out=str(tmp_path / "sw")))
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.splitlines()[-1])
    assert got == {"rc": 0, "loaded": ["transformers"]}, got
    assert "sft-go_tfidf_p70_s1" in r.stdout


@pytest.mark.parametrize("argv, yaml_text, want", [
    (["--lr_scheduler_type", "linear", "--output_dir", "runs/x"], None, False),
    (["--lora_r", "8"], None, True),
    (["--merge_lora=true"], None, True),
    (["--load_in_4bit", "true"], None, True),
    (["--output_dir", "runs/x", "--resume_from_checkpoint", "last"], None, True),
    (["CONFIG"], "objective: sft-go\nlearning_rate: 1.0e-4\n", False),
    (["CONFIG", "--max_steps", "3"], "objective: sft\nlora_r: 16\n", True),
    (["CONFIG"], "model_name_or_path: 'ADAPTER'\n", True),
    (["--model_name_or_path", "ADAPTER"], None, True),
    (["--ref_model_name_or_path=ADAPTER"], None, True),
    (["no/such/config.yaml"], None, True),
    (["demo"], None, False),  # a bundled recipe by name: read like a file
])
def test_train_may_need_peft(tmp_path, argv, yaml_text, want):
    """A run may skip peft only when nothing in its words or its config file can bring LoRA, a resume (its own
    config.yaml decides) or a folder with an adapter that transformers would load itself."""
    from sftgo.cli import train_may_need_peft

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "config.json").write_text("{}")
    (adapter / "adapter_config.json").write_text("{}")
    cfg = tmp_path / "c.yaml"
    if yaml_text is not None:
        cfg.write_text(yaml_text.replace("ADAPTER", str(adapter)))
    argv = [str(cfg) if a == "CONFIG" else a.replace("ADAPTER", str(adapter)) for a in argv]
    assert train_may_need_peft(argv) is want


def test_a_lora_run_without_peft_known_stops(monkeypatch):
    """The guard behind train_may_need_peft: a LoRA run whose transformers was told there is no peft stops at once
    (it would train a PeftModel that transformers' Trainer does not recognise)."""
    from types import SimpleNamespace

    from transformers.utils import import_utils

    from sftgo.cli import check_peft_for

    monkeypatch.setattr(import_utils, "is_peft_available", lambda: False)
    with pytest.raises(RuntimeError, match="train_may_need_peft missed it"):
        check_peft_for(SimpleNamespace(lora_r=4))
    check_peft_for(SimpleNamespace(lora_r=0))


# `sftgo train ARGS` exactly as the console script runs it (main() without argv), with each full garbage collection
# recorded: how many objects were frozen (gc.get_freeze_count) when it ran.
TRAIN_PROCESS = """
import gc, json, sys
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(gc.get_freeze_count()))
from sftgo.cli import main
sys.argv = ["sftgo", "train", *sys.argv[1:]]
rc = main()
print(json.dumps({"rc": rc, "full": full, "frozen": gc.get_freeze_count()}))
"""


def test_lora_run_from_a_config_file_through_the_sftgo_process(tmp_path, tiny_model_dir, alpaca_file):
    """End to end, as the sftgo process runs it: a config file that asks for LoRA keeps peft known to transformers,
    and the run writes its adapter. The process collects no garbage while it starts (sftgo.startup_gc: importing
    torch and transformers cost six full passes over the growing heap) and freezes its start-up before the first step
    (a full collection afterwards passes over what training made, not over every module and the model)."""
    pytest.importorskip("peft")
    cfg = tmp_path / "lora.yaml"
    cfg.write_text(f"model_name_or_path: {tiny_model_dir}\ndataset: {alpaca_file}\nlora_r: 2\nmax_steps: 1\n"
                   f"per_device_train_batch_size: 2\nmax_length: 64\nreport_to: none\n")
    r = subprocess.run([sys.executable, "-c", TRAIN_PROCESS, str(cfg), "--output_dir", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()
    assert got["frozen"] > 100_000, got  # torch, transformers, peft, the model: frozen before training
    assert got["full"] and min(got["full"]) > 100_000, got  # every full pass came after the freeze
