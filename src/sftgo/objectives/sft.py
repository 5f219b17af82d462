"""Plain SFT and its shorthands: ``--objective dft|infosft|eaft`` is ``sft`` with that token weighting (a declaration,
not another code path)."""

from __future__ import annotations

from .base import Objective
from .weightings.eaft import EAFTSettings
from .weightings.infosft import InfoSFTSettings


class SFT(Objective):
    """Cross-entropy over response tokens: ``c_n = w_n t_n`` (1 without data weights and ``--token_weight``)."""

    baseline = True


class DFT(SFT):
    """DFT (TRL ``loss_type="dft"``): ``sft`` with ``--token_weight dft``, ``c_n = sg(p_n)``."""

    token_weight = "dft"
    baseline = False
    metrics = ("mean_weight",)


class InfoSFT(SFT):
    """InfoSFT: ``sft`` with ``--token_weight infosft``, ``c_n = sg(p) relu(1 - sg(logit p) / logit P)``."""

    token_weight = "infosft"
    Settings = InfoSFTSettings
    baseline = False
    metrics = ("mean_weight",)


class EAFT(SFT):
    """EAFT, entropy-adaptive fine-tuning (Diao et al. 2026, arXiv 2601.02151): ``sft`` with ``--token_weight eaft``,
    ``c_n = sg(H_k(z_n) / log k) ** alpha``, ``H_k`` the entropy of the softmax over the token's ``k`` largest logits
    (:func:`eaft_weights`). Tokens the model is sure of (low entropy), right or wrong ("confident conflicts"), get little
    gradient; uncertain ones learn as in SFT. Computed in the fused head from each chunk's logits (top-k per chunk, no
    ``[N, V]`` tensor).

    Paper vs peers (measured differences in benchmarks/README.md, from dev/eaft_peer_check.py): the paper (and the
    PRIS-CV/EAFT README) multiplies the CE by a *normalized* top-K entropy with K = 20, no gradient through it.
    LLaMA-Factory's ``use_eaft_loss`` (``_eaft_cross_entropy`` in hiyouga/LlamaFactory@38a6312, the authors' merge)
    fixes k = 20 (no setting) and divides by the constant 3.0, not ln 20 = 2.9957: its weights are ours times
    (ln 20 / 3)^alpha, 0.14% smaller per unit of alpha; its log-softmax over the top-k is exact (no epsilon). axolotl's
    ``eaft_loss`` (axolotl-ai-cloud/axolotl@ce4154b, ``eaft_alpha`` / ``eaft_k``, written from the authors' earlier
    fork) does not normalize at all (weights ln k times ours at alpha = 1: a 3x larger loss at k = 20) and puts an
    epsilon inside the log, ``-sum q log(q + 1e-10)`` (differences ~1e-6). sftgo: ``--eaft_normalize true`` (default,
    the paper's normalized entropy, divided by ln k exactly, so any k gives weights in [0, 1]) or ``false`` (axolotl's
    raw entropy, without its epsilon).
    """

    token_weight = "eaft"
    Settings = EAFTSettings
    baseline = False
    metrics = ("mean_weight",)
