"""EAFT: sftgo's training path against the peers' published formulas, on the same tensors; prints the max differences.

The peers' formulas are re-written here from their published code (read, not copied):

* LLaMA-Factory ``use_eaft_loss`` (``src/llamafactory/train/trainer_utils.py``, ``_eaft_cross_entropy``; the EAFT
  authors' merge): top-20 logits (k fixed), an exact log-softmax over them, entropy divided by the constant 3.0,
  to the power alpha, no gradient through the weight; loss = sum(w * CE) / num_items_in_batch.
* axolotl ``eaft_loss`` (``src/axolotl/monkeypatch/loss/eaft.py``): top-min(k, V) logits, softmax, entropy with an
  epsilon inside the log, ``-sum q log(q + 1e-10)``, not normalized, to the power alpha; same reduction.

sftgo: ``--objective eaft`` through the fused per-token head (``RowCoef`` of ``sftgo.objectives.eaft_weights``, top-k
per chunk, no [N, V] logits), ``--eaft_normalize true`` (divided by ln k) or ``false``.

    PYTHONPATH=src python dev/eaft_peer_check.py            # N=512 tokens, H=64, V=32000, chunk 128
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F


def llamafactory_weights(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    top = logits.topk(20, dim=-1).values
    logq = top - torch.logsumexp(top, dim=-1, keepdim=True)
    H = -(logq.exp() * logq).sum(-1)
    return (H / 3.0).pow(alpha)


def axolotl_weights(logits: torch.Tensor, alpha: float, k: int) -> torch.Tensor:
    top = logits.float().topk(min(k, logits.shape[-1]), dim=-1).values
    q = F.softmax(top, dim=-1)
    H = -(q * torch.log(q + 1e-10)).sum(-1)
    return H.pow(alpha)


def _rel(ours: torch.Tensor, peer: torch.Tensor) -> float:
    """Max relative difference over the tokens with weight > 0.01 (near-one-hot rows: fp32 rounding of an entropy ~1e-6 dominates, more so under alpha < 1)."""
    big = peer.abs() > 1e-2
    return ((ours - peer).abs()[big] / peer.abs()[big]).max().item()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--h", type=int, default=64)
    p.add_argument("--v", type=int, default=32000)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from sftgo.objectives import eaft_weights
    from sftgo.token_head import RowCoef, weighted_nll_rows

    g = torch.Generator().manual_seed(args.seed)
    hidden = torch.randn(args.n, args.h, generator=g, dtype=torch.float64).float()
    # rows from nearly uniform to nearly one-hot: a per-row temperature spreads the top-k entropies over [0, ln k]
    hidden *= torch.logspace(-1.5, 1.0, args.n, dtype=torch.float32)[torch.randperm(args.n, generator=g)][:, None]
    weight = torch.randn(args.v, args.h, generator=g)
    targets = torch.randint(0, args.v, (args.n,), generator=g)
    logits = hidden @ weight.T  # [N, V] for the peers' formulas (they take full logits)
    ce = F.cross_entropy(logits, targets, reduction="none")
    n = args.n

    def ours(k, alpha, normalize):
        coef = RowCoef(lambda z: eaft_weights(z, k, alpha, normalize))
        stats: dict = {}
        loss, _ = weighted_nll_rows(hidden.requires_grad_(), weight, targets, coef, args.chunk, stats=stats)
        return loss.item() / n, stats["coef"]

    print(f"EAFT peer check: N={n} H={args.h} V={args.v} chunk={args.chunk}, fp32, top-k entropies from "
          f"{float(eaft_weights(logits, 20, 1.0, True).min()):.3f} to {float(eaft_weights(logits, 20, 1.0, True).max()):.3f}"
          " (normalized, k=20)")
    print(f"{'comparison':<52} {'max |dw|':>10} {'max rel dw':>11} {'|dloss|':>10} {'loss ours':>10}")
    for alpha in (1.0, 0.5, 2.0):
        lf = llamafactory_weights(logits, alpha)
        loss_lf = (lf * ce).sum().item() / n
        lo, w = ours(20, alpha, True)
        rel = _rel(w, lf)
        print(f"{f'LLaMA-Factory (k=20, /3.0) vs sftgo normalized a={alpha}':<52} {(w - lf).abs().max().item():10.2e} "
              f"{rel:11.2e} {abs(lo - loss_lf):10.2e} {lo:10.5f}")
    for k, alpha in ((20, 1.0), (5, 1.0), (20, 2.0)):
        ax = axolotl_weights(logits, alpha, k)
        loss_ax = (ax * ce).sum().item() / n
        lo, w = ours(k, alpha, False)
        rel = _rel(w, ax)
        print(f"{f'axolotl (k={k}, eps 1e-10) vs sftgo raw a={alpha}':<52} {(w - ax).abs().max().item():10.2e} "
              f"{rel:11.2e} {abs(lo - loss_ax):10.2e} {lo:10.5f}")
        if k == 20 and alpha == 1.0:
            lo_n, _ = ours(20, 1.0, True)
            print(f"{'   axolotl / sftgo normalized loss (k=20, a=1; ln 20 = %.4f)' % math.log(20):<52} "
                  f"{loss_ax / lo_n:10.4f}")


if __name__ == "__main__":
    main()
