"""sftgo's objectives in TRL: ``SFTGoSFTConfig`` and ``SFTGoSFTTrainer`` (TRL 1.16).

A TRL script keeps its model, dataset (text, prompt-completion or conversational) and ``SFTConfig`` settings and
swaps two names::

    from sftgo.integrations.trl import SFTGoSFTConfig, SFTGoSFTTrainer

    args = SFTGoSFTConfig(output_dir="out", objective="sft-go", scorer="tfidf", percentile=90, lam=0.9)
    trainer = SFTGoSFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", args=args, train_dataset=dataset)
    trainer.train()

``SFTGoSFTConfig`` is ``trl.SFTConfig`` plus sftgo's objective settings (:class:`sftgo.config.ObjectiveArgs`, the
same fields, defaults and checks as ``sftgo train``'s flags). ``SFTGoSFTTrainer`` is ``trl.SFTTrainer`` with sftgo's
loss path: the class is ``(SFTGoTrainer, SFTTrainer)``, so its MRO runs :class:`sftgo.trainer.SFTGoTrainer`'s
``compute_loss``, optimizer-step statistics (``get_batch_samples``), sampler and group logging in front of TRL's
dataset preparation, collator, model loading and PEFT handling — the same step statistics and the one normalization
(the step's supervised-token count over micro-batches and processes) as ``sftgo train``, not a copy of them.

The per-token columns (``importance`` from the scorer, ``ref_logp`` from the reference model) are computed after TRL
has prepared the dataset — on the very tokens it tokenized, truncated and packed — one sequence at a time (a packed
row's ``seq_lengths`` give its sequences when the batches are padding-free, as TRL's attention sees them), and are
added as dataset columns. TRL would drop them in four places; this class keeps them in each: they are computed after
its truncation and packing (which keep only ``input_ids`` / ``labels``), named in the signature columns (which
``remove_unused_columns`` keeps), and laid out by a subclass of TRL's collator (:class:`TokenColumnCollator`, padded
rows or one padding-free row, as it lays out the labels) together with ``example_index``, the sequence each token
belongs to, so per-sequence grouping follows packed sequences, not rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ..config import ConfigError, ObjectiveArgs
from ..data import IGNORE_INDEX
from ..trainer import COUNTERS_FILE, SFTGoStateCallback, SFTGoTrainer, load_sftgo_state

logger = logging.getLogger(__name__)

__all__ = ["SFTGoSFTConfig", "SFTGoSFTTrainer"]

TOKEN_COLUMNS = ("importance", "ref_logp", "ref_lower_mass")
"""The per-token float columns sftgo adds to TRL's prepared data (which ones a run needs: :func:`_wanted`)."""


@dataclass
class SFTGoSFTConfig(ObjectiveArgs, SFTConfig):
    """``trl.SFTConfig`` plus sftgo's objective settings under ``sftgo train``'s names (``objective``, ``scorer``,
    ``percentile``, ``lam``, ``lam_min``, ``group_stats``, ``num_groups``, ``group_scope``, ``ref_model_name_or_path``,
    ``infosft_p``, ``target_gamma``, ...; see :class:`sftgo.config.ObjectiveArgs`). TRL's own loss switches are
    refused: the objective decides the loss (``objective="dft"``, not ``loss_type="dft"``).

    ``bf16`` left unset is TRL's default (bf16 mixed precision) where the accelerator supports it, and fp32 on a CPU
    (or ``use_cpu=True``), like ``sftgo train``: TRL's bf16 default stops a CPU run at construction ("Your setup
    doesn't support bf16/gpu"), and bf16 autocast on a CPU without bf16 units is several times slower."""

    def __post_init__(self):
        self.check_objective()
        if self.bf16 is None and not self.fp16:
            from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

            self.bf16 = not self.use_cpu and (is_torch_bf16_gpu_available() or is_torch_xla_available())
        if self.loss_type not in ("nll", "chunked_nll"):
            raise ConfigError(f"loss_type: {self.loss_type!r} is TRL's loss switch; with SFTGoSFTConfig the objective "
                              f"decides the loss (objective='{self.loss_type}' if sftgo has it); leave loss_type='nll'")
        if self.label_smoothing_factor:
            raise ConfigError("label_smoothing_factor: use objective='target-sft' with target_residual='uniform' and "
                              "target_gamma=1-label_smoothing_factor (sftgo's label smoothing); leave this at 0")
        super().__post_init__()


