"""ASFT: sftgo's training path against the peers' OWN loss code on the same model, reference and batch; prints the
max differences of the loss and of every parameter's gradient.

The peers' code is executed as published, not re-written: the function / class definitions are read out of their
source files (``ast``) and run in a namespace holding only what they use (torch, ``torch.nn.functional``), because
importing the packages whole would pull their pinned dependencies:

* LLaMA-Factory ``use_asft_loss`` (hiyouga/LlamaFactory, ``src/llamafactory/train/trainer_utils.py``: ``asft_loss_func``,
  ``_asft_cross_entropy``, ``_dft_cross_entropy``, ``_kl_divergence``; added in #10174). Called as its ``compute_loss``
  calls it: ``asft_loss_func(outputs, labels, ref_logits, asft_alpha=...)``, the reference's logits from
  ``ref_model(input_ids, attention_mask)``.
* The authors' code (zhuchichi56/ASFT ``train_v2.py``, ``EnhancedTrainer.compute_loss`` with ``mode="asft"`` and
  ``kl_weight``; ``transformers.Trainer`` replaced by ``object`` as its base, ``__init__`` not run).

sftgo: ``--objective asft`` through ``SFTGoTrainer.compute_loss`` (the reference's hidden rows through the head's
chunk-loss path, no [N, V] logits), ``--asft_kl forward`` (default) and ``reverse`` (the paper's Eq. 6).

    # the peers' files, e.g. from clones of the two repositories:
    PYTHONPATH=src python dev/asft_peer_check.py --llamafactory LlamaFactory/src/llamafactory/train/trainer_utils.py \
        --asft_repo ASFT/train_v2.py
"""

from __future__ import annotations

import argparse
import ast
import copy
import tempfile

import torch
import torch.nn.functional as F


def load_defs(path: str, names: set[str], namespace: dict) -> dict:
    """Execute only the top-level function / class definitions ``names`` of the Python file ``path`` in
    ``namespace``; returns the namespace. Raises when one is missing (the peer renamed or moved it)."""
    tree = ast.parse(open(path).read(), filename=path)
    found = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    missing = names - {n.name for n in found}
    if missing:
        raise SystemExit(f"{path}: no top-level {', '.join(sorted(missing))}; is this the right file?")
    code = compile(ast.Module(body=found, type_ignores=[]), path, "exec")
    exec(code, namespace)  # noqa: S102 -- the peer's own code, on purpose
    return namespace


def tiny_llama(vocab: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
                      initializer_range=0.25)  # wide enough that p and the KL spread (the default 0.02 is ~uniform)
    return LlamaForCausalLM(cfg).float()


def make_batch(vocab: int, rows: int, length: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, length), generator=g)
    attn = torch.ones(rows, length, dtype=torch.long)
    labels = ids.clone()
    for r in range(rows):  # a prompt of 3 + r tokens, right padding of 2 r tokens: distinct token counts per row
        labels[r, : 3 + r] = -100
        if r:
            attn[r, length - 2 * r:] = 0
    labels[attn == 0] = -100
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def grads_of(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def peer_llamafactory(ns, model, ref, batch, alpha):
    model.zero_grad()
    with torch.no_grad():
        ref_logits = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = ns["asft_loss_func"](out, batch["labels"], ref_logits, asft_alpha=alpha)
    loss.backward()
    return loss.item(), grads_of(model)


def peer_authors(ns, model, ref, batch, alpha):
    trainer = ns["EnhancedTrainer"].__new__(ns["EnhancedTrainer"])
    trainer.mode, trainer.kl_weight, trainer.original_model = "asft", alpha, ref.eval()
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.item(), grads_of(model)


def ours(model, ref, batches, alpha, kl, out_dir):
    return sftgo_step(model, batches, out_dir, ref, objective="asft", asft_alpha=alpha, asft_kl=kl,
                      ref_model_name_or_path="initial")


def sftgo_step(model, batches, out_dir, ref=None, **settings):
    """One optimizer step of sftgo's training path (``SFTGoTrainer.compute_loss`` + backward per micro-batch, the step's
    token count as ``num_items_in_batch``) -> (loss, every parameter's gradient, the logged metrics)."""
    from sftgo.config import SFTGoConfig
    from sftgo.trainer import SFTGoTrainer

    cfg = SFTGoConfig(output_dir=out_dir, use_cpu=True, report_to="none", **{"head_chunk_size": 16, **settings})
    trainer = SFTGoTrainer(model=model, args=cfg, ref_model=ref)
    model.train()
    model.zero_grad()
    K = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)  # the step's supervised tokens
    total = 0.0
    for b in batches:
        loss = trainer.compute_loss(model, dict(b), num_items_in_batch=K)
        loss.backward()
        total += loss.item()
    logs = {"loss": total}
    trainer.log(logs)
    return total, grads_of(model), logs


