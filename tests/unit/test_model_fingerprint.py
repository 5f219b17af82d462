"""One model fingerprint (sftgo.models.model_fingerprint) keys every model-dependent cache: eval results and the base
model's cache, generations, and the reference log-probs. It follows the folder's content, not its path or mtimes."""

import ast
import json
import os
import shutil
from pathlib import Path

import sftgo
from sftgo.models import model_fingerprint


def test_fingerprint_follows_content_not_path(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SFTGO_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    fp = model_fingerprint(str(d))
    assert len(fp) == 64 and fp == model_fingerprint(str(d))
    # the same folder by another path string, a link, a copy elsewhere, a touch: the same key
    assert model_fingerprint(str(tmp_path / "." / "m")) == fp
    os.symlink(d, tmp_path / "link")
    assert model_fingerprint(str(tmp_path / "link")) == fp
    shutil.copytree(d, tmp_path / "copy")
    assert model_fingerprint(str(tmp_path / "copy")) == fp
    os.utime(d / "config.json", ns=(1, 1))
    assert model_fingerprint(str(d)) == fp
    # the config edited: a new key
    cfg = json.loads((d / "config.json").read_text())
    cfg["rms_norm_eps"] *= 1.01
    (d / "config.json").write_text(json.dumps(cfg))
    edited = model_fingerprint(str(d))
    assert edited != fp
    # one weight byte changed: a new key (a later change of the same file is seen through its size or mtime)
    weights = d / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(2, 2))
    assert model_fingerprint(str(d)) not in (fp, edited)
    # a Hub id is its own key
    assert model_fingerprint("org/name") == "hub:org/name"


def test_one_model_fingerprint_function():
    """pipeline (reference log-probs), evaluation and generate all call sftgo.models.model_fingerprint."""
    root = Path(sftgo.__file__).parent
    defs = [f"{p.relative_to(root)} {n.name}" for p in sorted(root.rglob("*.py"))
            for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.FunctionDef) and "fingerprint" in n.name
            and "model" in n.name]
    assert defs == ["models.py model_fingerprint"], defs
    for module in ("pipeline.py", "generate.py", "evaluation/run.py"):
        assert "model_fingerprint" in (root / module).read_text(), module
