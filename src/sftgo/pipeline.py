"""`sftgo train` end to end: data -> static token columns (cached) -> model -> SFTGoTrainer -> run directory.

Run directory (``output_dir``): ``config.yaml`` (resolved settings), ``metrics.jsonl`` (one object per logging step),
``checkpoint-*`` (resumable; ``sftgo_complete.json`` marks a complete one, see :mod:`sftgo.checkpoints`; once the run
is complete only what ``--keep_checkpoints`` says stays), ``final/`` (model + tokenizer, loadable with ``from_pretrained``), ``loss_groups.png``
(overall / important / unimportant loss over steps, the paper's Figure 2), ``loss_channels.png`` (one loss curve per
channel, only when the data has channels) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from .cache import atomic_write_text
from .config import SFTGoConfig, config_to_dict
from .data import (TokenDataset, TokenizedData, Collator, add_channels, load_examples, tokenize_cached,
                   tokenized_cache_dir)

logger = logging.getLogger(__name__)


def needs_reference(cfg: SFTGoConfig) -> bool:
    """Reference log-probs are computed when the objective reads them, or when they are the (logged) grouping."""
    from .objectives import objective_class
    from .scorers import scorer_needs_reference

    return objective_class(cfg.objective).needs_ref_logp(cfg) or scorer_needs_reference(cfg.scorer)


def reference_columns(cfg) -> tuple[str, ...]:
    """The columns of the one reference pass a run needs (:data:`REFERENCE_COLUMNS`; none without a reference): the
    reference log p, and the lower mass where the token weighting reads it (PriFT's ``mass``)."""
    from .objectives import objective_class

    if not needs_reference(cfg):
        return ()
    read = objective_class(cfg.objective).token_columns(cfg)
    return ("ref_logp", *(c for c in REFERENCE_COLUMNS[1:] if c in read))


def scorer_settings(name: str, tokenizer, config=None, **values) -> dict:
    """The settings that change a scorer's output (they go into the cache key; `sftgo train` and `sftgo score` use
    the same ones, so they share cache entries): the scorer's declared settings, read from ``config`` (a config or
    ``sftgo score``'s arguments) or given as keywords (``seed=``, ``llmlingua2_model=``); unset ones take their
    declared defaults."""
    from .scorers import scorer_spec

    spec = scorer_spec(name)
    return spec.cache_settings({**(spec.values(config) if config is not None else {}), **values}, tokenizer)


def score_tokens(name: str, data: TokenizedData, tokenizer, settings: dict, cache_dir=None,
                 run_settings: dict | None = None) -> tuple[list[np.ndarray], str]:
    """Importance of every supervised token under scorer ``name`` -> (scores, "hit" | "miss" | "off").

    Cached per (data, tokenizer, scorer, settings); ``run_settings`` (e.g. a batch size) are passed to the scorer but
    do not change its output, so they stay out of the key. A ``module:function`` scorer is never cached: its code
    may change between runs."""
    from .cache import cached_scores
    from .scorers import resolve_scorer

    fn = resolve_scorer(name)  # its declaration (a module:function scorer's is built here)
    token_ids = data.supervised_ids()
    offsets = [data.supervised(i)[1] for i in range(len(data))]
    lengths = [len(t) for t in token_ids]
    missed = []

    def compute():
        missed.append(True)
        return fn(token_ids, texts=data.texts, offsets=offsets, **settings, **(run_settings or {}))

    if not fn.cached:
        scores, state = compute(), "off"
    else:
        key = {"scorer": name, "settings": settings, "data": data.fingerprint(),
               "tokenizer": getattr(tokenizer, "name_or_path", ""), "vocab": len(tokenizer)}
        scores = cached_scores(key, compute, cache_dir, expected_lengths=lengths)
        state = "miss" if missed else "hit"
    if len(scores) != len(lengths):
        raise ValueError(f"scorer {name!r} returned scores for {len(scores)} examples; the data has {len(lengths)}")
    for i, (sc, n) in enumerate(zip(scores, lengths)):
        if len(sc) != n:
            raise ValueError(f"scorer {name!r} returned {len(sc)} scores for example {i}, which has {n} supervised tokens")
    return scores, state


def compute_importance(cfg: SFTGoConfig, data: TokenizedData, tokenizer) -> list[np.ndarray]:
    """Static importance per supervised token (scorer g), cached per (data, tokenizer, scorer settings); computed by
    process 0 only in a multi-process run, every process gets the result."""
    from .distributed import on_main

    settings = scorer_settings(cfg.scorer, tokenizer, cfg)
    scores, _ = on_main(lambda: score_tokens(cfg.scorer, data, tokenizer, settings, cfg.score_cache_dir))
    return [np.asarray(s, dtype=np.float32) for s in scores]


INITIAL = "initial"  # --ref_model_name_or_path initial: the model being trained, before training, is the reference


def reference_path(cfg: SFTGoConfig) -> str | None:
    """The reference model to load, or None for the initial model (``initial``, or unset where that is allowed)."""
    r = cfg.ref_model_name_or_path
    return None if r in (None, "", INITIAL) else r


def check_train_sources(cfg) -> None:
    """Every Hub id a ``sftgo train`` run would download, checked before anything is loaded."""
    from .hub import check_sources
    from .objectives import objective_class
    from .scorers import scorer_spec

    uses_reference = (needs_reference(cfg) or objective_class(cfg.objective).needs_ref_model(cfg)
                      or bool(cfg.scorer and scorer_spec(cfg.scorer).reference_gap))
    check_sources(model=cfg.model_name_or_path,
                  datasets=(("--dataset", cfg.dataset), ("--eval_dataset", cfg.eval_dataset)),
                  reference=reference_path(cfg) if uses_reference else None,
                  scorer_models=scorer_spec(cfg.scorer).hub_models(cfg) if cfg.scorer else ())


def _placed(model) -> bool:
    """A model its loader put on devices itself (a device map, 4/8-bit weights): it must not be moved."""
    return bool(getattr(model, "hf_device_map", None) or getattr(model, "is_loaded_in_4bit", False)
                or getattr(model, "is_loaded_in_8bit", False))


def cached_token_logp(name_or_path: str | None, data: TokenizedData, tokenizer, *, dtype: str = "auto",
                      cache_dir=None, batch_size: int = 8, model=None, device=None,
                      progress: bool = False) -> tuple[list[np.ndarray], str]:
    """``log p`` of every supervised token under the causal LM ``name_or_path`` (or the already-loaded ``model`` with
    those weights), computed once and cached per (model files, dtype, data) -> (N float arrays [n_i], "hit" | "miss").

    ``sftgo train`` (Rho-1 reference) and ``sftgo score`` (the ``reference`` scorer) share these cache entries. The
    pass runs on ``device`` (default: the GPU when there is one) through the chunked per-token head. In a
    multi-process run, process 0 looks the entry up and shares it; on a miss the length-sorted batches are dealt out
    over the processes (each scores its share: the job does the pass once, not once per process), every process gets
    all of them, and process 0 stores the entry. The batches are the same whatever the number of processes, and so
    is the key."""
    cols, state = cached_reference(name_or_path, data, tokenizer, ("ref_logp",), dtype=dtype, cache_dir=cache_dir,
                                   batch_size=batch_size, model=model, device=device, progress=progress)
    return cols["ref_logp"], state


REFERENCE_COLUMNS = ("ref_logp", "ref_lower_mass")
"""The per-token columns the one reference pass gives: ``log p_ref`` of the label and its lower mass (the reference's
probability of the tokens strictly less likely than the label; PriFT's ``mass``)."""


def _reference_key(name_or_path, dtype, data, column: str) -> dict:
    """The cache key of one reference column; ``ref_logp``'s is the one Rho-1 and ``sftgo score`` have always used."""
    from .models import model_fingerprint, resolve_model_path

    key = {"scorer": "reference", "ref_model": model_fingerprint(resolve_model_path(name_or_path)), "dtype": dtype,
           "data": data.fingerprint()}
    return key if column == "ref_logp" else {**key, "scorer": f"reference_{column.removeprefix('ref_')}"}


def cached_reference(name_or_path: str | None, data: TokenizedData, tokenizer, columns=("ref_logp",), *,
                     dtype: str = "auto", cache_dir=None, batch_size: int = 8, model=None, device=None,
                     progress: bool = False) -> tuple[dict[str, list[np.ndarray]], str]:
    """The reference ``columns`` (of :data:`REFERENCE_COLUMNS`) of every supervised token -> ({column: N float arrays
    [n_i]}, "hit" | "miss"), each cached under its own key (model files, dtype, data; see :func:`cached_token_logp`),
    the missing ones from one reference pass (sharded over the processes) that gives them all."""
    import torch

    from .cache import lookup_scores, store_scores
    from .distributed import gather_shards, on_main, world
    from .models import load_model
    from .scorers.reference import reference_token_logp

    unknown = [c for c in columns if c not in REFERENCE_COLUMNS]
    if unknown:
        raise ValueError(f"reference columns {unknown} are not among {', '.join(REFERENCE_COLUMNS)}")
    keys = {c: _reference_key(name_or_path, dtype, data, c) for c in columns}
    lengths = data.supervised_lengths()
    found = on_main(lambda: {c: lookup_scores(k, cache_dir, expected_lengths=lengths) for c, k in keys.items()})
    missing = [c for c in columns if found[c] is None]
    if not missing:
        return found, "hit"
    lower = "ref_lower_mass" in missing
    rank, _ = world()
    order = sorted(range(len(data)), key=lambda i: -len(data.input_ids[i]))  # reference_token_logp's own order
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]

    def score(my_batches: list[list[int]]) -> list[list]:
        if not my_batches:  # more processes than batches: nothing to load
            return []
        m = model if model is not None else load_model(name_or_path, dtype=dtype)
        home = next(m.parameters()).device
        dev = home if _placed(m) else torch.device(device or ("cuda" if torch.cuda.is_available() else home))
        was_training = m.training
        m.to(dev).eval()
        try:
            idx = [i for b in my_batches for i in b]
            got = reference_token_logp(m, [data.input_ids[i] for i in idx], [data.labels[i] for i in idx],
                                       batch_size=batch_size, device=dev, pad_token_id=tokenizer.pad_token_id,
                                       progress=progress and rank == 0, lower_mass=lower)
        finally:
            m.train(was_training)
            if model is not None:
                m.to(home)  # the caller's model goes back where it was
        del m
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        per_seq = list(zip(*got)) if lower else [(v,) for v in got]  # (log p, lower mass) of each sequence
        parts, k = [], 0
        for b in my_batches:
            parts.append(per_seq[k:k + len(b)])
            k += len(b)
        return parts

    made = {c: [None] * len(data) for c in ("ref_logp", "ref_lower_mass")[:1 + lower]}
    for b, vals in zip(batches, gather_shards(score, batches)):
        for i, v in zip(b, vals):
            for c, arr in zip(made, v):
                made[c][i] = arr
    out = dict(found)
    for c in missing:
        out[c] = store_scores(keys[c], made[c], cache_dir, expected_lengths=lengths) if rank == 0 else made[c]
    return out, "miss"


