"""The token weightings ``prift_prob`` and ``prift_mass`` (PriFT, arXiv 2606.09396; the authors' code:
wang-kee/PriFT, ``verl/verl/trainer/prift_weights.py``): static weights from a frozen reference model,

    prift_prob   t_n = p_ref(y_n)
    prift_mass   t_n = 1[lower_n + p_ref(y_n) >= tau],   lower_n = sum_v p_ref(v) 1[p_ref(v) < p_ref(y_n)]

(``lower_n``: the reference's probability of the tokens strictly less likely than the label; tokens tied with it are
not counted; ``tau``: ``--prift_threshold``, 0.5 as in the authors' config). Neither depends on the trained model, so
both come from the one reference pass before training (:func:`sftgo.pipeline.cached_reference`, the pass Rho-1's
``ref_logp`` comes from: sharded over the processes, through the chunked head, cached), as the per-token columns
``ref_logp`` and ``ref_lower_mass``; the threshold is applied here, at training time, so changing it recomputes
nothing. The reference is ``--ref_model_name_or_path`` (``initial``: the model before training, the authors' default).

The authors multiply each token's CE by ``t_n`` and divide by the token count (plain SFT's normalizer): in sftgo's
formula that is ``--objective sft --token_weight prift_prob|prift_mass``; any aggregator takes them as it takes every
token weighting, and a static ``t_n`` is no data weight (groups' counts stay the sums of the data weights). Measured
against the authors' functions: benchmarks/README.md, "PriFT" (dev/prift_peer_check.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..declare import setting, unit_interval
from .none import NoWeighting

if TYPE_CHECKING:
    import torch


@dataclass
class PriFTSettings:
    prift_threshold: float = setting(
        0.5, help="PriFT mass (--token_weight prift_mass): a token is trained on when the reference's probability of "
                  "it plus that of every less likely token reaches this threshold tau (in [0, 1]; 0.5 is the "
                  "authors').", check=unit_interval, added=True)


def prift_prob_weights(ref_logp: torch.Tensor) -> torch.Tensor:
    """PriFT prob: ``t = p_ref(y) = exp(ref_logp)``. ref_logp: ``[...]`` the reference's log p of the labels."""
    return ref_logp.detach().exp()


def prift_mass_weights(ref_logp: torch.Tensor, lower_mass: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """PriFT mass: ``t = 1[lower_mass + p_ref(y) >= threshold]`` (0 or 1, in ``ref_logp``'s dtype).

    ref_logp, lower_mass: ``[...]`` the reference's log p of the labels and the probability of the tokens strictly
    less likely than each label (:func:`sftgo.scorers.reference.reference_token_logp` with ``lower_mass=True``)."""
    return ((lower_mass.detach() + ref_logp.detach().exp()) >= float(threshold)).to(ref_logp.dtype)


class PriFTProbWeighting(NoWeighting):
    """PriFT prob: ``t_n = p_ref(y_n)``, static (:func:`prift_prob_weights` of the ``ref_logp`` column)."""

    shared = ("ref_model_name_or_path",)
    columns = ("ref_logp",)

    def fns(self):
        return {"of_token": lambda lp, row, columns: prift_prob_weights(columns["ref_logp"])}


class PriFTMassWeighting(NoWeighting):
    """PriFT mass: ``t_n = 1[lower_n + p_ref(y_n) >= tau]``, static (:func:`prift_mass_weights` of the ``ref_logp``
    and ``ref_lower_mass`` columns)."""

    Settings = PriFTSettings
    shared = ("ref_model_name_or_path",)
    columns = ("ref_logp", "ref_lower_mass")

    def fns(self):
        tau = self.args.prift_threshold
        return {"of_token": lambda lp, row, columns: prift_mass_weights(columns["ref_logp"], columns["ref_lower_mass"],
                                                                        tau)}
