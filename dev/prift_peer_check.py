"""PriFT: sftgo's reference pass and training path against the authors' OWN code on the same model, reference and
batch; prints the weights' differences and those of the loss and of every parameter's gradient.

The authors' code (wang-kee/PriFT) is executed as published, not re-written: the function / class definitions are read
out of their source files (``ast``, dev/asft_peer_check.py's :func:`load_defs`) and run in a namespace holding only
what they use, because importing verl whole would pull its pinned dependencies (FSDP, hydra, tensordict, ...):

* ``verl/verl/trainer/prift_weights.py``: ``prift_prob_weights``, ``prift_mass_weights``, ``reference_lower_mass``,
  ``reference_mass`` and the helpers they call, on the reference's full ``[N, V]`` logits;
* ``verl/verl/trainer/fsdp_dft_trainer.py``: the class ``FSDPSFTTrainer`` (``__init__`` not run; the attributes its
  loss reads set by hand: the model, the frozen reference, ``loss.method``, ``loss.mass_threshold``), whose
  ``_compute_loss_and_backward`` (reference forward, weights, ``sum(t * CE * mask) / (tokens + 1e-8)``, backward) is
  called on the batch as its ``training_step`` calls it. It runs under ``torch.autocast(bf16)``; on this CPU that is
  bf16 matmuls, so it is run twice: as published, and with the autocast a no-op (fp32, like sftgo here).

sftgo: the reference columns from :func:`sftgo.scorers.reference.reference_token_logp` (``lower_mass=True``: the pass
``sftgo train`` runs once per job, chunked head, no ``[N, V]`` logits), then ``--objective sft --token_weight
prift_prob|prift_mass`` through ``SFTGoTrainer.compute_loss`` (fused head) + backward.

    git --git-dir=<PriFT mirror> show HEAD:verl/verl/trainer/prift_weights.py > prift_weights.py   # and the trainer
    PYTHONPATH=src python dev/prift_peer_check.py --weights prift_weights.py --trainer fsdp_dft_trainer.py \
        [--model default]   # default: a tiny Llama; "default": SmolLM2-135M on 4 Alpaca examples
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from contextlib import nullcontext
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asft_peer_check import load_defs, tiny_llama  # noqa: E402 -- the same loader (ast), the same tiny Llama


class _TorchWithoutAutocast:
    """``torch`` for the authors' trainer with ``torch.autocast`` a no-op: their loss in fp32 on a CPU."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def autocast(*args, **kwargs):
        return nullcontext()


WEIGHT_FNS = {"dft_weights", "reference_full_probs", "reference_target_probs", "prift_prob_weights",
              "reference_lower_mass", "reference_mass", "prift_mass_weights"}


def tiny_batch(vocab: int, rows: int, length: int, seed: int, sampler=None) -> dict:
    """Random tokens, or (``sampler``: a causal LM) 3 random tokens continued by sampling from ``sampler`` at
    temperature 1, so that the labels are distributed as the reference predicts them (then ``lower + p_ref`` spreads
    over [0, 1] and each threshold keeps a part of the tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, 3 if sampler is not None else length), generator=g)
    with torch.no_grad():
        while ids.shape[1] < length:
            probs = torch.softmax(sampler(input_ids=ids).logits[:, -1].float(), dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=g)], dim=1)
    attn = torch.ones(rows, length, dtype=torch.long)
    labels = ids.clone()
    for r in range(rows):  # a prompt of 3 + r tokens, right padding of 2 r tokens
        labels[r, : 3 + r] = -100
        if r:
            attn[r, length - 2 * r:] = 0
    labels[attn == 0] = -100
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def alpaca_batch(tokenizer, rows: int, max_length: int) -> dict:
    from sftgo.data import load_examples, tokenize_examples

    data = tokenize_examples(load_examples("/work/shared/data/alpaca_5000.json", limit=rows), tokenizer, max_length)
    T = max(len(x) for x in data.input_ids)
    ids = torch.full((rows, T), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((rows, T), -100, dtype=torch.long)
    attn = torch.zeros(rows, T, dtype=torch.long)
    for r, (x, y) in enumerate(zip(data.input_ids, data.labels)):
        ids[r, :len(x)], labels[r, :len(y)], attn[r, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def theirs_batch(batch: dict) -> dict:
    """The batch as verl's SFT dataset gives it: position ids, and loss_mask[t] = 1 where token t + 1 is a target."""
    attn = batch["attention_mask"]
    loss_mask = torch.zeros_like(attn)
    loss_mask[:, :-1] = (batch["labels"][:, 1:] != -100).long()
    return {"input_ids": batch["input_ids"], "attention_mask": attn,
            "position_ids": (attn.cumsum(-1) - 1).clamp(min=0), "loss_mask": loss_mask}