def warn_initial_reference(model_name, cfg=None) -> None:
    """The initial model as Rho-1's reference is a warning (its excess losses start at zero); as the reference of a
    token weighting alone (PriFT: the authors' default, ``cfg`` given) it is what the method asks for."""
    from .objectives import objective_class
    from .scorers import scorer_needs_reference

    if cfg is not None and "ref_logp" not in objective_class(cfg.objective).columns(cfg) \
            and not scorer_needs_reference(cfg.scorer):
        logger.info("reference = the initial model (%s), for --token_weight %s", model_name or "default",
                    cfg.token_weight)
        return
    logger.warning("reference = the initial model (%s): every excess loss starts at zero, so the first steps' "
                   "token selection is noise; train a reference on in-domain data for Rho-1 as the paper runs it",
                   model_name or "default")


def compute_reference(cfg: SFTGoConfig, data: TokenizedData, model, tokenizer,
                      columns: tuple[str, ...] | None = None):
    """Reference log-probs of every supervised token (Rho-1), computed once before training and cached (keyed by the
    reference model's weight files, so a retrained reference is recomputed). ``columns`` (of
    :data:`REFERENCE_COLUMNS`): a dict of those columns, from the same pass, instead."""
    ref_path = reference_path(cfg)
    if ref_path is None:
        warn_initial_reference(cfg.model_name_or_path, cfg)
    out, _ = cached_reference(ref_path or cfg.model_name_or_path, data, tokenizer, columns or ("ref_logp",),
                              dtype=cfg.model_dtype, cache_dir=cfg.score_cache_dir,
                              batch_size=cfg.per_device_train_batch_size, model=model if ref_path is None else None,
                              device=cfg.device, progress=not cfg.disable_tqdm)
    return out if columns else out["ref_logp"]


