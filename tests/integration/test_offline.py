"""Offline traps: a Hub id that cannot be downloaded fails at once in one line naming the flag and the local
alternative (not ~56 s of retries and a traceback); `sftgo eval --heldout` works without lm-evaluation-harness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftgo.cli import main

SRC = str(Path(__file__).parents[2] / "src")
FAKE = "fake-org-sftgo/no-such-model"


def _cli(args, tmp_path, extra_env=None, pythonpath=(), timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update({"HF_HUB_CACHE": str(tmp_path / "empty_hub_cache"), "HF_HOME": str(tmp_path / "hf_home"),
                "PYTHONPATH": os.pathsep.join([*pythonpath, SRC, env.get("PYTHONPATH", "")]), **(extra_env or {})})
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "sftgo.cli", *args], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=tmp_path)
    return p.returncode, p.stderr.strip().splitlines(), time.monotonic() - t0


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_llmlingua2_offline_fails_at_once_naming_the_flag(env, tmp_path):
    """The issue's case: the default LLMLingua-2 encoder is a Hub id; offline it retried for 56 s, then a traceback."""
    rc, err, seconds = _cli(["score", "--scorer", "llmlingua2", "--output_dir", str(tmp_path / "o")], tmp_path, env)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("sftgo score: error: could not load the LLMLingua-2 encoder 'microsoft/llmlingua-2-"), err
    assert "--llmlingua2_model LOCAL_DIR" in err[0]
    assert ("HF_HUB_OFFLINE is set" if "HF_HUB_OFFLINE" in env else "http://127.0.0.1:9 cannot be reached") in err[0]
    assert seconds < 20, seconds  # no retries (the command itself, imports included, is ~1 s on an idle machine)


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    import sftgo.pipeline

    def started(cfg):
        raise AssertionError("training started")

    monkeypatch.setattr(sftgo.pipeline, "run_training", started)


@pytest.mark.parametrize("argv,flag", [
    (["--model_name_or_path", FAKE], "--model_name_or_path LOCAL_DIR"),
    (["--dataset", "fake-org-sftgo/no-such-data"], "--dataset FILE"),
    (["--eval_dataset", "fake-org-sftgo/no-such-data"], "--eval_dataset FILE"),
    (["--objective", "rho1", "--scorer", "reference", "--ref_model_name_or_path", FAKE], "--ref_model_name_or_path LOCAL_DIR"),
    (["--objective", "asft", "--ref_model_name_or_path", FAKE], "--ref_model_name_or_path LOCAL_DIR"),
    (["--scorer", "llmlingua2", "--llmlingua2_model", FAKE], "--llmlingua2_model LOCAL_DIR"),
])
def test_train_checks_every_hub_id_before_loading_anything(argv, flag, offline, tmp_path, capsys):
    t0 = time.monotonic()
    assert main(["train", *argv, "--output_dir", str(tmp_path / "run"), "--report_to", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_HUB_OFFLINE is set" in err[0] and flag in err[0], err
    assert time.monotonic() - t0 < 20


def test_score_eval_generate_and_the_loaders_name_the_local_alternative(offline, tiny_model_dir, tmp_path, capsys):
    from sftgo.data import DataError, load_examples
    from sftgo.models import ModelLoadError, load_model, load_tokenizer

    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "Hi?"}) + "\n")
    cases = [
        (["score", "--model_name_or_path", FAKE, "--output_dir", str(tmp_path / "o")], "--model_name_or_path LOCAL_DIR"),
        (["score", "--dataset", "fake-org-sftgo/data", "--output_dir", str(tmp_path / "o")], "--dataset FILE"),
        (["score", "--scorer", "reference", "--ref_model_name_or_path", FAKE, "--output_dir", str(tmp_path / "o")],
         "--ref_model_name_or_path LOCAL_DIR"),
        (["eval", tiny_model_dir, "--heldout", "fake-org-sftgo/data", "--output_dir", str(tmp_path / "o")], "--heldout FILE"),
        (["eval", FAKE, "--heldout", str(tmp_path / "p.jsonl"), "--output_dir", str(tmp_path / "o")],
         f"could not load a tokenizer from '{FAKE}'"),
        (["generate", FAKE, "--prompts", str(tmp_path / "p.jsonl"), "--output_dir", str(tmp_path / "o")],
         f"could not load a tokenizer from '{FAKE}'"),
    ]
    for argv, expected in cases:
        t0 = time.monotonic()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "HF_HUB_OFFLINE is set" in err[0] and expected in err[0], (argv, err)
        assert "local" in err[0] and time.monotonic() - t0 < 20, (argv, err)
    with pytest.raises(ModelLoadError, match=f"could not load a model from '{FAKE}'.*local folder"):
        load_model(FAKE)
    with pytest.raises(ModelLoadError, match="--ref_model_name_or_path LOCAL_DIR"):
        load_tokenizer(FAKE, flag="--ref_model_name_or_path")
    with pytest.raises(DataError, match="--eval_dataset FILE"):
        load_examples("fake-org-sftgo/data", flag="--eval_dataset")


def test_eval_tasks_from_the_hub_when_it_is_unreachable(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Without HF_HUB_OFFLINE and without network: the benchmark data would come from the Hub; say so at once."""
    import sftgo.hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(sftgo.hub, "_probe", lambda: "https://huggingface.co cannot be reached (test)")
    assert main(["eval", tiny_model_dir, "--tasks", "arc_easy", "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the data of arc_easy comes from the Hugging Face Hub" in err[0], err
    assert "--data_dir DIR" in err[0] and "cannot be reached" in err[0]


def _fake_run(root: Path, base_dir: str) -> Path:
    import yaml
    from transformers import AutoTokenizer

    from tests.conftest import build_tiny_model

    run = root / "run"
    (run / "final").mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(base_dir)
    build_tiny_model(len(tok), seed=1).save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    (run / "config.yaml").write_text(yaml.safe_dump({"model_name_or_path": base_dir, "scorer": "tfidf",
                                                     "percentile": 80.0, "max_length": 64}))
    return run


def test_heldout_eval_needs_no_lm_eval(tiny_model_dir, alpaca_file, tmp_path):
    """lm-evaluation-harness made unimportable: `--heldout` still works; `--tasks` gives the one-line install hint."""
    shim = tmp_path / "no_lm_eval"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['lm_eval'] = None  # `import lm_eval` fails\n")
    run = _fake_run(tmp_path, tiny_model_dir)
    env = {"HF_HUB_OFFLINE": "1", "SFTGO_CACHE": str(tmp_path / "cache")}
    probe = subprocess.run([sys.executable, "-c", "import lm_eval"], env={**os.environ, "PYTHONPATH": str(shim)},
                           capture_output=True)
    assert probe.returncode != 0  # the shim works
    rc, err, _ = _cli(["eval", str(run), "--heldout", alpaca_file], tmp_path, env, pythonpath=[str(shim)])
    assert rc == 0, err
    res = json.loads((run / "eval" / "heldout.json").read_text())
    assert res["n_examples"] == 4 and res["loss_ce"] > 0
    rc, err, _ = _cli(["eval", str(run), "--tasks", "arc_easy"], tmp_path, env, pythonpath=[str(shim)])
    assert rc == 2 and err == ["sftgo eval: error: lm-evaluation-harness is not installed; pip install 'sftgo[eval]' "
                               "(--heldout alone does not need it)"], err
