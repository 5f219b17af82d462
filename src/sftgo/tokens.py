"""TokenBatch: the supervised tokens of a micro-batch as flat ``[N]`` columns.

This is the only code that knows how a batch lays out its tokens. Everything downstream (the per-token head, the
objectives, grouping, metrics) sees ``N`` supervised tokens, each with its target id, the example it belongs to, and
its per-token columns (importance, reference log-probs, ...), whatever the layout:

* padded rows (the default collator): ``labels [B, T]`` with ``-100`` at prompt and padding positions; the example of
  a token is its row;
* packed rows (several examples per row) or padding-free batches: the collator's ``example_index [B, T]`` column (the
  example's index in the micro-batch at each position, ``sftgo.data.Collator``) says which example a token belongs to;
  per-example grouping (SFT-GO's per-sequence percentile) then follows the examples, not the rows.

Position ``t`` of the model's output predicts token ``t + 1``, so targets and columns are read at ``[:, 1:]`` and the
features (hidden states or logits) at ``[:, :-1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .data import IGNORE_INDEX

__all__ = ["TokenBatch"]


@dataclass
class TokenBatch:
    targets: torch.Tensor  # [N] long: the token each selected position predicts
    example: torch.Tensor  # [N] long: the example each token belongs to (segments for per-example grouping)
    rows: torch.Tensor  # [N] long: flat index into the [B * (T-1)] shifted positions (selects features)
    columns: dict[str, torch.Tensor] = field(default_factory=dict)  # [N] float per-token columns

    @classmethod
    def from_inputs(cls, inputs: dict, names=None) -> "TokenBatch":
        """names: the per-token columns to carry (default: every other ``[B, T]`` float tensor of the batch)."""
        labels = inputs["labels"]
        shifted = labels[:, 1:]
        width = shifted.shape[1]
        rows = (shifted != IGNORE_INDEX).reshape(-1).nonzero().squeeze(1)
        if "example_index" in inputs:  # the collator's column (packed / padding-free rows; the row when padded)
            example = inputs["example_index"][:, 1:].reshape(-1).index_select(0, rows).long()
            # Canonical order, whatever the layout: by example, then position (a stable sort keeps positions in order).
            # Packing reorders examples into rows; without this, batch-scope ties (Rho-1's top-k, --group_scope batch)
            # would be broken differently in a packed batch than in the padded one.
            order = torch.sort(example, stable=True).indices
            rows, example = rows.index_select(0, order), example.index_select(0, order)
        else:
            example = torch.div(rows, max(width, 1), rounding_mode="floor")
        targets = shifted.reshape(-1).index_select(0, rows)
        if names is None:
            names = [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                     and v.shape == labels.shape]
        columns = {k: inputs[k][:, 1:].reshape(-1).index_select(0, rows) for k in names if k in inputs}
        return cls(targets, example, rows, columns)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def select(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, T-1, F]`` features (hidden states or logits, position t predicting t + 1) -> ``[N, F]``."""
        return features.reshape(-1, features.shape[-1]).index_select(0, self.rows)
