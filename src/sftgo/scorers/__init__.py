"""Token importance scorers: a float importance g for every supervised (response) token.

SFT-GO (arXiv 2506.15021) groups tokens by importance from three kinds of signal:
statistics (``tfidf``, ``frequency``), semantics (``llmlingua2``) and loss (Rho-1 excess loss,
:mod:`sftgo.scorers.reference`). ``random`` is the control.

Scorer signature (also the one for your own scorer)::

    fn(token_ids: list[list[int]], *, texts: list[str], offsets: list[np.ndarray], **settings)
        -> list[np.ndarray]

``token_ids[i]`` are example i's supervised token ids in order, ``texts[i]`` its rendered text and
``offsets[i]`` an int array [n_i, 2] of the character spans of those tokens in ``texts[i]``.
The result has one float array of length n_i per example (higher = more important). Scorers that do
not need the text accept and ignore ``texts``/``offsets`` (``**_``).

Use your own scorer by name ``"my_module:my_function"`` (imported with :func:`importlib.import_module`;
``my_module`` must be importable, e.g. on ``PYTHONPATH``)::

    scores = resolve_scorer("my_module:my_function")(token_ids, texts=texts, offsets=offsets)

``"reference"`` is special and not in :data:`SCORERS`: it needs a frozen reference model and the full
``input_ids``/``labels``; see :func:`sftgo.pipeline.cached_token_logp` (``sftgo train`` and ``sftgo score`` use it),
:func:`sftgo.scorers.reference.reference_token_logp` and :func:`sftgo.scorers.reference.excess_loss`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from sftgo.scorers.llmlingua2 import align_word_probs_to_tokens, llmlingua2
from sftgo.scorers.reference import excess_loss, reference_token_logp
from sftgo.scorers.statistical import frequency, random, tfidf

__all__ = [
    "SCORERS",
    "resolve_scorer",
    "tfidf",
    "frequency",
    "random",
    "llmlingua2",
    "align_word_probs_to_tokens",
    "reference_token_logp",
    "excess_loss",
]

SCORERS: dict[str, Callable] = {
    "tfidf": tfidf,
    "frequency": frequency,
    "random": random,
    "llmlingua2": llmlingua2,
}


def resolve_scorer(name: str | Callable) -> Callable:
    """A scorer by name: a key of :data:`SCORERS`, ``"module:function"``, or a callable (returned as is)."""
    if callable(name):
        return name
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"scorer must be a name or a callable, got {name!r}")
    name = name.strip()
    if name in SCORERS:
        return SCORERS[name]
    valid = ", ".join(sorted(SCORERS))
    if name == "reference":
        raise ValueError(
            "scorer 'reference' needs a reference model: pass --ref_model_name_or_path to `sftgo train` or "
            "`sftgo score` (in Python: sftgo.pipeline.cached_token_logp, or sftgo.scorers.reference.reference_token_logp)"
        )
    if ":" not in name:
        raise ValueError(f"unknown scorer {name!r}; valid names: {valid}, or 'my_module:my_function'")
    module_name, _, fn_name = name.partition(":")
    if not module_name or not fn_name:
        raise ValueError(f"scorer {name!r}: use the form 'my_module:my_function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"scorer {name!r}: cannot import module {module_name!r} ({e}); is it on PYTHONPATH?") from e
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"scorer {name!r}: module {module_name!r} has no function {fn_name!r}")
    return fn