def their_trainer(ns, model, ref, method, threshold):
    tr = ns["FSDPSFTTrainer"].__new__(ns["FSDPSFTTrainer"])
    tr.config = SimpleNamespace(ulysses_sequence_parallel_size=1, data=SimpleNamespace(balance_dp_token=False))
    tr.use_remove_padding, tr.device_name, tr.sharding_manager = False, "cpu", None
    tr.fsdp_model, tr.model, tr.reference_model = model, model, ref
    tr.loss_method, tr.mass_threshold, tr.mass_vocab_chunk, tr.reference_micro_batch_size = method, threshold, None, None
    tr.use_reference = method in ("prift_prob", "prift_mass")
    return tr


def their_loss(ns, model, ref, batch, method, threshold):
    model.train()
    model.zero_grad()
    loss, _ = their_trainer(ns, model, ref, method, threshold)._compute_loss_and_backward(dict(theirs_batch(batch)))
    return loss.item(), [p.grad.detach().clone() for p in model.parameters()]


def our_columns(ref, batch, pad_id) -> dict:
    """The reference columns as `sftgo train` computes them (the one pass; [B, T], 0 off the supervised positions)."""
    from sftgo.scorers.reference import reference_token_logp

    ids, labels = [], []
    for x, a, y in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        n = int(a.sum())
        ids.append(x[:n].tolist())
        labels.append(y[:n].tolist())
    logp, lower = reference_token_logp(ref, ids, labels, batch_size=len(ids), pad_token_id=pad_id, chunk_size=64,
                                       lower_mass=True)
    cols = {}
    for name, vals in (("ref_logp", logp), ("ref_lower_mass", lower)):
        full = torch.zeros(batch["labels"].shape)
        for r, v in enumerate(vals):
            full[r][batch["labels"][r] != -100] = torch.as_tensor(v)
        cols[name] = full
    return cols


def our_loss(model, batch, cols, token_weight, threshold, out_dir):
    from sftgo.config import SFTGoConfig
    from sftgo.trainer import SFTGoTrainer

    cfg = SFTGoConfig(output_dir=out_dir, use_cpu=True, report_to="none", objective="sft", token_weight=token_weight,
                      prift_threshold=threshold, ref_model_name_or_path="initial", head_chunk_size=64)
    trainer = SFTGoTrainer(model=model, args=cfg)
    model.train()
    model.zero_grad()
    K = int((batch["labels"][:, 1:] != -100).sum())
    loss = trainer.compute_loss(model, {**batch, **cols}, num_items_in_batch=K)
    loss.backward()
    logs = {"loss": loss.item()}
    trainer.log(logs)
    return loss.item(), [p.grad.detach().clone() for p in model.parameters()], logs


def max_grad_diff(a, b) -> tuple[float, float]:
    d = max((x - y).abs().max().item() for x, y in zip(a, b))
    return d, d / max(max(y.abs().max().item() for y in b), 1e-30)


