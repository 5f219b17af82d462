"""Token importance scorers: a float importance g for every supervised (response) token.

SFT-GO (arXiv 2506.15021) groups tokens by importance from three kinds of signal:
statistics (``tfidf``, ``frequency``), semantics (``llmlingua2``) and loss (Rho-1 excess loss,
:mod:`sftgo.scorers.reference`). ``random`` is the control. ``influence`` (Token Cleaning, arXiv 2502.01968) is the
reference's log p minus the initial model's, fixed before training.

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

Each scorer is declared once, beside its code, as a :class:`~sftgo.scorers.spec.Scorer` (name, the settings that
feed its cache key, whether it reads the text, whether it needs a reference model, the scoring function), and
:data:`SCORERS` lists the declarations (each is called like its function: ``SCORERS["tfidf"](token_ids)``). The rest
of sftgo asks :func:`scorer_spec` instead of comparing names. To add a scorer: a module with its function and its
``Scorer(...)``, and one line in :data:`SCORERS`; its settings' flags (``sftgo score``) and config fields
(:data:`SCORER_SETTINGS`) come from the declaration.

``"reference"`` (Rho-1's excess loss) has no scoring function: it needs a frozen reference model and the full
``input_ids``/``labels``; see :func:`sftgo.pipeline.cached_token_logp` (``sftgo train`` and ``sftgo score`` use it),
:func:`sftgo.scorers.reference.reference_token_logp` and :func:`sftgo.scorers.reference.excess_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

from sftgo.scorers.llmlingua2 import LLMLINGUA2, align_word_probs_to_tokens, llmlingua2
from sftgo.scorers.reference import INFLUENCE, REFERENCE, excess_loss, influence, reference_token_logp
from sftgo.scorers.spec import Scorer, ScorerError, ScorerSetting
from sftgo.scorers.statistical import FREQUENCY, RANDOM, TFIDF, frequency, random, tfidf
from sftgo.user_functions import import_function, split_name

__all__ = [
    "SCORERS",
    "SCORER_SETTINGS",
    "Scorer",
    "ScorerError",
    "ScorerSetting",
    "scorer_spec",
    "scorer_needs_reference",
    "resolve_scorer",
    "tfidf",
    "frequency",
    "random",
    "llmlingua2",
    "align_word_probs_to_tokens",
    "reference_token_logp",
    "excess_loss",
    "influence",
    "scorer_reference_gap",
]

SCORERS: dict[str, Scorer] = {
    "tfidf": TFIDF,
    "frequency": FREQUENCY,
    "random": RANDOM,
    "llmlingua2": LLMLINGUA2,
    "reference": REFERENCE,
    "influence": INFLUENCE,
}

# The config fields the scorers declare themselves (``ObjectiveArgs`` / ``sftgo train`` flags; ``seed`` is
# TrainingArguments'): name -> ScorerSetting (default, help, type).
SCORER_SETTINGS: dict[str, ScorerSetting] = {s.name: s for sc in SCORERS.values() for s in sc.settings if s.field}


def scorer_spec(name: str, *, load: bool = False) -> Scorer:
    """The declaration of scorer ``name``: a key of :data:`SCORERS`, or ``"module:function"`` (a declaration built
    here: it reads the text and is never cached; ``load``: import the function now, else it is left None).
    :class:`ScorerError` naming the valid names otherwise. Needs neither torch nor the user's module (unless
    ``load``)."""
    if not isinstance(name, str) or not name.strip():
        raise ScorerError(f"scorer must be a name or a callable, got {name!r}")
    name = name.strip()
    spec = SCORERS.get(name)
    if spec is not None:
        return spec
    if ":" not in name:
        raise ScorerError(f"unknown scorer {name!r}; valid names: {', '.join(sorted(SCORERS))}, or 'my_module:my_function'")
    split_name(name, "scorer", ScorerError)
    return Scorer(name, import_function(name, "scorer", ScorerError) if load else None, reads_text=True, cached=False)


def scorer_needs_reference(name: str | None) -> bool:
    """Whether scorer ``name`` is the excess loss under a reference model (its grouping is the ``ref_logp`` column, not
    ``importance``); False for no scorer (``None`` / ``""``)."""
    return bool(name) and scorer_spec(name).needs_reference


def scorer_reference_gap(name: str | None) -> bool:
    """Whether scorer ``name`` is computed by sftgo from the reference's and the initial model's log-probs
    (``influence``: a static ``importance`` column); False for no scorer."""
    return bool(name) and scorer_spec(name).reference_gap


def resolve_scorer(name: str | Callable) -> Callable:
    """A scorer by name, to call: a key of :data:`SCORERS` or ``"module:function"`` (imported now) -> its declaration
    (called like its function), or a callable (returned as is). ``reference`` raises: it needs a reference model."""
    if callable(name):
        return name
    spec = scorer_spec(name, load=True)
    if spec.score is None:
        raise ScorerError(spec.error)
    return spec
