"""ASFT, anchored SFT: DFT anchored to a frozen reference model by a KL term (a loss over whole logits rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Objective
from .declare import finite_nonnegative, one_of, setting
from .weightings.dft import dft_weights

if TYPE_CHECKING:
    import torch

# ASFT's KL anchor: forward = KL(reference || model), what the authors' code and LLaMA-Factory compute; reverse =
# KL(model || reference), what the paper's Eq. 6 and Section 5.3 write (see the ASFT class).
ASFT_KL = ("forward", "reverse")


@dataclass
class ASFTSettings:
    asft_alpha: float = setting(
        0.1, help="ASFT: weight of the KL anchor to the reference model (>= 0; 0 = DFT; 0.1 is LLaMA-Factory's and "
                  "the authors' code's default, the paper's runs use 0.05). Needs --ref_model_name_or_path "
                  "(initial = the model before training).",
        check=finite_nonnegative("0.1 is the default; 0 gives DFT"), added=True)
    asft_kl: str = setting(
        "forward", help="ASFT: KL direction, forward = KL(reference || model) as the authors' code and LLaMA-Factory "
                        "compute, reverse = KL(model || reference) as the paper's Eq. 6 writes.",
        check=one_of(ASFT_KL), added=True)


def asft_chunk_loss(z: torch.Tensor, y: torch.Tensor, ref_logits: torch.Tensor, *, alpha: float,
                    kl: str = "forward", row_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ASFT over rows of logits: ``(sum_rows w [-sg(p_y) log p_y + alpha * KL_row], KL_row [c] detached)``, ``w`` the
    rows' data weights (``row_weight`` ``[c]``; None: 1).

    ``p = softmax(z)`` (the trained model), ``r = softmax(ref_logits)`` (the frozen reference, never differentiated);
    ``KL_row`` over the whole vocabulary: ``forward`` ``sum_v r_v (log r_v - log p_v)``, ``reverse``
    ``sum_v p_v (log p_v - log r_v)``. The first term is DFT's; ``alpha = 0`` gives DFT. An unnormalized sum (the
    trainer divides by the step's count K). z, ref_logits: ``[c, V]`` (upcast from half precision); y: ``[c]`` long.
    Called per chunk by the token head (no ``[N, V]`` tensor)."""
    import torch

    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    logq = torch.log_softmax(z, dim=-1)  # [c, V]: one chunk at a time
    logq_y = logq.gather(1, y[:, None]).squeeze(1)
    logr = torch.log_softmax(ref_logits.detach().to(logq.dtype), dim=-1)
    if kl == "forward":
        kl_rows = (logr.exp() * (logr - logq)).sum(dim=-1)
    elif kl == "reverse":
        kl_rows = (logq.exp() * (logq - logr)).sum(dim=-1)
    else:
        raise ValueError(f"kl must be one of {ASFT_KL}; got {kl!r}")
    per_row = -logq_y.detach().exp() * logq_y + float(alpha) * kl_rows
    loss = (per_row if row_weight is None else per_row * row_weight.to(per_row.dtype)).sum()
    return loss, kl_rows.detach()


class ASFT(Objective):
    """Anchored SFT (Zhu et al. 2025, arXiv 2509.23753): DFT anchored to a frozen reference model by a KL term,
    ``loss_n = -sg(p_n) log p_n + alpha * KL_n`` (:func:`asft_chunk_loss`), ``KL_n`` over the whole vocabulary at
    token n's position, between the trained model and the reference (``--ref_model_name_or_path``; ``initial`` = the
    model before training, the paper's "pretrained model"). Gradient: DFT's plus ``alpha (p - r)`` per row (forward
    KL). The reference runs beside the trained model every step; the head computes the loss chunk by chunk from the
    reference's hidden rows (its logits one chunk at a time, no ``[N, V]`` tensor). Logs ``kl`` (mean KL_n) and
    ``mean_weight`` (mean sg(p_n)).

    Paper vs peers (dev/asft_peer_check.py runs the peers' own loss code; measured differences in
    benchmarks/README.md): the paper's Eq. 6 is ``L_DFT + lambda E_s[KL(pi_theta || pi_base)]`` and its Section 5.3
    says ASFT uses this *reverse* KL (policy || base) and that it beats the forward one; the authors' code
    (zhuchichi56/ASFT ``train_v2.py``, mode ``asft``, knob ``kl_weight``) and LLaMA-Factory's ``use_asft_loss``
    (hiyouga/LlamaFactory #10174, ``_kl_divergence``, knob ``asft_alpha``, merged by an author) both compute
    ``F.kl_div(log_softmax(policy), softmax(ref))``, the *forward* KL(ref || policy) (asked in zhuchichi56/ASFT issue
    #3). sftgo: ``--asft_kl forward`` (default: the code the results came from and what ``asft_alpha`` means in
    LLaMA-Factory) or ``reverse`` (the paper's formula). Coefficient: the paper uses lambda = 0.05 in its main runs and
    finds ~0.1 best in its ablation; both peers default to 0.1 (sftgo's ``--asft_alpha`` default). Normalization: the
    peers take each micro-batch's own mean over its supervised tokens (DFT mean + alpha KL mean); sftgo divides the
    step's sum by its token count K over all micro-batches and processes (equal for one micro-batch on one process);
    with data weights each row's loss is multiplied by its weight w and the step's sum divided by W = sum w.
    The peers feed the reference ``input_ids`` / ``attention_mask`` only; sftgo gives it the same inputs as the
    trained model (packed rows keep their position ids).
    """

    Settings = ASFTSettings
    shared = ("ref_model_name_or_path",)
    metrics = ("mean_weight", "kl")
    row_metrics = ("kl",)  # per-token values the chunk loss reports, logged as their mean
    chunk_loss = True
    row_weights = True  # data weights multiply each row's DFT + alpha KL (normalizer W = sum w)

    @classmethod
    def needs_ref_model(cls, args):
        return True

    @classmethod
    def check_args(cls, args):
        if not args.ref_model_name_or_path:
            raise ValueError("ref_model_name_or_path: objective=asft anchors the model to a frozen reference; pass "
                             "--ref_model_name_or_path initial (the model before training, the paper's choice) or a "
                             "model folder / Hub id")

    def chunk_fn(self, ref_weight: torch.Tensor | None):
        """``fn(logits [c, V], targets [c], reference hidden states [c, H_ref], data weights [c] | None) -> (chunk
        loss, {"kl": [c]})``."""
        import torch

        alpha, kl = float(self.args.asft_alpha), self.args.asft_kl

        def fn(z, y, rh, w=None):
            with torch.no_grad():
                ref = rh.to(ref_weight.dtype) @ ref_weight.T  # [c, V] reference logits, never differentiated
            loss, kl_rows = asft_chunk_loss(z, y, ref, alpha=alpha, kl=kl, row_weight=w)
            return loss, {"kl": kl_rows}

        return fn

    def metric_weight(self, logp, stats):
        return dft_weights(logp)
