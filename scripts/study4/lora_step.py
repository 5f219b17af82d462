"""How big is a LoRA step at each rank under each lora_alpha law? (CPU study 4, the LoRA rerun.)

SmolLM2-135M-Instruct with LoRA on every linear layer at rank r, three ways of setting lora_alpha, all giving the
scale alpha / r = 4 at r = 4 (the first LoRA runs' rank-4 setting): alpha fixed at 16, alpha = 4 r (alpha / r
constant), alpha = 8 sqrt(r) (rank-stabilized). For each, a few AdamW steps (lr 1e-3, the study's) on one fixed batch
of the set's first rows, and the cross-entropy of their answers before and after: the drop is the size of the step the
optimizer takes at that rank. Run from the repository root (peft installed):
    python scripts/study4/lora_step.py /tmp/study/data/synth/train16.jsonl [--rows 8 --steps 3]
"""
import argparse
import json
import math

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    from peft import LoraConfig, get_peft_model

    from sftgo.models import load_model, load_tokenizer

    rows = [json.loads(line) for line in open(a.data)][: a.rows]
    base = load_model(a.model, dtype="float32", device="cpu")
    tok = load_tokenizer(a.model)
    texts = [tok.apply_chat_template([{"role": "user", "content": r["instruction"]},
                                      {"role": "assistant", "content": r["output"]}], tokenize=False) for r in rows]
    tok.padding_side = "right"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    for i, r in enumerate(rows):  # the answer's tokens only, as in training
        prompt = tok.apply_chat_template([{"role": "user", "content": r["instruction"]}], tokenize=False,
                                         add_generation_prompt=True)
        labels[i, : len(tok(prompt, add_special_tokens=False)["input_ids"])] = -100
    laws = {"alpha 16": lambda r: 16.0, "alpha 4r": lambda r: 4.0 * r, "alpha 8 sqrt(r)": lambda r: 8.0 * math.sqrt(r)}
    print("| rank | alpha law | alpha | alpha / r | CE before | CE after %d steps | drop |" % a.steps)
    print("|---|---|---|---|---|---|---|")
    done = {}
    for r in (1, 4, 16):
        for name, law in laws.items():
            if law(r) in done.setdefault(r, set()):  # at r = 4 every law gives alpha 16
                continue
            done[r].add(law(r))
            torch.manual_seed(0)
            model = get_peft_model(base, LoraConfig(r=r, lora_alpha=law(r), target_modules="all-linear",
                                              task_type="CAUSAL_LM"))
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
            with torch.no_grad():
                before = model(**enc, labels=labels).loss.item()
            for _ in range(a.steps):
                opt.zero_grad()
                model(**enc, labels=labels).loss.backward()
                opt.step()
            with torch.no_grad():
                after = model(**enc, labels=labels).loss.item()
            print(f"| {r} | {name} | {law(r):g} | {law(r) / r:g} | {before:.4f} | {after:.4f} | {before - after:.4f} |",
                  flush=True)
            base = model.unload()  # the base weights, without the adapter, for the next combination


if __name__ == "__main__":
    main()