def compute_influence(cfg: SFTGoConfig, data: TokenizedData, tokenizer) -> list[np.ndarray]:
    """``--scorer influence`` (Token Cleaning): ``log p_ref - log p_initial`` of every supervised token, from two
    cached log-prob passes (the reference, and the model being trained as its files hold it: before training)."""
    from .scorers.reference import influence

    kw = dict(dtype=cfg.model_dtype, cache_dir=cfg.score_cache_dir, batch_size=cfg.per_device_train_batch_size,
              device=cfg.device, progress=not cfg.disable_tqdm)
    ref, _ = cached_token_logp(reference_path(cfg), data, tokenizer, **kw)
    initial, _ = cached_token_logp(cfg.model_name_or_path, data, tokenizer, **kw)
    return [np.asarray(v, dtype=np.float32) for v in influence(ref, initial)]


def add_token_columns(cfg: SFTGoConfig, data: TokenizedData, model, tokenizer) -> None:
    """The static per-token columns the run needs: scorer importance, reference log-probs (and the lower mass where
    the token weighting reads it; all cached)."""
    from .scorers import scorer_needs_reference, scorer_reference_gap

    if cfg.scorer and scorer_reference_gap(cfg.scorer):
        data.columns["importance"] = compute_influence(cfg, data, tokenizer)
    elif cfg.scorer and not scorer_needs_reference(cfg.scorer):
        data.columns["importance"] = compute_importance(cfg, data, tokenizer)
    columns = reference_columns(cfg)
    if columns:
        data.columns.update(compute_reference(cfg, data, model, tokenizer, columns))


