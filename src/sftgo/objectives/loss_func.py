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


def make_loss_func(name: str, objective):
    """``fn(outputs, labels, num_items_in_batch=None) -> loss`` of a checked objective instance (the validation of the
    name and the settings: :func:`sftgo.objectives.compute_loss_func`)."""
    from ..token_head import LogitsHead
    from ..tokens import TokenBatch

    head = LogitsHead()  # the logits the caller's forward already built: no model call here

    def loss_func(outputs, labels, num_items_in_batch=None):
        import torch  # here, not at the top: sftgo.objectives imports this module and stays torch-free

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
