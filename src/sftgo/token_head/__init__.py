"""Per-token log-probabilities from final hidden states without the full ``[N, V]`` logits.

The naive head ``log_softmax(hidden @ weight.T).gather(targets)`` materializes ``[N, V]`` fp32 logits
(at V = 128K a 4K-token sequence is 2 GB) plus, under autograd, the saved log-softmax output and the
``[N, V]`` gradients of both. Everything here works on row chunks of ``chunk_size`` tokens, so at most one
``[chunk, V]`` tile (plus a transient) is alive at a time.

It knows no objective: it computes per-token quantities and leaves the formula to :mod:`sftgo.objectives`.

* :func:`token_logp` -- generic: returns differentiable per-token ``log p`` for any downstream loss. Saves only the
  inputs and one logsumexp per token; the backward recomputes each chunk's logits. 4 GEMMs instead of 3.
* :func:`weighted_nll` -- ``sum_n c_n * (-log p_n)`` with a per-token coefficient ``c_n`` known in the forward
  (a constant, a tensor, a function of the token's own ``p``, or constant per group once the group means are
  known): the gradient is computed in the forward, chunk by chunk (the idea of Liger-Kernel's fused linear
  cross-entropy), so the backward only scales stored gradients. 3 GEMMs, like the naive path. SFT, DFT, InfoSFT,
  SFT-GO, Rho-1 and Group-DRO are all this with different coefficients.
* :func:`chunked_loss` -- a per-chunk loss over the whole logits row (soft targets, as in Target-SFT): each
  chunk's logits under activation checkpointing.
* :class:`LinearHead` / :class:`LogitsHead` -- what the trainer uses: the model forward for the features, the one
  method that reads the LM-head weight, and the three computations above on a micro-batch's supervised rows.

In three parts: :mod:`.kernels` (the chunk loops and their autograd Functions), :mod:`.coefficients` (the per-token
coefficient kinds behind one protocol, :class:`~.coefficients.Coef`), :mod:`.heads` (the checked entries and the
heads). Every name is importable from ``sftgo.token_head`` as before.

Conventions: ``hidden [N, H]`` (or ``[..., H]``, flattened), ``weight [V, H]`` (LM head, no bias),
``targets [N]`` long with ``ignore_index = -100`` marking unsupervised positions; returned ``logp`` is ``0``
there. Losses are unnormalized sums over supervised tokens: the caller divides once by its token count.

Choosing ``chunk_size``: the chunked paths' peak extra memory is about ``chunk * V * 4`` bytes (one fp32 logits
tile) + the gradients ``V * H`` and ``N * H``. At V = 128K a 1024-row tile is 0.5 GB; 512 halves it at no
measurable cost in time on CPU (see benchmarks/README.md).
"""

from ..data import IGNORE_INDEX
from .coefficients import Coef, GroupCoef, RowCoef, TokenCoef, as_coef
from .heads import (LinearHead, LogitsHead, chunked_loss, make_head, naive_token_logp, token_logp, weighted_nll,
                    weighted_nll_rows)
from .kernels import _ChunkedLogp, _FusedNLL, _logp_pass, _Rec, chunked_loss_rows

__all__ = [
    "IGNORE_INDEX",
    "GroupCoef",
    "LinearHead",
    "LogitsHead",
    "RowCoef",
    "TokenCoef",
    "chunked_loss",
    "make_head",
    "naive_token_logp",
    "token_logp",
    "weighted_nll",
]