def uses_dataset_threshold(cfg) -> bool:
    """Whether the run's objective cuts its groups at one threshold over the training set (``--group_scope dataset``)."""
    from .objectives import settings_of

    return cfg.group_scope == "dataset" and "group_scope" in (settings_of(cfg.objective, cfg) or ())


def set_dataset_threshold(cfg: SFTGoConfig, data: TokenizedData) -> dict | None:
    """``--group_scope dataset``: fix ``cfg.group_threshold`` once before training, from every supervised token's
    importance in the training set (:func:`sftgo.grouping.dataset_threshold`; computed by process 0 and shared, so every
    process holds the same float). A threshold already set (given, or recorded in a resumed run's config.yaml) is kept.
    Logs and returns ``{"threshold", "source", "kept", "tokens", "frac_kept"}``; None for other scopes."""
    from .distributed import on_main
    from .grouping import dataset_threshold

    if not uses_dataset_threshold(cfg):
        return None
    scores = data.columns["importance"]
    if cfg.group_threshold is None:
        t, kept, n = on_main(lambda: dataset_threshold(scores, cfg.percentile))
        cfg.group_threshold, source = t, f"the top {100 - cfg.percentile:g}% of the training set's tokens"
    else:
        flat = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in scores]) if scores else np.zeros(0)
        source = "recorded in the run's config.yaml" if getattr(cfg, "run_config", None) else "given"
        n, kept = int(flat.size), int(np.count_nonzero(flat >= float(cfg.group_threshold)))
    info = {"threshold": float(cfg.group_threshold), "source": source, "kept": kept, "tokens": n,
            "frac_kept": kept / n if n else 0.0}
    logger.info("group_scope dataset: threshold %r (%s): %d of %d supervised tokens (%.4f) at or above it, fixed for "
                "the whole run", info["threshold"], source, kept, n, info["frac_kept"])
    return info


def make_collator(cfg: SFTGoConfig, tokenizer, model) -> Collator:
    """The batch layout the config asks for; flash-attention models also get varlen kwargs (cumulative lengths)."""
    layout = "padding_free" if cfg.padding_free else "packed" if cfg.packing else "padded"
    impl = str(getattr(model.config, "_attn_implementation", None) or "")
    return Collator(tokenizer.pad_token_id, layout=layout, max_length=cfg.max_length,
                    flash_attn_kwargs=impl.startswith("flash"))


