"""Held-out group losses (the quantities of SFT-GO's Proposition 1) on a dataset the run did not train on.

Through the training path itself: the run's tokenization and token columns (``pipeline.add_token_columns``: its
scorer, eta, reference log-probs), its batch layout (``pipeline.make_collator``: padded, packed or padding-free), and
:class:`sftgo.trainer.SFTGoTrainer`'s evaluation (the same per-token head, objective and grouping as training, with
``group_scope`` and ``num_groups``: what ``--eval_dataset`` logs during training). Every mean is token-weighted over
the whole dataset:

    loss_ce          = sum of -log p over all supervised tokens / their count
    loss_important   = the same over the important tokens (the objective's logged split: top (100 - eta)% by importance)
    loss_unimportant = the same over the others
    loss_worst       = max(loss_important, loss_unimportant)
    entropy          = mean full-vocabulary entropy of the next-token distribution over the supervised tokens
    token_accuracy   = fraction of supervised tokens whose target has the largest logit
    loss_by_channel  = {channel: the same CE mean over that channel's tokens} (data-weighted where the data sets
                       weights), when the data has channels (the run's --channel_field, else the field 'channel')
"""

from __future__ import annotations

import tempfile
import time

# The run's settings that shape held-out losses (everything else in a run's config is about the optimizer or I/O).
LOSS_SETTINGS = ("objective", "max_length", "packing", "padding_free", "token_head", "head_chunk_size", "seed",
                 "score_cache_dir", "model_dtype", "attn_implementation", "channel_field", "max_channels",
                 "group_threshold")


def heldout_config(run_config: dict, **overrides):
    """An :class:`sftgo.config.SFTGoConfig` for held-out evaluation: the run's method and layout settings, then
    ``overrides`` (``scorer``, ``percentile``, ``max_length``, ``per_device_eval_batch_size``, ...; None = keep)."""
    from ..config import SFTGoConfig
    from ..objectives import METHOD_SETTINGS
    from ..scorers import scorer_needs_reference, scorer_reference_gap

    if run_config.get("group_scope") == "dataset" and run_config.get("group_threshold") is not None:
        changed = [k for k in ("scorer", "percentile")
                   if overrides.get(k) is not None and overrides[k] != run_config.get(k)]
        if changed:  # the recorded threshold is a cut of the run's own scores: it means nothing for other ones
            from ..config import ConfigError

            k = changed[0]
            raise ConfigError(f"held-out group losses with --{k} {overrides[k]}: the run cut its groups at one "
                              f"threshold over its training set (group_scope dataset, group_threshold "
                              f"{run_config['group_threshold']!r} of {k} {run_config.get(k)!r}), which does not apply to "
                              f"another {k}; evaluate without --{k} (the run's own split)")
    keep = {k: v for k, v in run_config.items() if k in set(METHOD_SETTINGS) | set(LOSS_SETTINGS) and v is not None}
    keep.update({k: v for k, v in overrides.items() if v is not None})
    if ((scorer_needs_reference(keep.get("scorer")) or scorer_reference_gap(keep.get("scorer")))
            and not keep.get("ref_model_name_or_path")):
        from ..config import ConfigError

        raise ConfigError(f"held-out group losses with --scorer {keep['scorer']} need the run's ref_model_name_or_path")
    keep.setdefault("scorer", "tfidf")
    return SFTGoConfig(**keep, output_dir=tempfile.mkdtemp(prefix="sftgo-heldout-"), report_to="none",
                       eval_strategy="no", save_strategy="no", logging_strategy="no")


def heldout_losses(model, tokenizer, dataset: str, cfg, *, max_examples: int | None = None) -> dict:
    """Held-out losses of ``model`` on ``dataset`` under config ``cfg`` (see :func:`heldout_config`)."""
    from ..data import TokenDataset, add_channels, load_examples, tokenize_cached, tokenized_cache_dir
    from ..pipeline import add_token_columns, make_collator
    from ..trainer import SFTGoTrainer

    t0 = time.time()
    # A Hub / saved dataset: its held-out split. The run's channel field, if it had one; the held-out data need not.
    examples = load_examples(dataset, split=None, limit=max_examples, channel_field=cfg.channel_field,
                             strict_channel=False, flag="--heldout")
    data = tokenize_cached(examples, tokenizer, cfg.max_length, cache_dir=tokenized_cache_dir(cfg.score_cache_dir))
    add_token_columns(cfg, data, model, tokenizer)
    channels = add_channels(None, data, cfg.max_channels)  # the held-out data's own channels (names are reported)
    trainer = SFTGoTrainer(model=model, args=cfg, data_collator=make_collator(cfg, tokenizer, model),
                           processing_class=tokenizer, channel_names=channels)
    m = trainer.evaluate(eval_dataset=TokenDataset(data))

    def value(k):
        v = m.get(f"eval_{k}")
        return None if v is None or v != v else v  # NaN (an empty group) -> None

    li, lu = value("loss_important"), value("loss_unimportant")
    return {"n_tokens": int(m.get("eval_tokens", 0)), "n_important": int(m.get("eval_tokens_important", 0)),
            "n_examples": len(data), "objective": cfg.objective, "loss_ce": value("loss_ce"),
            "loss_important": li, "loss_unimportant": lu,
            "loss_worst": max(x for x in (li, lu) if x is not None) if (li is not None or lu is not None) else None,
            "entropy": value("entropy"), "token_accuracy": value("token_accuracy"),
            **({"loss_by_channel": {c: value(f"loss/{c}") for c in channels}} if channels else {}),
            "wall_time_s": round(time.time() - t0, 3)}
