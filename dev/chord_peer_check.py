"""CHORD's token weight phi = p (1 - p): sftgo's ``--token_weight chord`` against the authors' OWN loss code and
ms-swift's on the same model and batch; prints the max differences of the loss and of every parameter's gradient.

CHORD (Zhang et al. 2025, "On-Policy RL Meets Off-Policy Experts", arXiv 2508.11408) trains on
``(1 - mu) L_RL + mu L_SFT-phi``: an on-policy RL loss (GRPO / PPO) on the model's own rollouts plus, on expert data,
the SFT loss with each token's CE weighted by ``sg(phi(p)) = sg(p (1 - p))``. sftgo has no RL term: ``--token_weight
chord`` is the SFT-phi part (mu = 1, no rollouts). The peers' code is executed as published, not re-written (the
function / class definitions are read out of their files with ``ast``, as dev/asft_peer_check.py does, and run in a
namespace holding only what they import; importing the packages whole would pull ray / vLLM / their pinned stacks):

* the authors' code, Trinity-RFT (agentscope-ai/Trinity-RFT, formerly modelscope/Trinity-RFT), from the
  ``trinity-rft`` wheel on PyPI: ``trinity/algorithm/policy_loss_fn/chord_policy_loss.py`` (``phi_function``,
  ``SFTPhiLossFn``, ``MIXCHORDPolicyLossFn``, ``mu_schedule_function``), with ``PolicyLossFn`` (its metaclass maps
  argument names), ``PPOPolicyLossFn``, ``SFTLossFn``, ``aggregate_loss`` / ``masked_mean`` / ``masked_sum`` and
  ``ALL_MAPPERS`` from their own files. Called on the model's per-token log p (``logprob``) and the supervised mask
  (``action_mask``), as verl's actor calls a policy loss.
* ms-swift (modelscope/ms-swift): ``compute_chord_loss(trainer, grpo_loss)`` in ``swift/rlhf_trainers/utils.py``
  (with ``mu_schedule_function``), its ``per_token_loss_func`` (``swift/trainers/utils.py``) and ``to_device``
  (``swift/utils/torch_utils.py``); the trainer is a stand-in holding what the function reads (``state.global_step``,
  the ``chord_*`` arguments, an iterator over the expert batch, the model, an identity collator). With
  ``grpo_loss = 0`` and ``mu = 1`` its value is the SFT-phi part alone.

sftgo: ``--objective sft --token_weight chord`` through ``SFTGoTrainer.compute_loss`` (fused head: no [N, V] logits),
also on the naive head, and ``sft-go`` with ``lam = 0`` (its grouping off: the same loss).

    # the authors' code: pip download trinity-rft --no-deps; unzip the wheel into DIR
    # ms-swift: git clone https://github.com/modelscope/ms-swift SWIFT
    PYTHONPATH=src python dev/chord_peer_check.py --trinity DIR --swift SWIFT
"""

from __future__ import annotations

import argparse
import copy
import inspect
import math
import sys
import tempfile
import types
from abc import ABC, ABCMeta, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from asft_peer_check import (accumulation_line, grads_of, load_defs, make_batch, max_grad_diff,  # noqa: E402
                             sftgo_step, tiny_llama)


def trinity_namespace(root: Path) -> dict:
    """The authors' CHORD loss classes, from their files under ``root`` (the unpacked wheel)."""
    alg = root / "trinity" / "algorithm"
    km: dict = {}
    exec(compile((alg / "key_mapper.py").read_text(), str(alg / "key_mapper.py"), "exec"), km)  # noqa: S102
    utils = load_defs(str(alg / "utils.py"), {"aggregate_loss", "masked_mean", "masked_sum"}, {"torch": torch})
    base = load_defs(str(alg / "policy_loss_fn" / "policy_loss_fn.py"), {"PolicyLossFnMeta", "PolicyLossFn"},
                     {"torch": torch, "inspect": inspect, "ABC": ABC, "ABCMeta": ABCMeta,
                      "abstractmethod": abstractmethod, "Dict": Dict, "Tuple": Tuple, "ALL_MAPPERS": km["ALL_MAPPERS"]})
    common = {"torch": torch, "math": math, "Dict": Dict, "Tuple": Tuple, "Optional": Optional,
              "PolicyLossFn": base["PolicyLossFn"], **{k: utils[k] for k in ("aggregate_loss", "masked_mean")}}
    ppo = load_defs(str(alg / "policy_loss_fn" / "ppo_policy_loss.py"), {"PPOPolicyLossFn"}, dict(common))
    sft = load_defs(str(alg / "policy_loss_fn" / "sft_loss.py"), {"SFTLossFn"}, dict(common))
    return load_defs(str(alg / "policy_loss_fn" / "chord_policy_loss.py"),
                     {"mu_schedule_function", "phi_function", "SFTPhiLossFn", "MIXCHORDPolicyLossFn"},
                     {**common, "PPOPolicyLossFn": ppo["PPOPolicyLossFn"], "SFTLossFn": sft["SFTLossFn"]})