def _resolve_checkpoint(cfg: SFTGoConfig) -> str | None:
    r = cfg.resume_from_checkpoint
    if r in (None, "", "false", "False"):
        return None
    if r in ("last", "true", "True"):
        from .checkpoints import resolve_resume

        # The newest complete checkpoint (skipping, with a warning, those a kill left incomplete); an error when there
        # are checkpoint folders but none complete.
        return resolve_resume(cfg.output_dir, r)
    if not Path(r).exists():
        from .config import ConfigError

        raise ConfigError(f"resume_from_checkpoint: {r} does not exist; pass a checkpoint folder or 'last'")
    return r


def run_training(cfg: SFTGoConfig) -> dict:
    """Train per ``cfg`` and write the run directory; returns the summary dict. Ctrl-C (KeyboardInterrupt) once
    training began raises :class:`TrainingInterrupted` naming the step reached."""
    started = []
    try:
        return _run_training(cfg, started)
    except KeyboardInterrupt:
        if not started:
            raise
        raise TrainingInterrupted(int(started[0].state.global_step)) from None


def _run_training(cfg: SFTGoConfig, started: list) -> dict:
    from transformers import set_seed

    from .checkpoints import CompleteCheckpointCallback, SaveOnlyWhenAsked
    from .distributed import on_main
    from .models import apply_lora, load_model, load_tokenizer, resolve_model_path, save_merged
    from .objectives import objective_class
    from .report import plot_channel_losses, plot_loss_groups
    from .rundir import CONFIG, COUNTERS_FILE, FINAL, LOSS_CHANNELS_PNG, LOSS_GROUPS_PNG, METRICS, SUMMARY, read_metrics
    from .trainer import MetricsJsonl, SFTGoStateCallback, SFTGoTrainer, load_sftgo_state

    t0 = time.time()
    out = Path(cfg.output_dir)
    # Nothing is written into the run directory before the preparation succeeded (config.yaml included): a start that
    # fails (a bad model path, bad data) leaves an existing run as it was and creates no directory.
    ckpt = _resolve_checkpoint(cfg)
    if ckpt and cfg.process_index == 0:
        logger.info("%s", resume_description(cfg, ckpt))
    set_seed(cfg.seed)

    # The default model is converted once into the cache: process 0 first, the others wait and then find it (on a
    # filesystem they do not share they convert their own copy; concurrent conversions are safe, see models.py).
    on_main(lambda: resolve_model_path(cfg.model_name_or_path))
    tokenizer = load_tokenizer(cfg.model_name_or_path)
    # Cached next to the scores (<score_cache_dir>/tokenized, default ~/.cache/sftgo/tokenized): a rerun skips rendering.
    # Read and tokenized by process 0 only; every process gets the same data.
    data = on_main(lambda: tokenize_cached(load_examples(cfg.dataset, split=cfg.dataset_split, limit=cfg.max_examples,
                                                         channel_field=cfg.channel_field),
                                           tokenizer, cfg.max_length, cache_dir=tokenized_cache_dir(cfg.score_cache_dir)))
    logger.info("%d examples (%d skipped: empty response, %d skipped: weight 0, %d dropped: response truncated), "
                "%d supervised tokens%s", len(data), data.num_empty, data.num_zero_weight, data.num_dropped,
                data.num_supervised(), " (weighted)" if "loss_weight" in data.columns else "")

    model = load_model(cfg.model_name_or_path, dtype=cfg.model_dtype, device="cpu" if cfg.use_cpu else None,
                       attn_implementation=cfg.attn_implementation, load_in_4bit=cfg.load_in_4bit)
    add_token_columns(cfg, data, model, tokenizer)
    threshold = set_dataset_threshold(cfg, data)  # before any batch is cut (eval data gets the same threshold)
    eval_data = None
    if cfg.eval_dataset:
        # Held-out data gets the same token columns (scorer importance, reference log-probs) as the training data,
        # so its group losses are cut exactly as training cuts them.
        eval_data = on_main(lambda: tokenize_cached(load_examples(cfg.eval_dataset, split=cfg.eval_split,
                                                                  channel_field=cfg.channel_field, strict_channel=False),
                                                    tokenizer, cfg.max_length,
                                                    cache_dir=tokenized_cache_dir(cfg.score_cache_dir)))
        add_token_columns(cfg, eval_data, model, tokenizer)
    # One channel vocabulary for train and eval, from the training data (every process builds the same from the same
    # data); the trainer maps the batches' channel ids back to names for loss/<channel> and eval_loss/<channel>.
    channel_names = add_channels(data, eval_data, cfg.max_channels)
    if channel_names:
        logger.info("channels (id order): %s", ", ".join(channel_names))
    ref_model = None
    if objective_class(cfg.objective).needs_ref_model(cfg):
        import copy

        ref_model = (load_model(reference_path(cfg), dtype=cfg.model_dtype) if reference_path(cfg)
                     else copy.deepcopy(model))
        ref_model.eval().requires_grad_(False)
    if cfg.lora_r:
        # After the reference pass above: Rho-1's reference is the initial model, not the adapted one.
        model = apply_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                           target_modules=cfg.lora_target_modules, gradient_checkpointing=cfg.gradient_checkpointing,
                           quantized=cfg.load_in_4bit)
    t_prep = time.time() - t0

    trainer = SFTGoTrainer(
        model=model, args=cfg, train_dataset=TokenDataset(data), data_collator=make_collator(cfg, tokenizer, model),
        eval_dataset=TokenDataset(eval_data) if eval_data is not None else None,
        processing_class=tokenizer, callbacks=[MetricsJsonl(out / METRICS)], ref_model=ref_model,
        channel_names=channel_names,
    )
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not trainer.is_fsdp_enabled:
        # accelerate turns FSDP on only for GPU-type backends; on CPU it silently runs unsharded processes instead.
        from .config import ConfigError

        raise ConfigError("FSDP was requested (accelerate config) but accelerate did not enable it: FSDP needs GPUs; "
                          "on CPU use DDP: torchrun --nproc_per_node N -m sftgo.cli train ... --use_cpu true --ddp_backend gloo")
    if ref_model is not None:
        ref_model.to(cfg.device)
    prior = load_sftgo_state(trainer, ckpt)
    counters = SFTGoStateCallback(trainer, t0=t0, prior=prior)
    trainer.add_callback(counters)
    trainer.add_callback(SaveOnlyWhenAsked())  # no checkpoint at the last step unless save_steps or the next asks
    if cfg.stop_after_steps:
        trainer.add_callback(StopAfterSteps(cfg.stop_after_steps))
    # Last: marks each checkpoint complete once all is written (it checks sftgo's counters are there), then rotates.
    trainer.add_callback(CompleteCheckpointCallback(required=(COUNTERS_FILE,)))
    out.mkdir(parents=True, exist_ok=True)
    if cfg.process_index == 0:
        write_run_config(cfg, out / CONFIG)
    from . import startup_gc

    startup_gc.resume()  # the sftgo process's start-up is over: frozen, collected no more (no-op in-process)
    t1 = time.time()
    started.append(trainer)
    result = trainer.train(resume_from_checkpoint=ckpt)
    t_train = time.time() - t1

    final = out / FINAL
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(final))
        if cfg.lora_r and cfg.merge_lora:
            save_merged(final, final / "merged", dtype=cfg.model_dtype)
    summary = {}
    if trainer.is_world_process_zero():
        # Training records (not eval_*); a torn last line (a killed leg, and a resume with nothing left to log) is skipped.
        records = [r for r in read_metrics(out / METRICS) if "loss" in r]
        last = records[-1] if records else {}
        wall_leg = time.time() - t0
        whole = counters.whole_run(t_train, wall_leg)  # every leg of a resumed run; *_this_leg: this process alone
        whole_steps = int(trainer.state.global_step)
        summary = {
            "steps": whole_steps,
            "supervised_tokens": whole["supervised_tokens"],
            "examples": len(data),
            "examples_skipped_empty": data.num_empty,
            "examples_skipped_zero_weight": data.num_zero_weight,
            "weighted": "loss_weight" in data.columns,
            "channels": channel_names,  # id order (the training data's, then held-out-only ones)
            "examples_dropped_truncated": data.num_dropped,
            "wall_time_s": whole["wall_time_s"],
            "train_time_s": whole["train_time_s"],
            "prepare_time_s": round(t_prep, 2),
            # The mean step loss over every optimizer step of the run, all legs (transformers' figure after a resume
            # covers the last leg only).
            "train_loss": whole["loss_sum"] / whole_steps if whole.get("loss_sum") is not None and whole_steps
            else result.training_loss,
            "final": {k: last.get(k) for k in ("loss", "loss_ce", "loss_important", "loss_unimportant", "lam")},
            "objective": cfg.objective,
            "scorer": cfg.scorer,
            "resumed_from": ckpt,
            "legs": whole["legs"],
            **({"wall_time_s_this_leg": round(wall_leg, 2), "train_time_s_this_leg": round(t_train, 2),
                "supervised_tokens_this_leg": int(trainer.tokens_seen) - int(prior.get("supervised_tokens", 0))}
               if ckpt else {}),
            # True when --stop_after_steps ended the run before its budget (a resume continues it).
            "stopped_early": bool(trainer.state.max_steps and trainer.state.global_step < trainer.state.max_steps),
            **({"group_threshold": threshold} if threshold is not None else {}),
        }
        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2))  # a sweep reads it to decide "done"
        if records:
            plot_loss_groups(records, out / LOSS_GROUPS_PNG, title=f"{cfg.objective} / {cfg.scorer}")
            plot_channel_losses(read_metrics(out / METRICS), out / LOSS_CHANNELS_PNG,
                                title=f"{cfg.objective}: loss per channel")
    keep_checkpoints(cfg, completed=bool(summary) and not summary["stopped_early"])
    return summary


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) once training began: ``step`` is the last optimizer step finished. The complete checkpoints
    written before stay complete (a save that was under way stays unmarked: resuming skips it)."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