def max_grad_diff(a, b) -> tuple[float, float]:
    """(max |difference| over every parameter's gradient, the same relative to the largest gradient entry)."""
    d = max((x - y).abs().max().item() for x, y in zip(a, b))
    scale = max(y.abs().max().item() for y in b)
    return d, d / scale


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llamafactory", required=True, help="LlamaFactory's src/llamafactory/train/trainer_utils.py")
    p.add_argument("--asft_repo", required=True, help="zhuchichi56/ASFT's train_v2.py")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from typing import Optional

    lf = load_defs(args.llamafactory, {"asft_loss_func", "_asft_cross_entropy", "_dft_cross_entropy", "_kl_divergence"},
                   {"torch": torch, "F": F, "Optional": Optional})
    au = load_defs(args.asft_repo, {"EnhancedTrainer"},
                   {"torch": torch, "F": F, "Trainer": object, "IGNORE_INDEX": -100})

    V = args.vocab
    model = tiny_llama(V, args.seed)
    ref = copy.deepcopy(model)
    with torch.no_grad():  # the reference: the model moved away (as after some training), so the KL is not small
        for q in ref.parameters():
            q.add_(0.3 * q.std().nan_to_num() * torch.randn_like(q))
    ref.requires_grad_(False)
    one = make_batch(V, 3, 24, args.seed + 1)
    model.train()  # the tiny Llama has no dropout: train / eval give the same logits

    print(f"ASFT peer check: tiny Llama (V={V}, H=64, 2 layers), fp32, one micro-batch of 3 rows x 24 tokens "
          f"({int((one['labels'][:, 1:] != -100).sum())} supervised), reference = the model with its weights perturbed")
    print(f"{'comparison':<58} {'|dloss|':>9} {'max|dgrad|':>11} {'rel':>9} {'loss ours':>10} {'loss peer':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for alpha in (0.1, 0.05, 1.0):
            mine, g_mine, logs = ours(model, ref, [one], alpha, "forward", tmp)
            for name, fn, ns in (("LLaMA-Factory asft_loss_func", peer_llamafactory, lf),
                                 ("authors' train_v2 mode=asft", peer_authors, au)):
                theirs, g_theirs = fn(ns, model, ref, one, alpha)
                d, rel = max_grad_diff(g_mine, g_theirs)
                print(f"{f'{name} vs sftgo forward, alpha={alpha}':<58} {abs(mine - theirs):9.2e} {d:11.2e} "
                      f"{rel:9.2e} {mine:10.5f} {theirs:10.5f}")
        # the logged KL against LLaMA-Factory's own per-token KL mean
        with torch.no_grad():
            lg = model(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits[:, :-1]
            rl = ref(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits[:, :-1]
            y = one["labels"][:, 1:]
            kl_lf = lf["_kl_divergence"](lg.reshape(-1, V), rl.reshape(-1, V), y.reshape(-1)).item()
        print(f"{'logged kl (sftgo) vs LLaMA-Factory _kl_divergence':<58} {abs(logs['kl'] - kl_lf):9.2e} "
              f"{'':>11} {'':>9} {logs['kl']:10.5f} {kl_lf:10.5f}")
        # the paper's Eq. 6 (reverse KL) against the peers' forward KL: what --asft_kl reverse changes
        alpha = 0.1
        mine, g_mine, logs_r = ours(model, ref, [one], alpha, "reverse", tmp)
        theirs, g_theirs = peer_llamafactory(lf, model, ref, one, alpha)
        d, rel = max_grad_diff(g_mine, g_theirs)
        print(f"{'LLaMA-Factory (forward KL) vs sftgo reverse, alpha=0.1':<58} {abs(mine - theirs):9.2e} {d:11.2e} "
              f"{rel:9.2e} {mine:10.5f} {theirs:10.5f}")
        print(f"   mean KL per token: forward {logs['kl']:.5f}, reverse {logs_r['kl']:.5f}")
        # accumulation: two micro-batches with different token counts, one optimizer step
        two = make_batch(V, 1, 24, args.seed + 2)
        mine, g_mine, _ = ours(model, ref, [one, two], alpha, "forward", tmp)
        l1, g1 = peer_llamafactory(lf, model, ref, one, alpha)
        l2, g2 = peer_llamafactory(lf, model, ref, two, alpha)
        n1, n2 = (int((b["labels"][:, 1:] != -100).sum()) for b in (one, two))
        print(accumulation_line("alpha=0.1", mine, "LLaMA-Factory", (n1, l1), (n2, l2)))


def accumulation_line(what, mine, peer, *parts) -> str:
    """sftgo's loss of a step of micro-batches against their token mean and the mean of the peer's per-micro-batch
    means; parts: (tokens, the peer's loss) of each micro-batch."""
    mean_of_means = sum(l for _, l in parts) / len(parts)
    token_mean = sum(n * l for n, l in parts) / sum(n for n, _ in parts)
    return (f"accumulation, {len(parts)} micro-batches ({' and '.join(str(n) for n, _ in parts)} tokens), {what}: "
            f"sftgo {mine:.5f} = the step's token mean {token_mean:.5f} (|d| {abs(mine - token_mean):.1e}); "
            f"{peer}'s per-micro-batch means average to {mean_of_means:.5f} (|d| {abs(mine - mean_of_means):.1e})")


if __name__ == "__main__":
    main()
