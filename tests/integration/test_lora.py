"""LoRA through peft (adapter in final/, merged weights on request, eval loading either) and gradient checkpointing
with every objective. Tiny model built from config; offline."""

from __future__ import annotations

import pytest
import torch

from sftgo.objectives import OBJECTIVES
from tests.integration.test_train import _records, _train

pytest.importorskip("peft")

OBJECTIVE_ARGS = {
    "sft": [], "sft-go": [], "rho1": ["--ref_model_name_or_path", "initial"], "dft": [], "infosft": [], "target-sft": ["--target_residual", "uniform"],
    "sft-go-dro": ["--dro_eta", "0.5"], "eaft": [], "asft": ["--ref_model_name_or_path", "initial"],
}


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_lora_final_holds_the_adapter_and_merged_weights(tmp_path, tiny_model_dir, alpaca_file):
    from sftgo.models import load_model

    out = _train(tmp_path, tiny_model_dir, alpaca_file, "--lora_r", "4", "--lora_alpha", "8", "--learning_rate", "5e-2",
                 "--merge_lora", "true", "--objective", "sft")
    final = out / "final"
    assert (final / "adapter_config.json").exists() and (final / "adapter_model.safetensors").exists()
    assert not (final / "model.safetensors").exists()  # the adapter only, not a second copy of the base
    assert (final / "merged" / "model.safetensors").exists()
    ids = [5, 17, 42, 8, 99, 3]
    base = _logits(load_model(tiny_model_dir), ids)
    from_adapter = _logits(load_model(str(final)), ids)  # what `sftgo eval` gets for a LoRA run's final/
    merged = _logits(load_model(str(final / "merged")), ids)
    torch.testing.assert_close(from_adapter, merged, atol=1e-5, rtol=1e-5)
    assert (merged - base).abs().max() > 1e-3  # the adapter learned something and the merge carries it


def test_lora_first_step_equals_full_fine_tuning_and_trains_only_adapters(tmp_path, tiny_model_dir, alpaca_file):
    # LoRA's B starts at zero: the first forward is the base model's, so the first loss equals full fine-tuning's.
    full = _records(_train(tmp_path, tiny_model_dir, alpaca_file, name="full"))
    lora = _records(_train(tmp_path, tiny_model_dir, alpaca_file, "--lora_r", "4", "--learning_rate", "5e-2", name="lora"))
    assert lora[0]["loss"] == pytest.approx(full[0]["loss"], rel=1e-5)
    assert lora[1]["loss"] != pytest.approx(lora[0]["loss"], rel=1e-6)  # the adapters moved


@pytest.mark.parametrize("head", ["fused", "chunked"])
def test_token_head_with_lora_matches_naive(tmp_path, tiny_model_dir, alpaca_file, head):
    args = ["--lora_r", "4", "--learning_rate", "5e-2", "--max_steps", "3"]
    ref = _records(_train(tmp_path, tiny_model_dir, alpaca_file, *args, "--token_head", "naive", name="naive"))
    got = _records(_train(tmp_path, tiny_model_dir, alpaca_file, *args, "--token_head", head, name=head))
    for a, b in zip(ref, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_gradient_checkpointing_with_every_objective(tmp_path, tiny_model_dir, alpaca_file, objective):
    args = ["--objective", objective, *OBJECTIVE_ARGS[objective], "--max_steps", "3"]
    ref = _records(_train(tmp_path, tiny_model_dir, alpaca_file, *args, name="plain"))
    got = _records(_train(tmp_path, tiny_model_dir, alpaca_file, *args, "--gradient_checkpointing", "true", name="gc"))
    assert len(got) == 3
    for a, b in zip(ref, got):  # same losses at every step: same gradients, same updates
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def test_gradient_checkpointing_reentrant_with_lora(tmp_path, tiny_model_dir, alpaca_file):
    # Reentrant checkpointing gives adapters inside a block no gradient unless the block's input requires grad (the
    # base is frozen): apply_lora turns input gradients on (and transformers >= 5 does it too).
    args = ["--lora_r", "4", "--learning_rate", "5e-2", "--max_steps", "3"]
    ref = _records(_train(tmp_path, tiny_model_dir, alpaca_file, *args, name="plain"))
    got = _records(_train(tmp_path, tiny_model_dir, alpaca_file, *args, "--gradient_checkpointing", "true",
                          "--gradient_checkpointing_kwargs", '{"use_reentrant": true}', name="gc"))
    for a, b in zip(ref, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


@pytest.mark.parametrize("args,message", [
    (["--merge_lora", "true"], "merge_lora: needs LoRA"),
    (["--lora_r", "4", "--lora_target_modules", "q_proj,lm_head"], "lora_target_modules"),
    (["--lora_r", "4", "--lora_target_modules", "no_such_proj"], "lora_target_modules"),
])
def test_lora_mistakes_give_clear_errors(tmp_path, tiny_model_dir, alpaca_file, capsys, args, message):
    from sftgo.cli import main

    rc = main(["train", "--model_name_or_path", tiny_model_dir, "--dataset", alpaca_file, "--output_dir",
               str(tmp_path / "r"), "--score_cache_dir", str(tmp_path / "c"), *args])
    assert rc != 0
    assert message in capsys.readouterr().err


def test_load_in_4bit_without_bitsandbytes_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.util

    from sftgo.config import ConfigError, SFTGoConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match="load_in_4bit: .*bitsandbytes"):
        SFTGoConfig(output_dir=str(tmp_path), lora_r=4, load_in_4bit=True)


def test_sftgo_eval_reads_a_lora_run(tmp_path, tiny_model_dir, alpaca_file):
    # `sftgo eval RUN` on a LoRA run evaluates final/ (the adapter over its base): same held-out losses as the merged model.
    import json

    from sftgo.cli import main

    pytest.importorskip("lm_eval")
    out = _train(tmp_path, tiny_model_dir, alpaca_file, "--lora_r", "4", "--learning_rate", "5e-2", "--merge_lora", "true")
    assert main(["eval", str(out), "--heldout", alpaca_file]) == 0
    assert main(["eval", str(out / "final" / "merged"), "--heldout", alpaca_file, "--output_dir", str(tmp_path / "m")]) == 0
    a = json.loads((out / "eval" / "heldout.json").read_text())
    b = json.loads((tmp_path / "m" / "heldout.json").read_text())
    assert a["loss_ce"] == pytest.approx(b["loss_ce"], rel=1e-5) and a["n_tokens"] == b["n_tokens"]
