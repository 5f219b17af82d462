"""sftgo: token-aware supervised fine-tuning (SFT-GO, Rho-1, DFT, InfoSFT, Target-SFT).

Submodules: ``objectives`` (each objective's declaration and pure functions), ``token_head`` (chunked / fused per-token log-probs),
``scorers`` (token importance), ``grouping``, ``data``, ``models``, ``config``, ``trainer``, ``pipeline``, ``report``.
Attributes below are imported lazily so that ``sftgo --help`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SFTGoConfig": "sftgo.config",
    "SFTGoTrainer": "sftgo.trainer",
    "run_training": "sftgo.pipeline",
    "load_examples": "sftgo.data",
    "tokenize_examples": "sftgo.data",
    "load_model": "sftgo.models",
    "load_tokenizer": "sftgo.models",
    "SCORERS": "sftgo.scorers",
    "percentile_groups": "sftgo.grouping",
    "percentile_groups_flat": "sftgo.grouping",
    "token_logp": "sftgo.token_head",
    "weighted_nll": "sftgo.token_head",
    "OBJECTIVES": "sftgo.objectives",
    "dft_weights": "sftgo.objectives",
    "infosft_weights": "sftgo.objectives",
    "lambda_schedule": "sftgo.objectives",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sftgo' has no attribute {name!r}")