def weights_table(ns, ref, batch, cols, label):
    """Their weight functions on the reference's full logits vs sftgo's columns, over the supervised tokens."""
    with torch.no_grad():
        tb = theirs_batch(batch)
        logits = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=tb["position_ids"], use_cache=False).logits[:, :-1]
        V = logits.shape[-1]
        sup = batch["labels"][:, 1:] != -100
        z, y = logits[sup].reshape(-1, V), batch["labels"][:, 1:][sup]
        p_them = ns["prift_prob_weights"](z, y)
        low_them = ns["reference_lower_mass"](z, y)
        low_chunked = ns["reference_lower_mass"](z, y, vocab_chunk=97)
        u_them = ns["reference_mass"](z, y)
        lp_us, low_us = cols["ref_logp"][:, 1:][sup], cols["ref_lower_mass"][:, 1:][sup]
        p_us = lp_us.exp()
        ties = int(((z == z.gather(1, y[:, None])).sum(-1) > 1).sum())
    n = y.numel()
    print(f"{label}: {n} supervised tokens, V={V}; {ties} labels tie with another token's logit")
    print(f"  prob: max |t_ours - t_theirs| {(p_us - p_them).abs().max():.2e} (mean t {p_them.mean():.5f})")
    print(f"  lower mass: max |d| {(low_us - low_them).abs().max():.2e} (theirs with vocab_chunk=97 vs whole: "
          f"{(low_chunked - low_them).abs().max():.1e}); u = lower + p: max |d| {(low_us + p_us - u_them).abs().max():.2e}")
    for tau in (0.3, 0.5, 0.7, 0.9):
        m_them = ns["prift_mass_weights"](z, y, threshold=tau)
        m_us = ((low_us + p_us) >= tau).float()
        print(f"  mass tau={tau}: {int((m_us != m_them).sum())} of {n} weights differ; kept {m_them.mean():.3f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="wang-kee/PriFT's verl/verl/trainer/prift_weights.py")
    p.add_argument("--trainer", required=True, help="wang-kee/PriFT's verl/verl/trainer/fsdp_dft_trainer.py")
    p.add_argument("--model", default=None, help="'default' (SmolLM2-135M, 4 Alpaca examples); unset: a tiny Llama")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    fns = load_defs(args.weights, WEIGHT_FNS, {"torch": torch})
    trainer_ns = {name: fns[name] for name in WEIGHT_FNS}
    as_published = load_defs(args.trainer, {"FSDPSFTTrainer"},
                             {**trainer_ns, "torch": torch, "nn": torch.nn, "nullcontext": nullcontext})
    fp32 = load_defs(args.trainer, {"FSDPSFTTrainer"},
                     {**trainer_ns, "torch": _TorchWithoutAutocast(), "nn": torch.nn, "nullcontext": nullcontext})

    if args.model:
        from sftgo.models import load_model, load_tokenizer, resolve_model_path

        path = resolve_model_path(None if args.model == "default" else args.model)
        model, tok = load_model(path, dtype="float32"), load_tokenizer(path)
        ref = copy.deepcopy(model)  # the authors' default reference: the model before SFT
        batch, pad = alpaca_batch(tok, 4, 128), tok.pad_token_id
        what = f"{path} (fp32), 4 Alpaca examples, reference = the initial model"
    else:
        V = 512
        model = tiny_llama(V, args.seed)
        ref = copy.deepcopy(model)
        with torch.no_grad():  # a reference other than the model (as after some training)
            for q in ref.parameters():
                q.add_(0.3 * q.std().nan_to_num() * torch.randn_like(q))
        batch, pad = tiny_batch(V, 3, 24, args.seed + 1, sampler=ref), 0
        what = (f"tiny Llama (V={V}, H=64, 2 layers, fp32), 3 rows x 24 tokens sampled from the reference (the model "
                "perturbed)")
    ref.requires_grad_(False).eval()
    print(f"PriFT peer check: {what}")
    cols = our_columns(ref, batch, pad)
    weights_table(fns, ref, batch, cols, "fp32 reference")
    ref16 = copy.deepcopy(ref).to(torch.bfloat16)  # the authors load their reference in bf16
    weights_table(fns, ref16, batch, our_columns(ref16, batch, pad), "bf16 reference (theirs: bf16 logits, .float())")

    print(f"{'loss and gradients':<52} {'|dloss|':>9} {'max|dgrad|':>11} {'rel':>9} {'loss ours':>10} {'loss theirs':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for method, tau in (("prift_prob", 0.5), ("prift_mass", 0.5), ("prift_mass", 0.8)):
            mine, g_mine, logs = our_loss(model, batch, cols, method, tau, tmp)
            for name, ns in (("fp32", fp32), ("as published (CPU bf16 autocast)", as_published)):
                theirs, g_theirs = their_loss(ns, model, ref, batch, method, tau)
                d, rel = max_grad_diff(g_mine, g_theirs)
                label = f"{method}{f' tau={tau}' if method == 'prift_mass' else ''}, theirs {name}"
                print(f"{label:<52} {abs(mine - theirs):9.2e} {d:11.2e} {rel:9.2e} {mine:10.5f} {theirs:11.5f}")
            print(f"   sftgo's logged mean_weight {logs['mean_weight']:.5f}")


if __name__ == "__main__":
    main()