def _wanted(args) -> list[str]:
    """The token columns a run needs, as ``sftgo train`` decides them (sftgo.pipeline.add_token_columns)."""
    from ..pipeline import reference_columns
    from ..scorers import scorer_needs_reference

    out = []
    if args.scorer and not scorer_needs_reference(args.scorer):
        out.append("importance")
    return [*out, *reference_columns(args)]


@dataclass
class TokenColumnCollator(DataCollatorForLanguageModeling):
    """TRL's collator plus sftgo's per-token float ``columns``, laid out exactly as TRL lays out ``labels`` (right-padded
    rows, or all sequences in one padding-free row; 0 on padding), and ``example_index`` (``[rows, width]`` long: the
    sequence each position belongs to, numbered within the micro-batch, -1 on padding). In a padding-free batch a packed
    row's ``seq_lengths`` are separate sequences (TRL restarts their position ids); in padded rows a row is one."""

    columns: tuple[str, ...] = ()

    def torch_call(self, examples):
        out = super().torch_call(examples)
        width = out["labels"].shape[1]
        rows = 1 if self.padding_free else len(examples)
        seqs = []  # per example: the lengths of its sequences
        for ex in examples:
            n = len(ex["input_ids"])
            seqs.append(list(ex["seq_lengths"]) if self.padding_free and "seq_lengths" in ex else [n])
        index = torch.full((rows, width), -1, dtype=torch.long)
        cols = {c: torch.zeros((rows, width), dtype=torch.float32) for c in self.columns}
        pos, k = 0, 0
        for r, (ex, lengths) in enumerate(zip(examples, seqs)):
            if not self.padding_free:
                pos = 0
            row = 0 if self.padding_free else r
            for c in self.columns:
                v = torch.as_tensor(ex[c], dtype=torch.float32)
                cols[c][row, pos:pos + v.shape[0]] = v
            for L in lengths:
                index[row, pos:pos + L] = k
                pos, k = pos + L, k + 1
        out["example_index"] = index
        out.update(cols)
        return out


