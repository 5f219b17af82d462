"""Worker for test_fsdp.py (run by torchrun, 2 CPU processes, gloo): sftgo's loss path on an FSDP2 full-shard model.

accelerate enables FSDP only on GPU backends, so the Trainer cannot be launched with FSDP on CPU; this worker shards
the model the way accelerate's FSDP2 TRANSFORMER_BASED_WRAP does (``fully_shard`` on each decoder layer, then on the
root, which keeps the embedding and the LM head), calls ``SFTGoTrainer.compute_loss`` on each rank's half of the batch
with the step's global token count, and takes SGD steps. Rank 0 writes the losses and the full updated weights.

    torchrun --nproc_per_node 2 tests/integration/fsdp_worker.py OUT.pt sft,dft [wrap_head]
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist


def batch_for(tokenizer, examples, columns):
    from sftgo.data import Collator, TokenDataset, tokenize_examples

    data = tokenize_examples(examples, tokenizer, 64)
    for name, fn in columns.items():
        data.columns[name] = [fn(i, n) for i, n in enumerate(data.supervised_lengths())]
    return Collator(tokenizer.pad_token_id)([TokenDataset(data)[i] for i in range(len(data))])


def setup(objective, world_size, out_dir):
    """Model, tokenizer, trainer and the step's examples (identical on every rank and in the single-process run)."""
    import numpy as np

    from sftgo.config import SFTGoConfig
    from sftgo.data import load_examples
    from sftgo.trainer import SFTGoTrainer
    from tests.conftest import build_tiny_model, build_tokenizer

    tok = build_tokenizer(chat=True)
    model = build_tiny_model(len(tok), seed=0)
    examples = load_examples(None, limit=8)  # the bundled data: 8 distinct examples
    dist_kw = {"use_cpu": True, "ddp_backend": "gloo"} if world_size > 1 else {}
    cfg = SFTGoConfig(output_dir=out_dir, report_to="none", objective=objective, lam=0.5, **dist_kw)
    trainer = SFTGoTrainer(model=model, args=cfg)
    rng = np.random.default_rng(0)
    scores = [rng.random(400).astype(np.float32) for _ in range(8)]
    columns = {"importance": lambda i, n: scores[i][:n], "ref_logp": lambda i, n: -3 * scores[i][:n]}
    return model, tok, trainer, examples, columns


def main():
    out, objectives = sys.argv[1], sys.argv[2].split(",")
    wrap_head = len(sys.argv) > 3 and sys.argv[3] == "wrap_head"
    results = {objective: run(objective, f"{out}.{objective}.d", wrap_head) for objective in objectives}
    if dist.get_rank() == 0:
        torch.save(results, out)
    dist.barrier()


def run(objective, out_dir, wrap_head):
    from torch.distributed.fsdp import fully_shard

    model, tok, trainer, examples, columns = setup(objective, 2, out_dir)
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2 and trainer.args.world_size == 2
    for layer in model.model.layers:
        fully_shard(layer)
    if wrap_head:  # a wrap policy that gives the LM head its own unit: the head's weight is sharded after forward
        fully_shard(model.lm_head)
    fully_shard(model)
    full = batch_for(tok, examples, columns)
    half = batch_for(tok, examples[rank * 4:(rank + 1) * 4], columns)
    # Same per-example columns as in the single-process batch (tokenization is per example).
    K = (full["labels"][:, 1:] != -100).sum()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(2):
        loss = trainer.compute_loss(model, dict(half), num_items_in_batch=K)
        loss.backward()
        opt.step()
        opt.zero_grad()
        total = loss.detach().clone()
        dist.all_reduce(total)
        losses.append(float(total) / world)  # each rank's loss is its share x world_size (DDP-style averaging)
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}
    return {"losses": losses, "state": state}


if __name__ == "__main__":
    main()
