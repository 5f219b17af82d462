"""The trainer: a ``transformers.Trainer`` subclass that runs sftgo's objectives over the optimizer step.

The loss path, once per micro-batch (``compute_loss``):

    tokens = TokenBatch.from_inputs(inputs)                 # supervised tokens as flat [N] columns (sftgo.tokens)
    x      = tokens.select(head.features(model, inputs))    # [N, H] final hidden states (or [N, V] logits, naive head)
    coef, groups = plan or objective.coefficient(tokens, lam, state)   # pure (sftgo.objectives.OBJECTIVES)
    loss_sum, logp = head.weighted_nll(model, x, targets, coef, stats)   # or head.chunk_loss (Target-SFT, ASFT)
    sums[mode].add(StepStats.of(tokens, logp, stats))     # metric sums (sftgo.step_stats), mode = train | eval
    return loss_sum / K * dp_scale                          # the one normalization

``objective`` is looked up once in ``OBJECTIVES`` when the trainer is built (nothing here tests its name) and ``head``
(``sftgo.token_head``) is the only code that touches the LM head. ``K`` is the supervised-token count of the whole
optimizer step (all micro-batches and ranks, counted by the Trainer before the step); DDP averages gradients over
ranks, so ``dp_scale = world_size`` turns that average back into the step's sum.

Once per optimizer step, before any forward (``get_batch_samples``, which sees all of the step's micro-batches): the
objectives with group statistics (``--group_stats exact|lagged``) decide their per-token coefficients from the step's
global statistics (``_plan_step`` gathers them, with a no-grad pre-pass when they need the step's losses, and the
objective's pure ``decide`` turns them into coefficients); after the optimizer step (``_StepEnd``) the objective's pure
``next_state`` gives the new ``objective_state`` (Group-DRO's q, the lagged group means) from the step's all-reduced
group sums. The trainer owns that state, on the training device, and checkpoints it (``sftgo_state.json``).
Evaluation goes through the same head and objective but only into the ``eval`` metrics: it never moves DRO's ``q``,
the lagged means or the training metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from . import objectives as O
from . import token_head as H
from .checkpoints import RotateAfterCompletion  # old checkpoints deleted only after the new one is complete
from .rundir import COUNTERS_FILE, STATE_FILE, checkpoint_name
from .step_stats import StepStats
from .tokens import TokenBatch

logger = logging.getLogger(__name__)

class StepOrderSampler(torch.utils.data.Sampler):
    """A shuffled example order that depends on (seed, epoch) only, never on the number of processes.

    accelerate shards the batches of a sampler round-robin over the processes (process r takes micro-batches
    r, r + P, r + 2P, ...), so with the same index order every optimizer step covers the same contiguous slice of
    ``global batch = micro-batch x accumulation x processes`` examples whether it runs as 1 process with micro-batch 4,
    1 process with accumulation 4, or 2 processes with micro-batch 2. (The Trainer's default RandomSampler is
    re-seeded per process by accelerate, which is what made the order depend on the launch.) Not a RandomSampler
    subclass on purpose: accelerate would swap it for its own. ``set_epoch`` gives each epoch a new permutation.
    """

    def __init__(self, num_examples: int, seed: int):
        self.num_examples = int(num_examples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_examples, generator=g).tolist())


class Plan:
    """Fixed per-token coefficients of one micro-batch, decided from the optimizer step's statistics; travels with the
    micro-batch (not a tensor, so the Trainer moves it untouched) into ``compute_loss``."""

    def __init__(self, coef: torch.Tensor, ids: torch.Tensor):
        self.coef, self.ids = coef, ids


class SFTGoTrainer(RotateAfterCompletion, Trainer):
    """Trainer for the objectives in :data:`sftgo.objectives.OBJECTIVES`. ``args`` is an :class:`sftgo.config.SFTGoConfig`.

    ``ref_model`` (optional, frozen) runs beside the trained model for ASFT and Target-SFT with
    ``target_residual="reference"``; Rho-1 and the ``reference`` scorer use reference log-probs cached once before
    training (the ``ref_logp`` column).
    ``channel_names``: the channel vocabulary (``sftgo.data.add_channels``; id i = ``channel_names[i]``) of the batches'
    ``channel`` column, for the per-channel losses ``loss/<channel>`` and ``eval_loss/<channel>``.
    """

    def __init__(self, *args, ref_model=None, channel_names=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.channel_names = list(channel_names or [])
        # Our compute_loss divides by num_items_in_batch itself, so the Trainer must count it and must not divide
        # the loss by gradient_accumulation_steps again.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self.ref_model = ref_model
        self.objective = O.objective_class(self.args.objective)(self.args)  # the one lookup of the objective's name
        # What lives across optimizer steps (Group-DRO's q, the lagged group means): tensors on the device where the
        # step's statistics are (the training device), updated by the objective's pure next_state, checkpointed.
        self.objective_state: dict[str, torch.Tensor] = {}
        self._picked = None  # the group the step's weights picked (logged as worst_group)
        if self.args.world_size > 1 and not self.args.average_tokens_across_devices:
            from .config import ConfigError

            # K would be each process's own count while the group statistics are the step's: the group term would
            # silently weigh 1/world_size. sftgo normalizes over the whole step or not at all.
            raise ConfigError("average_tokens_across_devices: false is not supported with several processes (the loss "
                              "is normalized by the optimizer step's token count over all processes); leave it true")
        self.head = H.make_head(self._token_head_kind(), self.args.head_chunk_size)
        self.head.check_tol = 3e-2 if (self.args.bf16 or self.args.fp16) else 1e-3  # half-precision logits (autocast)
        self.ref_head = H.LinearHead(self.args.head_chunk_size)
        # metric sums per mode, summed over ranks when logged (not "_metrics": trl.SFTTrainer, a base of
        # SFTGoSFTTrainer, owns that name)
        self._stats: dict[str, StepStats] = {"train": StepStats(), "eval": StepStats()}
        self._step_groups = None  # this optimizer step's (group CE sums, counts), training forwards only
        self._step_info: dict = {}
        self._tokens_seen = 0.0
        self._targets_checked = False
        self._warned_weights = False
        self._last_lam = None
        self.add_callback(_StepEnd(self))

    def _token_head_kind(self) -> str:
        """``--token_head``, except under DeepSpeed ZeRO-3: it partitions every parameter outside its own module's
        forward, so the LM-head weight cannot be read after the model's forward; ``auto`` then falls back to the naive
        head (the model's own lm_head forward, which ZeRO-3 manages). Not run here (no CUDA for DeepSpeed): a path
        kept as small as possible. ZeRO-2 keeps parameters whole on every rank and uses the per-token head as DDP does."""
        kind = self.args.token_head
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        if kind != "naive" and plugin is not None and plugin.zero_stage == 3:
            if kind != "auto":
                from .config import ConfigError

                raise ConfigError(f"token_head: {kind!r} cannot read the LM head under ZeRO-3; use auto or naive")
            logger.warning("DeepSpeed ZeRO-3: the per-token head cannot read the partitioned LM head; using --token_head naive")
            return "naive"
        return kind

    def _issue_warnings_after_load(self, load_result):
        """A model with tied weights (SmolLM2's lm_head is its input embedding) is saved with the shared tensor once,
        so ``lm_head.weight`` is "missing" from every checkpoint although loading its twin restored it: not reported.
        Any other missing or unexpected key is, as transformers reports it."""
        missing = list(load_result.missing_keys)
        tied = tied_aliases(self.model, missing)
        if tied:
            load_result = type(load_result)([k for k in missing if k not in tied], list(load_result.unexpected_keys))
        return super()._issue_warnings_after_load(load_result)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "random" or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return StepOrderSampler(len(dataset), seed)

    # ------------------------------------------------------------------------------------------------ schedule

    def current_lam(self) -> float:
        a = self.args
        lam_min = a.lam if a.lam_min is None else a.lam_min
        total = max(int(self.state.max_steps or 0), 1)
        return O.lambda_schedule(int(self.state.global_step), total, a.lam, lam_min)

    # ------------------------------------------------------------------------------------------------ the step

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """All micro-batches of one optimizer step: count the step's tokens, take the step's weight ``W`` (the
        normalizer ``num_items_in_batch``: the token count, or the sum of the data weights when the batches carry a
        ``loss_weight`` column), and decide the objective's coefficients from the step's statistics (--group_stats
        exact / lagged) before any backward."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if num_items is not None:
            self._tokens_seen += float(num_items)  # a token count over all processes, weights or not
            if batches and "loss_weight" in batches[0]:
                if self.objective.takes_data_weights():
                    num_items = self._step_weight(batches, device)
                elif not self._warned_weights:
                    self._warned_weights = True
                    logger.warning("objective %s does not take data weights (a loss over whole logits rows): the "
                                   "dataset's weight / loss_weight are ignored", self.args.objective)
        mode = self.args.group_stats
        single = len(batches) == 1 and self.args.world_size == 1
        if not batches or not self.objective.step_stats or mode == "micro" or num_items is None:
            return batches, num_items
        if single and (mode == "exact" or "lagged_means" not in self.objective_state):
            return batches, num_items  # one micro-batch on one process: its own statistics are the step's
        for b, p in zip(batches, self._plan_step(batches, num_items)):
            b["sftgo_plan"] = p
        return batches, num_items

    def _step_weight(self, batches, device) -> torch.Tensor:
        """``W = sum_n w_n`` over the step's supervised tokens, all micro-batches and processes (summed over processes
        as transformers sums the token count under ``average_tokens_across_devices``, which sftgo requires)."""
        W = torch.zeros((), dtype=torch.float64, device=device)
        for b in batches:
            sup = b["labels"][:, 1:] != -100  # position t predicts t + 1, as the token count
            W += (b["loss_weight"][:, 1:].to(device, torch.float64) * sup.to(device)).sum()
        return self._sum(W).float()

    def _plan_step(self, batches, num_items) -> list[Plan]:
        """The step's statistics: group ids of every micro-batch (a no-grad pre-pass when the groups or the worst group
        need the step's log p), their counts and CE sums summed over micro-batches and processes; the objective turns
        them into coefficients (``decide``, pure)."""
        obj, state = self.objective, self.objective_state
        inputs = [self._prepare_inputs(b) for b in batches]
        tokens = [TokenBatch.from_inputs(b) for b in inputs]
        lagged = self.args.group_stats == "lagged" and "lagged_means" in state
        need_sums = obj.needs_means and not lagged
        lps, bases = None, None  # the pre-pass's log p and base coefficients b_n = w_n t_n (None when 1)
        if obj.dynamic() or need_sums:
            # b_n only where the sums are needed (Rho-1's pre-pass needs log p alone)
            lps, bases = map(list, zip(*[self._logp_nograd(i, t, obj.base(t) if need_sums else None)
                                         for i, t in zip(inputs, tokens)]))
        vals = [obj.values(t, None if lps is None else lps[i]) for i, t in enumerate(tokens)]
        if obj.batch_scope():  # one ranking over the step's tokens, all micro-batches and processes
            sizes = [v.shape[0] for v in vals]
            local = torch.cat(vals) if vals else torch.zeros(0)
            everything, offset = self._gather(local)
            ids_all = obj.group_ids(everything, torch.zeros(everything.shape[0], dtype=torch.long, device=everything.device))
            ids = list(ids_all[offset:offset + local.shape[0]].split(sizes))
        else:
            ids = [obj.group_ids(v, obj.segments(t)) for v, t in zip(vals, tokens)]
        dev = self.args.device
        G = obj.num_groups
        counts = torch.zeros(G, device=dev)
        sums = torch.zeros(G, device=dev) if need_sums else None
        value = obj.weighting.fns().get("value_of_logp") if need_sums else None  # a token loss f_n (the power family)
        for i, g in enumerate(ids):
            w = tokens[i].columns.get("loss_weight")
            if value is not None:  # S_g = sum w_n f_n
                s_i, c_i = O.group_stats(g, value(lps[i]).to(dev).float(), G, w, w)
            else:
                ce = (-lps[i] if need_sums else torch.zeros(g.shape[0])).to(dev).float()
                s_i, c_i = O.group_stats(g, ce, G, bases[i] if need_sums else None, w)
            counts += c_i
            if need_sums:
                sums += s_i
        counts = self._sum(counts)
        sums = self._sum(sums) if need_sums else None
        coefs, self._picked = obj.decide(ids, sums, counts, state, self.current_lam(), num_items)
        return [Plan(c, g) for c, g in zip(coefs, ids)]

    def _logp_nograd(self, inputs, tokens, base=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(log p, b)`` of a micro-batch without gradient: ``b`` the values of the head coefficient ``base`` (the data
        and token weights, ``w_n t_n``; None when ``base`` is a plain number: 1)."""
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        model.train()  # as in the real forward (dropout, if any, draws differently: then exact is approximate)
        with torch.no_grad():
            x = tokens.select(self.head.features(model, inputs))
            if isinstance(base, H.TokenCoef):
                lp, b = self.head.coefficients(model, x, tokens.targets, base)
                return lp.float(), b.float()
            return self.head.logp(model, x, tokens.targets).float(), None

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.args.world_size > 1:
            x = self.accelerator.reduce(x.contiguous(), reduction="sum")
        return x

    def _max(self, x: torch.Tensor) -> torch.Tensor:
        """The elementwise max of ``x`` over processes."""
        if self.args.world_size > 1:
            import torch.distributed as dist

            x = x.contiguous()
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return x

    def _gather(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Concatenation of every process's ``x`` (rank order) and where this process's part starts."""
        if self.args.world_size <= 1:
            return x, 0
        import torch.distributed as dist

        device = self.args.device
        x = x.to(device).float().contiguous()
        n = torch.tensor([x.shape[0]], device=device)
        sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        padded = torch.zeros(max(sizes), device=device)
        padded[: x.shape[0]] = x
        parts = [torch.zeros_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        rank = dist.get_rank()
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sum(sizes[:rank])

    def _end_step(self):
        """After each optimizer step: the step's group sums (all micro-batches and processes) give the objective's
        next state. Everything stays on the device the statistics were accumulated on."""
        self._stats["train"].settle()  # the step's backwards have run: its entropies are known
        if self._step_groups is None:
            return
        sums, counts = self._step_groups
        self._step_groups = None
        vec = self._sum(torch.cat([sums, counts]))
        G = sums.shape[0]
        self.objective_state, info = self.objective.next_state(self.objective_state, vec[:G], vec[G:])
        if self._picked is not None:
            info["worst_group"] = self._picked
            self._picked = None
        self._step_info = info

    def _reference(self, inputs, tokens):
        """(reference model's final hidden states of the supervised tokens [N, H_ref], its LM-head weight)."""
        if self.ref_model is None:
            raise RuntimeError(f"objective {self.args.objective} (with these settings) needs a reference model: "
                               "build the trainer with ref_model=...")
        with torch.no_grad():
            rows = tokens.select(self.ref_head.features(self.ref_model, inputs))
            return rows, self.ref_head.weight(self.ref_model).detach()

    # ------------------------------------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        tokens = TokenBatch.from_inputs(inputs)
        if not self._targets_checked:  # validated once at the boundary, not per micro-batch
            self.head.check_targets(model, tokens.targets)
            self._targets_checked = True
        x = tokens.select(self.head.features(model, inputs))
        lam = self.current_lam()
        obj = self.objective
        t = tokens.targets
        # Filled by the head's chunk loop on its way: per-token full-vocabulary entropy, argmax == target, and the
        # coefficients applied ([N] each; no [N, V] tensor kept), for the metrics.
        stats: dict = {}
        if obj.chunk_loss:  # Target-SFT, ASFT: a loss over whole logits rows, chunk by chunk
            ref_rows, ref_w = self._reference(inputs, tokens) if obj.needs_ref_model(self.args) else (None, None)
            rw = tokens.columns.get("loss_weight") if obj.row_weights else None  # the rows' data weights
            loss_sum = self.head.chunk_loss(model, x, t, obj.chunk_fn(ref_w), extra=ref_rows, stats=stats,
                                            row_weight=rw)
            with torch.no_grad():  # for the metrics (one forward-only GEMM per chunk, which also gives the entropy)
                logp = self.head.logp(model, x.detach(), t, stats)
            ids = None
        else:
            plan = inputs.get("sftgo_plan") if mode == "train" else None
            if plan is not None:  # --group_stats exact / lagged: group factors fixed from the step's statistics
                coef, ids = obj.base(tokens, plan.coef), plan.ids
            else:  # the micro-batch's own statistics (micro, one micro-batch per step, or evaluation)
                lp = None
                if obj.dynamic():
                    with torch.no_grad():
                        lp = self.head.logp(model, x.detach(), t)
                coef, ids = obj.coefficient(tokens, lam, self.objective_state, lp)
            loss_sum, logp = self.head.weighted_nll(model, x, t, coef, stats)

        n_local = torch.tensor(float(len(tokens)), device=x.device)
        if mode == "train" and num_items_in_batch is not None:
            K = torch.as_tensor(num_items_in_batch, device=x.device).float()
        else:
            # evaluation: this batch's own (weighted) mean
            weighted = "loss_weight" in tokens.columns and obj.takes_data_weights()
            K = tokens.columns["loss_weight"].float().sum() if weighted else n_local
        loss = loss_sum / torch.where(K > 0, K, torch.ones_like(K))  # W may be below 1 with data weights
        if mode == "train" and self.args.average_tokens_across_devices and self.args.world_size > 1 \
                and num_items_in_batch is not None:
            loss = loss * self.args.world_size  # K is the global count and DDP averages gradients over ranks
        self._accumulate(mode, tokens, logp.detach(), ids, lam, stats)
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the objective's loss on the batch (no logits are kept), group metrics into the eval mode."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------------------------------------ metrics

    @torch.no_grad()
    def _accumulate(self, mode, tokens, logp, ids, lam, stats=None):
        """The micro-batch's metric sums (added over micro-batches here, summed over processes when logged) and, in
        training, its group statistics for the objective's next state."""
        stats = stats or {}
        obj = self.objective
        self._stats[mode].add(StepStats.of(tokens, logp, stats, obj.important(tokens, logp, ids),
                                           obj.metric_weight(logp, stats), obj.row_metrics, len(self.channel_names)))
        if mode == "train":
            self._last_lam = lam
            if ids is not None and obj.step_stats:
                tw, tv = stats.get("token_weight"), stats.get("token_value")
                if tv is not None:  # the weighting's own token loss f_n (the power family): S_g = sum w_n f_n
                    sums, counts = O.group_stats(ids, tv.float(), obj.num_groups, *obj.stat_weights(tokens, None))
                else:
                    sums, counts = O.group_stats(ids, -logp.float(), obj.num_groups,
                                                 *obj.stat_weights(tokens, None if tw is None else tw.float()))
                if self._step_groups is None:
                    self._step_groups = (sums, counts)
                else:
                    self._step_groups = (self._step_groups[0] + sums, self._step_groups[1] + counts)

    def _reduced(self, mode) -> StepStats | None:
        """The mode's sums, summed over processes (every rank calls log()); the next window starts empty."""
        window, self._stats[mode] = self._stats[mode], StepStats()
        return window.all_reduce(self._sum, self.args.device, self._max)

    @property
    def tokens_seen(self) -> int:
        """Supervised tokens trained on in this run, over all processes (not counting steps before a resume)."""
        return int(self._tokens_seen)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:
            s = self._reduced("train")
            if s is not None:
                extra = dict(self.objective.extra_metrics(s, self.objective_state))
                if self.objective.uses_lam:
                    extra["lam"] = self._last_lam
                logs.update(s.train_logs(self.channel_names, self.objective.row_metrics, extra))
            logs.update({k: int(v) if torch.is_tensor(v) else v for k, v in self._step_info.items()})
            self._step_info = {}
        elif any(k.startswith("eval_") for k in logs):
            s = self._reduced("eval")
            if s is not None:
                logs.update(s.eval_logs(self.channel_names, self.objective.row_metrics))
        super().log(logs, start_time)


class _StepEnd(TrainerCallback):
    def __init__(self, trainer: SFTGoTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_step()


class MetricsJsonl(TrainerCallback):
    """Appends one JSON object per logging step to ``metrics.jsonl``.

    After a resume, the first record written drops any older records at or after its step, so the file never holds
    duplicates (the run it resumes from may have logged past its last checkpoint).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._first = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not ("loss" in logs or "eval_loss" in logs):
            return
        rec = {"step": int(state.global_step), **{k: _jsonable(v) for k, v in logs.items()}}
        if self._first:
            self._first = False
            kept = []
            if self.path.exists():
                for line in self.path.read_text().splitlines():
                    try:
                        old = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line from a killed run
                    if old.get("step", math.inf) < rec["step"]:
                        kept.append(line)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")  # a kill during the rewrite keeps the old file
            tmp.write_text("".join(x + "\n" for x in kept))
            os.replace(tmp, self.path)
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")


class SFTGoStateCallback(TrainerCallback):
    """Saves the small state that lives outside the model/optimizer in each checkpoint: the objective's (Group-DRO
    weights, lagged group means) in ``sftgo_state.json`` and the run's running totals (supervised tokens, training
    and wall seconds) in ``sftgo_counters.json``, so a resumed run's summary counts the whole run, not its last leg."""

    def __init__(self, trainer: SFTGoTrainer, t0: float | None = None, prior: dict | None = None):
        self.trainer = trainer
        self.t0 = time.time() if t0 is None else t0  # when this process started the run (wall clock)
        self.t_train = None
        self.prior = dict(prior or {})  # totals up to the checkpoint this process resumed from

    def on_train_begin(self, args, state, control, **kwargs):
        self.t_train = time.time()

    def whole_run(self, train_s: float, wall_s: float, pending: float = 0.0) -> dict:
        """This leg's training and wall seconds added to the totals it resumed from (tokens are restored into the
        trainer's own counter by :func:`load_sftgo_state`). ``loss_sum``: the sum of the step losses over every
        optimizer step of the run so far (the run's train_loss is it over the steps; None when a checkpoint from
        before this counter was resumed); ``pending``: this leg's loss not yet logged (during training)."""
        leg = getattr(self.trainer, "_total_loss_scalar", None)  # the Trainer's sum of this leg's logged step losses
        prior = self.prior.get("loss_sum")
        if prior is None and not getattr(self.trainer, "_initial_global_step", 0):
            prior = 0.0  # this leg started at step 0
        return {"supervised_tokens": int(self.trainer.tokens_seen),
                "train_time_s": round(self.prior.get("train_time_s", 0.0) + train_s, 2),
                "wall_time_s": round(self.prior.get("wall_time_s", 0.0) + wall_s, 2),
                "legs": int(self.prior.get("legs", 0)) + 1,
                "loss_sum": None if leg is None or prior is None else prior + float(leg) + pending}

    def totals(self) -> dict:
        """The totals at a save, inside the training loop: the Trainer has not yet added its unlogged loss
        (``_tr_loss``, this process's) to its sum; it does so only when the leg ends."""
        now = time.time()
        pending = getattr(self.trainer, "_tr_loss", None)
        return self.whole_run(now - (self.t_train or now), now - self.t0,
                              pending=0.0 if pending is None else float(pending))

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / checkpoint_name(state.global_step)
        if not ckpt.exists():
            return
        st = state_to_json(self.trainer.objective_state)
        if st:
            (ckpt / STATE_FILE).write_text(json.dumps(st))
        (ckpt / COUNTERS_FILE).write_text(json.dumps(self.totals()))


def tied_aliases(model, missing) -> set[str]:
    """The names among ``missing`` that are one parameter with another name that was loaded (tied weights)."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    missing = set(missing)
    return {n for group in names.values() if len(group) > 1 and any(m not in missing for m in group)
            for n in group if n in missing}


def load_sftgo_state(trainer: SFTGoTrainer, checkpoint: str | None) -> dict:
    """Restore what :class:`SFTGoStateCallback` saved in ``checkpoint``; returns the run's totals up to it (empty for
    a fresh run or a checkpoint from before the counters existed)."""
    if checkpoint is None:
        return {}
    f = Path(checkpoint) / STATE_FILE
    if f.exists():
        trainer.objective_state = state_from_json(json.loads(f.read_text()), trainer.args.device)
    c = Path(checkpoint) / COUNTERS_FILE
    prior = json.loads(c.read_text()) if c.exists() else {}
    trainer._tokens_seen = float(prior.get("supervised_tokens", 0))
    return prior


def state_to_json(state: dict) -> dict:
    """The trainer's objective state as JSON: values and dtype per tensor (float32 / float64 round-trip exactly)."""
    return {k: {"dtype": str(v.dtype).removeprefix("torch."), "values": v.detach().cpu().tolist()} for k, v in state.items()}


def state_from_json(data: dict, device) -> dict:
    """Inverse of :func:`state_to_json`, the tensors placed on the training ``device``."""
    return {k: torch.tensor(v["values"], dtype=getattr(torch, v["dtype"]), device=device) for k, v in data.items()}


def _jsonable(v):
    if torch.is_tensor(v):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else v
    return v