class SFTGoSFTTrainer(SFTGoTrainer, SFTTrainer):
    """``trl.SFTTrainer`` that trains any sftgo objective (``args``: an :class:`SFTGoSFTConfig`). Takes every argument
    ``SFTTrainer`` takes except ``compute_loss_func`` (the objective is the loss), plus ``ref_model`` (a frozen model for
    ``target_residual="reference"``; default: ``ref_model_name_or_path``, or a copy of the initial model).

    Sampling: ``train_sampling_strategy="random"`` (the default) is sftgo's step-order sampler — the same examples in
    each optimizer step whatever the split over micro-batches, accumulation and processes; ``"sequential"`` is the
    dataset's order (after TRL's preparation: packed rows in their packed order)."""

    def __init__(self, model, args: SFTGoSFTConfig | None = None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, *, ref_model=None, **kwargs):
        if not isinstance(args, SFTGoSFTConfig):
            raise ConfigError(f"args: SFTGoSFTTrainer needs an SFTGoSFTConfig (trl.SFTConfig plus the objective "
                              f"settings), got {type(args).__name__}; build it as SFTGoSFTConfig(output_dir=..., "
                              "objective=...) with your SFTConfig settings")
        if kwargs.get("compute_loss_func") is not None:
            raise ConfigError("compute_loss_func: SFTGoSFTTrainer's loss is the objective (args.objective); drop "
                              "compute_loss_func, or use it with trl.SFTTrainer and sftgo.objectives.compute_loss_func")
        super().__init__(model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, ref_model=ref_model, **kwargs)
        self._columns = _wanted(self.args)
        missing = [c for c in self.objective.token_columns(self.args) if c not in self._columns]
        if missing:  # cannot happen through the config's checks; a guard against a new objective row
            raise ConfigError(f"objective {self.args.objective!r} reads {', '.join(missing)}, which no setting computes")
        if isinstance(self.data_collator, DataCollatorForLanguageModeling):
            c = self.data_collator
            self.data_collator = TokenColumnCollator(
                pad_token_id=c.pad_token_id, padding_free=c.padding_free, return_position_ids=c.return_position_ids,
                pad_to_multiple_of=c.pad_to_multiple_of, return_tensors=c.return_tensors, columns=tuple(self._columns))
        elif self._columns:
            logger.warning("SFTGoSFTTrainer: your data_collator must pass the token columns %s through as [B, T] "
                           "float tensors aligned with labels (TRL's collator does, through TokenColumnCollator)",
                           ", ".join(self._columns))
        self.train_dataset = self._add_token_columns(self.train_dataset, "train")
        from ..pipeline import set_dataset_threshold, uses_dataset_threshold

        if uses_dataset_threshold(self.args) and self.args.group_threshold is None:
            if getattr(self, "_train_importance", None) is None:
                raise ConfigError("group_threshold: group_scope dataset needs the train_dataset's importance scores; "
                                  "drop its 'importance' column (sftgo computes it) or pass group_threshold")
            set_dataset_threshold(self.args, SimpleNamespace(columns={"importance": self._train_importance}))
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {k: self._add_token_columns(v, k) for k, v in self.eval_dataset.items()}
        else:
            self.eval_dataset = self._add_token_columns(self.eval_dataset, "eval")
        if self.objective.needs_ref_model(self.args) and self.ref_model is None:
            self.ref_model = self._load_reference_model()
        from ..checkpoints import CompleteCheckpointCallback

        # Each checkpoint carries the objective's cross-step state (Group-DRO's q, lagged group means) and is marked
        # complete last, as in `sftgo train` (it checks sftgo's counters are there); train(resume_from_checkpoint=...)
        # restores the state.
        self.add_callback(SFTGoStateCallback(self))
        self.add_callback(CompleteCheckpointCallback(required=(COUNTERS_FILE,)))

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """``trl.SFTTrainer.train``; ``resume_from_checkpoint=True`` (or ``"last"``) takes the newest *complete*
        checkpoint of ``output_dir`` and, with any checkpoint, the objective's state saved in it is restored first."""
        ckpt = resume_from_checkpoint
        if ckpt is True or ckpt == "last":
            from ..checkpoints import last_complete_checkpoint

            ckpt = last_complete_checkpoint(self.args.output_dir)
            if ckpt is None:
                raise ConfigError(f"resume_from_checkpoint: {self.args.output_dir} has no complete checkpoint to resume "
                                  "from; pass False to start over")
        if ckpt:
            load_sftgo_state(self, ckpt)
        return super().train(ckpt or None, *args, **kwargs)

    def get_eval_dataloader(self, eval_dataset=None):
        # a dataset handed to evaluate() later (TRL has prepared it by now) gets its token columns here
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self._add_token_columns(eval_dataset, "eval")
        return super().get_eval_dataloader(eval_dataset)

    # ------------------------------------------------------------------------------------------------ columns

    def _sequences(self, ids, labels, seq_lengths):
        """A prepared row as the sequences the model sees separately: (start, ids, labels with position 0 masked)."""
        lengths = list(seq_lengths) if (self.padding_free and seq_lengths is not None) else [len(ids)]
        pos = 0
        for L in lengths:
            lab = list(labels[pos:pos + L])
            if lab:
                lab[0] = IGNORE_INDEX  # position 0 of a sequence has no context: never a target (TRL masks it too)
            yield pos, list(ids[pos:pos + L]), lab
            pos += L

    def _add_token_columns(self, dataset, name):
        """``dataset`` (prepared by TRL) with the run's token columns computed on its tokens, one sequence at a time."""
        if dataset is None or not self._columns or isinstance(dataset, str):
            return dataset
        import datasets

        if not isinstance(dataset, datasets.Dataset):
            raise ConfigError(f"{name} dataset: objective {self.args.objective!r} with scorer {self.args.scorer!r} "
                              f"needs per-token columns computed before training, so it needs a map-style "
                              f"datasets.Dataset, not {type(dataset).__name__}")
        todo = [c for c in self._columns if c not in dataset.column_names]
        if not todo:
            return dataset
        from ..data import TokenizedData

        seq_col = dataset["seq_lengths"] if "seq_lengths" in dataset.column_names else None
        rows = []  # per row: [(start, labels)] of its sequences
        data = TokenizedData([], [], [], [])
        from ..scorers import scorer_spec

        # only a scorer that reads text needs it decoded (token by token, so that the offsets are exact)
        decode = "importance" in todo and scorer_spec(self.args.scorer).reads_text
        tok = getattr(self, "_tokenizer", self.processing_class)
        for r, (ids, labels) in enumerate(zip(dataset["input_ids"], dataset["labels"])):
            parts = []
            for start, s_ids, s_lab in self._sequences(ids, labels, None if seq_col is None else seq_col[r]):
                parts.append((start, s_lab))
                data.input_ids.append(s_ids)
                data.labels.append(s_lab)
                pieces = [tok.decode([t]) for t in s_ids] if decode else [""] * len(s_ids)
                ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
                data.texts.append("".join(pieces))
                data.offsets.append(np.stack([ends - np.asarray([len(p) for p in pieces], dtype=np.int64), ends], 1)
                                    if s_ids else np.zeros((0, 2), dtype=np.int64))
            rows.append(parts)
        # Called by every process together, not under main_process_first: sftgo.pipeline's scoring functions do the work
        # once per job themselves (process 0 computes and broadcasts; the reference pass is sharded), through
        # collectives that a process waiting at main_process_first's barrier would never join.
        values = self._token_values(data, todo, tok)
        if name == "train" and "importance" in values:
            self._train_importance = values["importance"]  # --group_scope dataset's threshold is cut from these
        k = 0
        full = {c: [] for c in todo}
        for ids, parts in zip(dataset["input_ids"], rows):
            arrays = {c: np.zeros(len(ids), dtype=np.float32) for c in todo}
            for start, lab in parts:
                sup = np.flatnonzero(np.asarray(lab) != IGNORE_INDEX) + start
                for c in todo:
                    arrays[c][sup] = values[c][k]
                k += 1
            for c in todo:
                full[c].append(arrays[c].tolist())
        feature = datasets.Sequence(datasets.Value("float32"))
        for c in todo:
            dataset = dataset.add_column(c, full[c], feature=feature)
        return dataset

    def _token_values(self, data, todo, tokenizer) -> dict[str, list[np.ndarray]]:
        """Per sequence, per supervised token: the scorer's importance and the reference model's log p (sftgo.pipeline's
        functions and caches, keyed by the token ids, so `sftgo train` and this trainer share cache entries)."""
        from .. import pipeline as P

        from ..scorers import scorer_reference_gap

        out = {}
        if "importance" in todo and scorer_reference_gap(self.args.scorer):  # influence: reference minus initial model
            from ..scorers.reference import influence

            ref, _ = P.cached_token_logp(P.reference_path(self.args), data, tokenizer,
                                         cache_dir=self.args.score_cache_dir,
                                         batch_size=self.args.per_device_train_batch_size)
            out["importance"] = [np.asarray(v, dtype=np.float32) for v in influence(ref, self._initial_logp(data, tokenizer))]
        elif "importance" in todo:
            out["importance"] = P.compute_importance(self.args, data, tokenizer)
        ref = tuple(c for c in P.REFERENCE_COLUMNS if c in todo)
        if ref:
            path = P.reference_path(self.args)
            if path is not None:
                cols, _ = P.cached_reference(path, data, tokenizer, ref, cache_dir=self.args.score_cache_dir,
                                             batch_size=self.args.per_device_train_batch_size)
                out.update(cols)
            else:  # the initial model: not cached (an in-memory model has no file identity to key a cache by)
                from ..scorers.reference import reference_token_logp

                if self.state.global_step > 0:
                    raise ConfigError("ref_model_name_or_path: 'initial' is the model before training; pass this "
                                      "dataset as eval_dataset when building the trainer, or give a reference path")

                P.warn_initial_reference(getattr(self.model, "name_or_path", None), self.args)
                lower = "ref_lower_mass" in ref
                got = reference_token_logp(self.model, data.input_ids, data.labels,
                                           batch_size=self.args.per_device_train_batch_size,
                                           pad_token_id=tokenizer.pad_token_id, lower_mass=lower)
                out.update(zip(("ref_logp", "ref_lower_mass"), got) if lower else [("ref_logp", got)])
        return out

    def _initial_logp(self, data, tokenizer):
        """log p of every supervised token under the model before training (not cached: an in-memory model)."""
        from ..scorers.reference import reference_token_logp

        if self.state.global_step > 0:
            raise ConfigError(f"scorer {self.args.scorer}: it needs the model before training; pass this dataset as "
                              "eval_dataset when building the trainer")
        return reference_token_logp(self.model, data.input_ids, data.labels,
                                    batch_size=self.args.per_device_train_batch_size, pad_token_id=tokenizer.pad_token_id)

    def _load_reference_model(self):
        """Target-SFT's reference model: ``ref_model_name_or_path``, else a frozen copy of the initial model."""
        import copy

        from ..models import load_model
        from ..pipeline import reference_path

        path = reference_path(self.args)
        ref = load_model(path) if path else copy.deepcopy(self.accelerator.unwrap_model(self.model))
        return ref.eval().requires_grad_(False).to(self.args.device)

    def _set_signature_columns_if_needed(self):
        # TRL keeps input_ids / labels / seq_lengths; remove_unused_columns would drop the token columns.
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns,
                                   *[c for c in self._columns if c not in self._signature_columns]]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        missing = [c for c in self.objective.token_columns(self.args) if c not in inputs]
        if missing:
            raise ValueError(f"the batch has no {', '.join(missing)} column, which objective {self.args.objective!r} "
                             "reads; a custom data_collator must pass it through ([B, T] float, aligned with labels)")
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
