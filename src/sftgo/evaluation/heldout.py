"""Held-out group losses (the quantities of SFT-GO's Proposition 1) on a dataset the run did not train on.

Same path as training: the run's tokenization (``pipeline`` helpers), its scorer and eta, the per-token head
(``token_head.token_logp`` on the final hidden states: the ``[N, V]`` logits are never built) and the percentile split
(``grouping.percentile_groups_torch``). Every mean is token-weighted over the whole dataset:

    loss_ce          = sum of -log p over all supervised tokens / their count
    loss_important   = the same over the important tokens (top (100 - eta)% of each sequence by importance)
    loss_unimportant = the same over the others
    loss_worst       = max(loss_important, loss_unimportant)
"""

from __future__ import annotations

import time
from types import SimpleNamespace


def heldout_losses(model, tokenizer, dataset: str, *, scorer: str = "tfidf", percentile: float = 90.0,
                   max_length: int = 512, batch_size: int = 8, max_examples: int | None = None, seed: int = 0,
                   llmlingua2_model: str | None = None, score_cache_dir: str | None = None,
                   chunk_size: int = 512) -> dict:
    import torch

    from ..data import Collator, TokenDataset, load_examples, tokenize_cached, tokenized_cache_dir
    from ..grouping import percentile_groups_torch
    from ..pipeline import compute_importance
    from ..token_head import token_logp

    if scorer == "reference" or not scorer:
        raise ValueError("held-out group losses need a static scorer (tfidf, frequency, random, llmlingua2 or "
                         "module:function); pass --scorer")
    t0 = time.time()
    examples = load_examples(dataset, limit=max_examples)
    data = tokenize_cached(examples, tokenizer, max_length, cache_dir=tokenized_cache_dir(score_cache_dir))
    settings = SimpleNamespace(scorer=scorer, seed=seed, llmlingua2_model=llmlingua2_model, score_cache_dir=score_cache_dir)
    data.columns["importance"] = compute_importance(settings, data, tokenizer)
    collate = Collator(tokenizer.pad_token_id)
    ds = TokenDataset(data)
    weight = model.get_output_embeddings().weight
    sums = {"all": 0.0, "imp": 0.0, "unimp": 0.0}
    counts = {"all": 0, "imp": 0, "unimp": 0}
    was_training = model.training
    model.eval()
    device = weight.device
    try:
        with torch.no_grad():
            for start in range(0, len(ds), batch_size):
                batch = collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
                ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                out = model(input_ids=ids, attention_mask=attn, output_hidden_states=True, logits_to_keep=1)
                hidden = out.hidden_states[-1][:, :-1]
                if start == 0:  # the head path assumes logits = lm_head(last hidden state)
                    ref = out.logits[:, -1].float()
                    mine = out.hidden_states[-1][:, -1].float() @ weight.float().T
                    if not torch.allclose(ref, mine, atol=1e-3, rtol=1e-3):
                        raise ValueError("this model's logits are not lm_head(last hidden state) (bias, scaling or "
                                         "softcapping); held-out group losses are not supported for it")
                targets = batch["labels"][:, 1:].to(device)
                mask = targets != -100
                imp = percentile_groups_torch(batch["importance"][:, 1:].to(device), mask, percentile)
                nll = -token_logp(hidden[mask], weight, targets[mask], chunk_size=chunk_size).double()
                imp_flat = imp[mask]
                sums["all"] += float(nll.sum())
                sums["imp"] += float(nll[imp_flat].sum())
                sums["unimp"] += float(nll[~imp_flat].sum())
                counts["all"] += int(mask.sum())
                counts["imp"] += int(imp_flat.sum())
                counts["unimp"] += int((~imp_flat).sum())
    finally:
        model.train(was_training)

    def mean(k):
        return sums[k] / counts[k] if counts[k] else None

    li, lu = mean("imp"), mean("unimp")
    return {"n_tokens": counts["all"], "n_important": counts["imp"], "n_examples": len(data),
            "loss_ce": mean("all"), "loss_important": li, "loss_unimportant": lu,
            "loss_worst": max(x for x in (li, lu) if x is not None) if (li is not None or lu is not None) else None,
            "wall_time_s": round(time.time() - t0, 3)}
