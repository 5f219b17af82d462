"""The trainer: a ``transformers.Trainer`` subclass whose ``compute_loss`` runs sftgo's token-level objectives.

Per micro-batch: model forward (through the wrapped module, so DDP/FSDP/DeepSpeed hooks run) with
``output_hidden_states=True`` and ``logits_to_keep=1`` (the full ``[B, T, V]`` logits are never built) -> final hidden
states of the supervised positions ``[N, H]`` -> per-token head (fused / chunked / naive) -> objective.

Normalization lives in one place: every objective is a sum over supervised tokens divided by ``num_items``, the
supervised-token count of the whole optimizer step (all micro-batches; all ranks when
``average_tokens_across_devices``), which the Trainer counts before the step. So the step's loss does not depend on
how the batch was split for plain token sums. SFT-GO's group max and Rho-1's top-k are taken per micro-batch and
token-weighted across micro-batches (see ``objectives.sft_go``); with gradient_accumulation_steps = 1 on one process
they are exactly the paper's per-batch quantities.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from . import objectives as O
from . import token_head as H
from .data import IGNORE_INDEX
from .grouping import percentile_groups_torch

logger = logging.getLogger(__name__)

FUSED_OBJECTIVES = {"sft": "sft", "dft": "dft", "infosft": "infosft", "sft-go": "sft_go"}
STATE_FILE = "sftgo_state.json"


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


class SFTGoTrainer(Trainer):
    """Trainer for the objectives in :mod:`sftgo.objectives`. ``args`` is an :class:`sftgo.config.SFTGoConfig`.

    ``ref_model`` (optional, frozen) is used only by Target-SFT with ``target_residual="reference"``; Rho-1 and the
    ``reference`` scorer use reference log-probs cached once before training (the ``ref_logp`` column).
    """

    def __init__(self, *args, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Our compute_loss divides by num_items_in_batch itself, so the Trainer must count it and must not divide
        # the loss by gradient_accumulation_steps again.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self.ref_model = ref_model
        self.dro = O.GroupDRO(self.args.num_groups, self.args.dro_eta) if self.args.objective == "sft-go-dro" else None
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._head_checked = False
        self._tokens = torch.zeros((), dtype=torch.long)

    # ------------------------------------------------------------------------------------------------ schedule

    def current_lam(self) -> float:
        a = self.args
        lam_min = a.lam if a.lam_min is None else a.lam_min
        total = max(int(self.state.max_steps or 0), 1)
        return O.lambda_schedule(int(self.state.global_step), total, a.lam, lam_min)

    # ------------------------------------------------------------------------------------------------ forward

    def _hidden_and_head(self, model, inputs):
        """Returns (hidden [B, T-1, H] or None, logits [B, T-1, V] or None). Exactly one is set."""
        fwd = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "use_cache": False}
        if self.args.token_head == "naive":
            out = model(**fwd)
            return None, out.logits[:, :-1]
        try:
            out = model(**fwd, output_hidden_states=True, logits_to_keep=1)
        except TypeError:  # a model without logits_to_keep: it builds full logits, we still use the hidden path
            out = model(**fwd, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        if not self._head_checked:
            # The hidden path assumes logits = lm_head(last hidden state) with no bias, scaling or softcapping.
            # Check it once on the last position, whose logits the model computed anyway.
            W = self._lm_head_weight(model)
            with torch.no_grad():
                mine = hidden[:, -1].float() @ W.float().T
                theirs = out.logits[:, -1].float()
            if not torch.allclose(mine, theirs, atol=1e-3, rtol=1e-3):
                raise RuntimeError(
                    "this model's logits are not lm_head(last hidden state) (bias, logit scaling or softcapping?); "
                    "run with --token_head naive"
                )
            self._head_checked = True
        return hidden[:, :-1], None

    @staticmethod
    def _lm_head_weight(model):
        head = _unwrap(model).get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise RuntimeError("the LM head has a bias, which the per-token head does not support; run with --token_head naive")
        return head.weight

    # ------------------------------------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        labels = inputs["labels"]
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX  # [B, T-1]: position t predicts token t+1
        n_local = mask.sum()
        num_items = num_items_in_batch if num_items_in_batch is not None else n_local.clamp(min=1)
        if torch.is_tensor(num_items):
            num_items = num_items.to(labels.device).float().clamp(min=1)
        scores = inputs["importance"][:, 1:] if "importance" in inputs else None
        ref_logp = inputs["ref_logp"][:, 1:][mask] if "ref_logp" in inputs else None

        hidden, logits = self._hidden_and_head(model, inputs)
        t = targets[mask]  # [N]
        lam = self.current_lam()
        obj = a.objective

        # Groups for SFT-GO (and for logging under every objective): from static scores, or from the current
        # excess loss (Rho-1 style) which needs logp first.
        important = None
        if scores is not None and a.scorer != "reference":
            important = percentile_groups_torch(scores, mask, a.percentile, scope=a.group_scope)[mask]

        use_fused = (
            logits is None and obj in FUSED_OBJECTIVES and a.token_head in ("auto", "fused")
            and not (obj == "sft-go" and (important is None or a.num_groups != 2))
        )
        if obj == "target-sft":
            loss, logp = self._target_sft(model, inputs, hidden, logits, mask, t, num_items)
        elif use_fused:
            h = hidden[mask]
            loss, logp = H.fused_linear_loss(
                h, self._lm_head_weight(model), t, FUSED_OBJECTIVES[obj], important=important if obj == "sft-go" else None, lam=lam,
                P=a.infosft_p, num_items=num_items, chunk_size=a.head_chunk_size,
            )
        else:
            if logits is not None:
                logp = torch.log_softmax(logits[mask].float(), dim=-1).gather(-1, t[:, None]).squeeze(-1)
            else:
                logp = H.token_logp(hidden[mask], self._lm_head_weight(model), t, chunk_size=a.head_chunk_size)
            if obj == "rho1":
                # The group that is logged is the kept set (top keep_ratio by excess loss across the batch).
                important = O.rho1_select(logp.detach(), torch.ones_like(t, dtype=torch.bool), ref_logp, a.keep_ratio)
            elif important is None and ref_logp is not None:
                # excess loss = current CE - reference CE = ref_logp - logp; regrouped every step from the current loss.
                full = torch.zeros(mask.shape, dtype=logp.dtype, device=logp.device)
                full[mask] = ref_logp - logp.detach()
                important = percentile_groups_torch(full, mask, a.percentile, scope=a.group_scope)[mask]
            loss = self._loss_from_logp(obj, logp, t, important, ref_logp, scores, mask, lam, num_items)

        if a.average_tokens_across_devices and a.world_size > 1 and num_items_in_batch is not None:
            # num_items is the global count and DDP averages gradients over ranks: undo the average.
            loss = loss * a.world_size
        self._accumulate(logp.detach(), important, lam, n_local)
        return (loss, None) if return_outputs else loss

    def _loss_from_logp(self, obj, logp, t, important, ref_logp, scores, mask, lam, num_items):
        a = self.args
        m = torch.ones_like(t, dtype=torch.bool)
        if obj == "sft":
            return O.sft(logp, m, num_items)
        if obj == "dft":
            return O.dft(logp, m, num_items)
        if obj == "infosft":
            return O.infosft(logp, m, a.infosft_p, num_items)
        if obj == "rho1":
            if ref_logp is None:
                raise RuntimeError("rho1 needs reference log-probs (ref_logp column); they are computed before training")
            return O.rho1(logp, m, ref_logp, a.keep_ratio, num_items)
        if obj in ("sft-go", "sft-go-dro") and (a.num_groups > 2 or obj == "sft-go-dro"):
            if scores is None:
                raise RuntimeError(f"{obj} needs importance scores")
            group_ids = O.quantile_group_ids(scores, mask, a.num_groups)[mask]
            if obj == "sft-go":
                return O.sft_go_multi(logp, m, group_ids, a.num_groups, lam, num_items)
            loss = O.group_dro_loss(logp, m, group_ids, self.dro.q, lam, num_items)
            with torch.no_grad():
                sums, counts = O.group_sums(logp, m, group_ids, a.num_groups)
                if a.world_size > 1:  # every rank must apply the same update to q, from the global group losses
                    sums = self.accelerator.reduce(sums.contiguous(), reduction="sum")
                    counts = self.accelerator.reduce(counts.contiguous(), reduction="sum")
                means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
                self.dro.step(means, counts)
            return loss
        if obj == "sft-go":
            if important is None:
                raise RuntimeError("sft-go needs a grouping: set --scorer")
            return O.sft_go(logp, m, important, lam, num_items)
        raise ValueError(f"unknown objective {obj!r}")

    def _target_sft(self, model, inputs, hidden, logits, mask, t, num_items):
        a = self.args
        ref_hidden = ref_weight = None
        if a.target_residual == "reference":
            if self.ref_model is None:
                raise RuntimeError("target_residual=reference needs a reference model")
            with torch.no_grad():
                out = self.ref_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                     use_cache=False, output_hidden_states=True, logits_to_keep=1)
                ref_hidden = out.hidden_states[-1][:, :-1][mask]
                ref_weight = self.ref_model.get_output_embeddings().weight
        if logits is not None:
            lg = logits[mask].float()
            ref_logits = ref_hidden.float() @ ref_weight.float().T if ref_hidden is not None else None
            loss = O.target_sft(lg, t, torch.ones_like(t, dtype=torch.bool), a.gamma_value, a.target_residual,
                                a.target_topk, ref_logits, num_items)
            logp = torch.log_softmax(lg.detach(), -1).gather(-1, t[:, None]).squeeze(-1)
            return loss, logp
        h = hidden[mask]
        W = self._lm_head_weight(model)
        loss = H.chunked_target_sft(h, W, t, gamma=a.gamma_value, residual=a.target_residual, topk=a.target_topk,
                                    ref_hidden=ref_hidden, ref_weight=ref_weight, num_items=num_items,
                                    chunk_size=a.head_chunk_size)
        with torch.no_grad():
            logp = H.token_logp(h.detach(), W.detach(), t, chunk_size=a.head_chunk_size)
        return loss, logp

    # ------------------------------------------------------------------------------------------------ metrics

    @torch.no_grad()
    def _accumulate(self, logp, important, lam, n_local):
        ce = -logp.float()
        d = self._metric_sums
        vals = {"ce_sum": ce.sum(), "n": torch.tensor(float(ce.numel()), device=ce.device)}
        if important is not None:
            imp = important.bool()
            vals["imp_sum"] = ce[imp].sum()
            vals["imp_n"] = imp.sum().float()
            vals["unimp_sum"] = ce[~imp].sum()
            vals["unimp_n"] = (~imp).sum().float()
        p = logp.float().exp()
        a = self.args
        if a.objective == "dft":
            vals["w_sum"] = O.dft_weights(logp).sum()
        elif a.objective == "infosft":
            vals["w_sum"] = O.infosft_weights(logp, a.infosft_p).sum()
        vals["p_sum"] = p.sum()
        for k, v in vals.items():
            d[k] = d.get(k, 0) + v.detach().float()
        self._last_lam = lam
        self._tokens = self._tokens.to(n_local.device) + n_local.detach()  # no host sync per step

    @property
    def tokens_seen(self) -> int:
        """Supervised tokens this process trained on (this run, not counting steps before a resume)."""
        return int(self._tokens)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs and self._metric_sums:
            keys = sorted(self._metric_sums)
            vec = torch.stack([torch.as_tensor(self._metric_sums[k], device=self.args.device).float().reshape(()) for k in keys])
            if self.args.world_size > 1:
                vec = self.accelerator.reduce(vec, reduction="sum")
            s = dict(zip(keys, vec.tolist()))
            n = max(s["n"], 1.0)
            logs["loss_ce"] = s["ce_sum"] / n
            logs["mean_p"] = s["p_sum"] / n
            if "imp_n" in s:
                logs["loss_important"] = s["imp_sum"] / s["imp_n"] if s["imp_n"] > 0 else float("nan")
                logs["loss_unimportant"] = s["unimp_sum"] / s["unimp_n"] if s["unimp_n"] > 0 else float("nan")
                logs["frac_important"] = s["imp_n"] / n
            if "w_sum" in s:
                logs["mean_weight"] = s["w_sum"] / n
            if self.args.objective == "rho1" and "imp_n" in s:
                logs["frac_kept"] = s["imp_n"] / n
            logs["lam"] = self._last_lam
            logs["tokens"] = int(s["n"])
            if self.dro is not None:
                for g, q in enumerate(self.dro.q.tolist()):
                    logs[f"dro_q{g}"] = q
            self._metric_sums = {}
        super().log(logs, start_time)


class MetricsJsonl(TrainerCallback):
    """Appends one JSON object per logging step to ``metrics.jsonl``.

    After a resume, the first record written drops any older records at or after its step, so the file never holds
    duplicates (the run it resumes from may have logged past its last checkpoint).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._first = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
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
    """Saves the small state that lives outside the model/optimizer (Group-DRO weights) in each checkpoint."""

    def __init__(self, trainer: SFTGoTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.trainer.dro is None:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.exists():
            s = self.trainer.dro.state_dict()
            (ckpt / STATE_FILE).write_text(json.dumps({"dro_q": s["q"].tolist(), "dro_eta": s["eta_q"]}))


def load_sftgo_state(trainer: SFTGoTrainer, checkpoint: str | None) -> None:
    if checkpoint is None or trainer.dro is None:
        return
    f = Path(checkpoint) / STATE_FILE
    if f.exists():
        s = json.loads(f.read_text())
        trainer.dro.load_state_dict({"q": torch.tensor(s["dro_q"]), "eta_q": s["dro_eta"], "num_groups": len(s["dro_q"])})


def _jsonable(v):
    if torch.is_tensor(v):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else v
    return v