def resume_description(cfg: SFTGoConfig, ckpt: str) -> str:
    """``resuming RUN from checkpoint-40 (step 40 of 60, leg 2)``, from the checkpoint's trainer state and counters."""
    from .rundir import COUNTERS_FILE, TRAINER_STATE

    def read(name):
        try:
            return json.loads((Path(ckpt) / name).read_text())
        except (OSError, ValueError):
            return {}

    state, counters = read(TRAINER_STATE), read(COUNTERS_FILE)
    step = state.get("global_step")
    total = cfg.max_steps if cfg.max_steps and cfg.max_steps > 0 else state.get("max_steps")
    where = [f"step {step} of {total}" if step is not None else None,
             f"leg {int(counters['legs']) + 1}" if "legs" in counters else None]
    detail = ", ".join(w for w in where if w)
    return f"resuming {cfg.output_dir} from {Path(ckpt).name}" + (f" ({detail})" if detail else "")


def write_run_config(cfg: SFTGoConfig, path: Path) -> None:
    """config.yaml: the resolved settings (a resume's: the run's own with this leg's permitted changes, see
    :class:`sftgo.config.ResumedRun`); left untouched when it already holds them."""
    import yaml

    data = getattr(cfg, "run_config", None)
    data = config_to_dict(cfg) if data is None else data
    try:
        if path.is_file() and yaml.safe_load(path.read_text()) == data:
            return
    except yaml.YAMLError:
        pass
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def keep_checkpoints(cfg: SFTGoConfig, completed: bool) -> None:
    """--keep_checkpoints, once the run is complete (``completed``: summary.json written, not stopped early; known on
    process 0): process 0 deletes, after every process is done with the checkpoints. A run stopped by
    --stop_after_steps, killed or interrupted never gets here complete: it keeps its checkpoints to resume."""
    import torch.distributed as dist

    from .checkpoints import apply_keep_checkpoints

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if completed:
        apply_keep_checkpoints(cfg.output_dir, cfg.keep_checkpoints)


class StopAfterSteps(TrainerCallback):
    """Ends training after ``steps`` optimizer steps and saves a checkpoint there; the learning-rate schedule (and so
    a later resume) stays that of the full budget."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_save = True
            control.should_training_stop = True
        return control