def swift_namespace(root: Path) -> dict:
    """ms-swift's ``compute_chord_loss``, with ``per_token_loss_func`` where its ``from swift.trainers import`` finds
    it (a stand-in ``swift.trainers`` module holding only that function, read from their file)."""
    dev = load_defs(str(root / "swift" / "utils" / "torch_utils.py"), {"to_device"},
                    {"torch": torch, "Mapping": Mapping, "Any": Any, "Union": Union})
    tr = load_defs(str(root / "swift" / "trainers" / "utils.py"), {"per_token_loss_func"}, {"torch": torch, "F": F})
    pkg = types.ModuleType("swift")
    mod = types.ModuleType("swift.trainers")
    mod.per_token_loss_func = tr["per_token_loss_func"]
    pkg.trainers = mod
    sys.modules.setdefault("swift", pkg)
    sys.modules["swift.trainers"] = mod
    return load_defs(str(root / "swift" / "rlhf_trainers" / "utils.py"), {"compute_chord_loss", "mu_schedule_function"},
                     {"torch": torch, "math": math, "to_device": dev["to_device"]})


def per_token_logprob(model, batch):
    """``[B, T-1]`` log p of each next token and the supervised mask, as verl's actor hands them to a policy loss."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    y = batch["labels"][:, 1:]
    mask = y != -100
    lp = torch.log_softmax(logits, dim=-1).gather(-1, y.clamp(min=0)[..., None]).squeeze(-1)
    return lp, mask


def peer_trinity_sft_phi(ns, model, batch):
    model.zero_grad()
    lp, mask = per_token_logprob(model, batch)
    loss, _ = ns["SFTPhiLossFn"]()(logprob=lp, action_mask=mask)
    loss.backward()
    return loss.item(), grads_of(model)


def peer_trinity_mix_chord(ns, model, batch):
    """The full CHORD loss on an all-expert micro-batch, mu = 1 (peak = valley = 1): the RL term gets weight 0."""
    rows = batch["input_ids"].shape[0]
    fn = ns["MIXCHORDPolicyLossFn"](mu_peak=1.0, mu_valley=1.0, clip_range=0.2, ppo_mini_batch_size=rows,
                                    ppo_micro_batch_size_per_gpu=rows, train_batch_size_expert=rows)
    model.zero_grad()
    lp, mask = per_token_logprob(model, batch)
    loss, metrics = fn(logprob=lp, old_logprob=lp.detach(), action_mask=mask, advantages=torch.zeros_like(lp),
                       expert_mask=torch.ones(rows, dtype=torch.bool), step=torch.zeros(rows))
    loss.backward()
    return loss.item(), grads_of(model)


def peer_swift(ns, model, batch):
    args = types.SimpleNamespace(chord_mu_warmup_steps=0, chord_mu_decay_steps=0, chord_mu_peak=1.0,
                                 chord_mu_valley=1.0, chord_enable_phi_function=True)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"]}
    trainer = types.SimpleNamespace(state=types.SimpleNamespace(global_step=0), args=args, model=model,
                                    chord_sft_iterator=iter([inputs]),
                                    template=types.SimpleNamespace(data_collator=dict),
                                    accelerator=types.SimpleNamespace(device=torch.device("cpu")))
    model.zero_grad()
    loss = ns["compute_chord_loss"](trainer, torch.tensor(0.0))
    loss.backward()
    return loss.item(), grads_of(model)


def ours(model, batches, out_dir, **over):
    """sftgo's step with ``--token_weight chord`` (``over``: other settings); sft-go gets an importance column (any:
    with lam = 0 its groups do not matter)."""
    settings = {"objective": "sft", "token_weight": "chord", **over}
    if settings["objective"] == "sft-go":
        g = torch.Generator().manual_seed(0)
        batches = [{**b, "importance": torch.rand(b["labels"].shape, generator=g)} for b in batches]
    return sftgo_step(model, batches, out_dir, **settings)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trinity", required=True, type=Path, help="the unpacked trinity-rft wheel (holds trinity/)")
    p.add_argument("--swift", required=True, type=Path, help="an ms-swift checkout (holds swift/)")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    tri = trinity_namespace(args.trinity)
    sw = swift_namespace(args.swift)
    V = args.vocab
    model = tiny_llama(V, args.seed)
    with torch.no_grad():  # a sharper model (logits x 4), so p spreads over (0, 1) and phi = p (1 - p) is not ~p
        model.lm_head.weight.mul_(4.0)
    one, two = make_batch(V, 3, 24, args.seed + 1), make_batch(V, 1, 24, args.seed + 2)
    for b in (one, two):  # every other supervised target is the model's own top token: p near 1 there
        with torch.no_grad():
            top = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)
        sup = (b["labels"][:, 1:] != -100).nonzero()
        for r, t in sup[::2].tolist():
            b["labels"][r, t + 1] = top[r, t]
    n1 = int((one["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        lp, mask = per_token_logprob(model, one)
        pr = lp[mask].exp()
        phi = tri["phi_function"](pr)
    print(f"CHORD peer check: tiny Llama (V={V}, H=64, 2 layers), fp32, one micro-batch of 3 rows x 24 tokens "
          f"({n1} supervised, every other target the model's top token); p in [{pr.min():.3f}, {pr.max():.3f}], "
          f"phi in [{phi.min():.4f}, {phi.max():.4f}], "
          f"mean phi {phi.mean():.4f}")
    print(f"{'comparison':<70} {'|dloss|':>9} {'max|dgrad|':>11} {'rel':>9} {'loss ours':>10} {'loss peer':>10}")
    peers = (("Trinity SFTPhiLossFn", peer_trinity_sft_phi, tri),
             ("Trinity MIXCHORDPolicyLossFn mu=1", peer_trinity_mix_chord, tri),
             ("ms-swift compute_chord_loss mu=1", peer_swift, sw))
    with tempfile.TemporaryDirectory() as tmp:
        runs = (("sftgo chord (fused)", {}),
                ("sftgo chord (naive head)", {"token_head": "naive"}),
                ("sftgo sft-go lam=0 + chord", {"objective": "sft-go", "lam": 0.0}))
        for what, over in runs:
            mine, g_mine, logs = ours(copy.deepcopy(model), [one], tmp, **over)
            for name, fn, ns in peers:
                if over and fn is not peer_trinity_sft_phi:
                    continue
                theirs, g_theirs = fn(ns, model, one)
                d, rel = max_grad_diff(g_mine, g_theirs)
                print(f"{f'{name} vs {what}':<70} {abs(mine - theirs):9.2e} {d:11.2e} {rel:9.2e} {mine:10.5f} "
                      f"{theirs:10.5f}")
        print(f"   logged mean_weight (sftgo) {logs['mean_weight']:.6f} vs mean phi of the peers' phi_function "
              f"{phi.mean().item():.6f} (|d| {abs(logs['mean_weight'] - phi.mean().item()):.1e})")
        # accumulation: two micro-batches with different token counts in one optimizer step
        n2 = int((two["labels"][:, 1:] != -100).sum())
        mine, g_mine, _ = ours(copy.deepcopy(model), [one, two], tmp)
        l1, _ = peer_trinity_sft_phi(tri, model, one)
        l2, _ = peer_trinity_sft_phi(tri, model, two)
        s1, _ = peer_swift(sw, model, one)
        s2, _ = peer_swift(sw, model, two)
        print(accumulation_line("chord", mine, "Trinity SFTPhiLossFn", (n1, l1), (n2, l2)))
        print(accumulation_line("chord", mine, "ms-swift compute_chord_loss", (n1, s1), (n2, s2)))

if __name__ == "__main__":
    main()
