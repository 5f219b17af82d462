"""``compute_loss_func(name, **settings)``: an sftgo objective as a transformers / TRL ``compute_loss_func``
(:mod:`sftgo.objectives.loss_func`; also ``from sftgo.objectives import compute_loss_func``)."""

from __future__ import annotations

from .objectives import compute_loss_func

__all__ = ["compute_loss_func"]
