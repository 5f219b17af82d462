"""``compute_loss_func(name, **settings)``: an sftgo objective as a transformers / TRL ``compute_loss_func``.

For people who keep their own ``transformers.Trainer`` or ``trl.SFTTrainer`` and only want to swap the loss::

    trainer = SFTTrainer(model, args=SFTConfig(...), train_dataset=data,
                         compute_loss_func=compute_loss_func("infosft", infosft_p=0.93))

The callable has the signature transformers calls, ``(outputs, labels, num_items_in_batch=None)``, and runs the same
objective code as ``sftgo train`` (the row of :data:`sftgo.objectives.OBJECTIVES`, on the same flat token batch) with
the naive head over ``outputs.logits``. It returns ``sum_n c_n * (-log p_n) / num_items_in_batch``: transformers counts
``num_items_in_batch`` over the whole optimizer step (every micro-batch and, with ``average_tokens_across_devices``,
every process), does not divide a ``compute_loss_func`` loss by the accumulation steps, and multiplies it by the number
of processes (DDP then averages the gradients back to the step's sum) — checked against transformers 5.25 and TRL 1.16.
So the step's loss is exact per micro-batch for the objectives whose per-token coefficient depends only on the token
itself: ``sft``, ``dft``, ``infosft``, ``eaft`` and ``target-sft`` with a ``uniform``, ``model`` or ``topk`` residual.

Not here: the group objectives (``sft-go``, ``sft-go-dro``, ``rho1``) need per-token columns (importance, reference
log-probs) and statistics of the whole optimizer step, which a ``compute_loss_func`` never sees — use
:class:`sftgo.integrations.trl.SFTGoSFTTrainer` or :class:`sftgo.trainer.SFTGoTrainer`; ``target-sft`` with
``target_residual="reference"`` and ``asft`` need a reference model (the same trainers).
"""

from __future__ import annotations

import difflib
from dataclasses import fields

__all__ = ["compute_loss_func"]


def compute_loss_func(name: str, **settings):
    """The objective ``name`` (a key of :data:`sftgo.objectives.OBJECTIVES`) as ``fn(outputs, labels,
    num_items_in_batch=None) -> loss``. ``settings`` use the names of ``sftgo train``'s flags (``infosft_p``,
    ``target_gamma``, ``target_residual``, ``target_topk``, ...) and are checked as the config checks them.

    outputs: anything with ``.logits`` ``[B, T, V]`` (or ``outputs["logits"]``); labels: ``[B, T]`` long, -100 where no
    loss is taken, not shifted (position t's logits predict ``labels[:, t + 1]``, as transformers' causal-LM loss).
    Without ``num_items_in_batch`` the loss is the mean over this batch's supervised tokens."""
    from .config import ConfigError, ObjectiveArgs
    from .objectives import OBJECTIVES
    from .token_head import LogitsHead
    from .tokens import TokenBatch

    valid = {f.name for f in fields(ObjectiveArgs)} - {"objective"}
    for k in settings:
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=3)
            raise ConfigError(f"compute_loss_func: unknown setting {k!r}"
                              + (f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(sorted(valid))}"))
    args = ObjectiveArgs(objective=name, **settings)
    args.check_objective()
    objective = OBJECTIVES[name](args)
    if objective.columns(args) or objective.step_stats:
        cols = ", ".join(objective.columns(args)) or "the optimizer step's group statistics"
        raise ConfigError(f"compute_loss_func: objective {name!r} needs {cols}, which a compute_loss_func does not "
                          "receive; use sftgo.integrations.trl.SFTGoSFTTrainer (TRL) or sftgo.trainer.SFTGoTrainer")
    if objective.needs_ref_model(args):
        raise ConfigError(f"compute_loss_func: objective {name!r} with these settings runs a reference model beside "
                          "the trained one (asft, target_residual='reference'), which a compute_loss_func does not have; "
                          "use SFTGoSFTTrainer or SFTGoTrainer with ref_model_name_or_path (target-sft: or a uniform, "
                          "model or topk residual here)")
    head = LogitsHead()  # the logits the caller's forward already built: no model call here

    def loss_func(outputs, labels, num_items_in_batch=None):
        import torch  # here, not at the top: sftgo.objectives re-exports this module and stays torch-free to import

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        if labels is None:
            raise ValueError("compute_loss_func: labels is None; the Trainer passes the batch's labels (a 'labels' column)")
        tokens = TokenBatch.from_inputs({"labels": labels.to(logits.device)}, names=())
        x = tokens.select(logits[:, :-1])  # [N, V] logits rows of the supervised tokens (position t predicts t + 1)
        t = tokens.targets
        if objective.chunk_loss:  # Target-SFT: the loss over whole logits rows
            loss_sum = head.chunk_loss(None, x, t, objective.chunk_fn(None))
        else:
            coef, _ = objective.coefficient(tokens, 0.0, {})
            loss_sum, _ = head.weighted_nll(None, x, t, coef)
        if num_items_in_batch is None:
            K = torch.tensor(float(max(len(tokens), 1)), device=logits.device)
        else:
            K = torch.as_tensor(num_items_in_batch, device=logits.device).float().clamp(min=1)
        return loss_sum / K

    loss_func.__name__ = f"sftgo_{name.replace('-', '_')}_loss"
    loss_func.__qualname__ = loss_func.__name__
    return loss_func
