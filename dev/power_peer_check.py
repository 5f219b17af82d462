"""The probability-power family (Beyond Log Likelihood, arXiv 2510.00526): sftgo's training path against the authors'
OWN loss code on the same model and batch; prints, per member, the loss each returns (what each logs), the max
difference of every parameter's gradient, and sftgo's logged ``mean_weight``.

The authors' code is executed as published, not re-written: the class ``FSDPSFTTrainer`` is read out of their
``main_verl/trainer/fsdp_sft_trainer.py`` (``ast``, as dev/asft_peer_check.py does) and its
``_compute_loss_and_backward(batch)`` runs on an instance whose ``__init__`` is skipped, with the attributes that
method reads (``config.trainer.objective_trans`` = their ``--trainer_objective_trans`` name, no sequence parallelism,
``balance_dp_token`` false, one process) and the model as ``fsdp_model``. In their namespace ``torch.autocast`` is a
no-op (the only change: they train under bf16 autocast on GPUs; here both sides run in fp32 on the CPU, so the figures
measure the formulas, not bf16 rounding). Their batch carries ``loss_mask`` (1 where the next token is supervised) and
``position_ids``, as their SFT dataset gives them.

sftgo: ``--objective sft --token_weight power --power_alpha A [--power_window top|bottom --power_q q]`` through
``SFTGoTrainer.compute_loss`` on the fused head (no [N, V] logits). Normalization: sftgo divides by all the step's
supervised tokens K; their windowed members (``OnlyTop*`` / ``OnlyBottom*``) divide by the count of tokens inside the
window (their ``loss_mask`` is narrowed before it is summed), so the table compares sftgo's loss and gradients times
``K / |window|`` (the column ``K/|w|``; 1 without a window). Their denominator also carries ``+ 1e-8``.

    git --git-dir=<clone>/.git show HEAD:main_verl/trainer/fsdp_sft_trainer.py > /tmp/fsdp_sft_trainer.py
    PYTHONPATH=src python dev/power_peer_check.py --authors /tmp/fsdp_sft_trainer.py
"""

from __future__ import annotations

import argparse
import tempfile
import types
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from asft_peer_check import grads_of, load_defs, make_batch, max_grad_diff, tiny_llama

# (their --trainer_objective_trans name, sftgo's settings); {q} is the window's threshold
MEMBERS = [
    ("original", {"power_alpha": 0.0}),
    ("logp", {"power_alpha": 0.0}),
    ("p", {"power_alpha": 1.0}),
    ("GeneralFamily-0.5", {"power_alpha": 0.5}),
    ("GeneralFamily-8", {"power_alpha": 8.0}),
    ("OnlyTopP-{q}", {"power_alpha": 1.0, "power_window": "top"}),
    ("OnlyBottomP-{q}", {"power_alpha": 1.0, "power_window": "bottom"}),
    ("OnlyTopLogP-{q}", {"power_alpha": 0.0, "power_window": "top"}),
    ("OnlyBottomLogP-{q}", {"power_alpha": 0.0, "power_window": "bottom"}),
]


def fp32_torch():
    """``torch`` as their code sees it, with ``torch.autocast`` a no-op (fp32 on both sides)."""
    mod = types.ModuleType("torch")
    mod.__getattr__ = lambda name: getattr(torch, name)
    mod.autocast = lambda *a, **k: nullcontext()
    return mod


def their_batch(batch: dict) -> dict:
    """Their SFT batch: ``loss_mask[t] = 1`` where the token at t + 1 is supervised (they use ``loss_mask[:, :-1]``),
    ``position_ids`` counting the non-padded positions."""
    lm = torch.zeros_like(batch["labels"])
    lm[:, :-1] = (batch["labels"][:, 1:] != -100).long()
    pos = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "position_ids": pos,
            "loss_mask": lm}


def authors(cls, model, batch, name):
    trainer = cls.__new__(cls)
    trainer.use_remove_padding = False
    trainer.device_name = "cpu"
    trainer.fsdp_model = trainer.model = model
    trainer.config = types.SimpleNamespace(ulysses_sequence_parallel_size=1,
                                           trainer=types.SimpleNamespace(objective_trans=name),
                                           data=types.SimpleNamespace(balance_dp_token=False))
    model.zero_grad()
    loss = trainer._compute_loss_and_backward(their_batch(batch))  # their backward, inside
    return loss.item(), grads_of(model)


def ours(model, batch, settings, out_dir):
    from sftgo.config import SFTGoConfig
    from sftgo.trainer import SFTGoTrainer

    cfg = SFTGoConfig(output_dir=out_dir, use_cpu=True, report_to="none", objective="sft", token_weight="power",
                      head_chunk_size=16, **settings)
    trainer = SFTGoTrainer(model=model, args=cfg)
    model.train()
    model.zero_grad()
    K = int((batch["labels"][:, 1:] != -100).sum())
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=K)
    loss.backward()
    logs = {"loss": loss.item()}
    trainer.log(logs)
    return loss.item(), grads_of(model), logs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--authors", required=True, help="GaotangLi/Beyond-Log-Likelihood's main_verl/trainer/fsdp_sft_trainer.py")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--q", type=float, nargs="+", default=[0.002, 0.05], help="the windows' thresholds")
    args = p.parse_args(argv)

    ns = load_defs(args.authors, {"FSDPSFTTrainer"},
                   {"torch": fp32_torch(), "nn": nn, "F": F, "nullcontext": nullcontext, "DeviceMesh": object,
                    "Dataset": object, "TensorDict": dict})
    cls = ns["FSDPSFTTrainer"]
    V = args.vocab
    model = tiny_llama(V, args.seed)
    batch = make_batch(V, 3, 24, args.seed + 1)
    K = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        lg = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        y = batch["labels"][:, 1:]
        prob = torch.log_softmax(lg.float(), -1).gather(-1, y.clamp(min=0)[..., None]).squeeze(-1)[y != -100].exp()
    print(f"power family peer check: tiny Llama (V={V}, H=64, 2 layers), fp32, one micro-batch of 3 rows x 24 tokens "
          f"({K} supervised; p from {prob.min():.2e} to {prob.max():.3f}, median {prob.median():.3f}); windows at "
          f"q = {', '.join(map(str, args.q))}")
    print(f"{'theirs':<20} {'sftgo settings':<44} {'K/|w|':>6} {'loss theirs':>11} {'loss ours':>10} {'|dloss|':>8} "
          f"{'max|dgrad|':>10} {'rel':>8} {'mean_weight':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(n.format(q=q), {**s, "power_q": q}) for n, s in MEMBERS if "power_window" in s for q in args.q]
        for name, s in [(n, s) for n, s in MEMBERS if "power_window" not in s] + runs:
            mine, g_mine, logs = ours(model, batch, s, tmp)
            theirs, g_theirs = authors(cls, model, batch, name)
            q = s.get("power_q", 0.0)
            window = {"top": prob >= q, "bottom": prob <= q}.get(s.get("power_window"))
            n_in = K if window is None else int(window.sum())
            factor = K / n_in
            d, rel = max_grad_diff([g * factor for g in g_mine], g_theirs)
            label = " ".join(f"{k.removeprefix('power_')}={v}" for k, v in s.items())
            print(f"{name:<20} {label:<44} {factor:6.3f} {theirs:11.6f} {mine:10.6f} {abs(mine * factor - theirs):8.1e} "
                  f"{d:10.2e} {rel:8.1e} {logs['mean_weight']:11.6f}")


if __name__ == "__main__":
    main()
