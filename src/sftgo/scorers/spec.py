"""What a scorer is, declared once: :class:`Scorer` (its name, the settings that feed its cache key, whether it reads
the text or only the token ids, whether it needs a reference model, the scoring function) and :class:`ScorerSetting`.

Each scorer module declares its scorer beside its code (``TFIDF`` in :mod:`sftgo.scorers.statistical`, ``LLMLINGUA2``
in :mod:`sftgo.scorers.llmlingua2`, ``REFERENCE`` in :mod:`sftgo.scorers.reference`); :data:`sftgo.scorers.SCORERS`
lists them. The rest of sftgo asks a declaration (:func:`sftgo.scorers.scorer_spec`) instead of comparing names.
Importable without torch, transformers or numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sftgo.errors import UserError

__all__ = ["Scorer", "ScorerSetting", "ScorerError"]


class ScorerError(UserError):
    """A scorer name that names no scorer, or a ``module:function`` scorer that cannot be imported."""


@dataclass(frozen=True)
class ScorerSetting:
    """A setting a scorer reads, under its ``sftgo train`` / ``sftgo score`` flag name ``name``.

    ``kwarg``: the scoring function's keyword (default ``name``). ``field``: the scorer declares the config field
    itself (``llmlingua2_model``: :data:`sftgo.scorers.SCORER_SETTINGS`, a field of
    :class:`sftgo.objectives.ObjectiveArgs` made from this declaration); False for a field declared elsewhere
    (``seed``, a ``TrainingArguments`` field). ``short``: its label in report tables (None: the name)."""

    name: str
    default: Any
    help: str
    type: type = str
    kwarg: str | None = None
    field: bool = True
    short: str | None = None

    @property
    def flag(self) -> str:
        return f"--{self.name}"


def _values_as_given(values: dict, tokenizer) -> dict:
    return dict(values)


@dataclass(frozen=True)
class Scorer:
    """One scorer.

    ``score(token_ids, *, texts, offsets, **settings) -> list of float arrays`` (see :mod:`sftgo.scorers`); None for
    ``reference``, which ``sftgo train`` / ``sftgo score`` compute from a reference model's log-probs.
    ``settings``: what changes the output: their values go into the score cache key and to ``score``. ``key``: maps
    ``{kwarg: value}`` of ``settings`` and the tokenizer to the key's settings dict (default: as given).
    ``run_settings``: passed to ``score`` but without effect on its output (a batch size): not in the key; only
    ``sftgo score`` has flags for them. ``reads_text``: needs the decoded text and character offsets (else only token
    ids). ``needs_reference``: its importance is the excess loss under ``--ref_model_name_or_path``, computed by
    sftgo from reference log-probs (the ``ref_logp`` column), not by ``score``. ``reference_gap``: its importance is
    static, ``log p_ref - log p_initial`` per token (the reference's log-probs minus those of the model being trained,
    before training; Token Cleaning's influence), computed by sftgo once before training (the ``importance`` column). ``downloads(settings)``: the Hub
    models it would load, as ``(flag, name, what)``. ``cached``: False for a ``module:function`` scorer (its code may
    change between runs)."""

    name: str
    score: Callable | None = None
    settings: tuple[ScorerSetting, ...] = ()
    reads_text: bool = False
    needs_reference: bool = False
    reference_gap: bool = False
    key: Callable[[dict, Any], dict] = _values_as_given
    run_settings: tuple[ScorerSetting, ...] = ()
    downloads: Callable[[dict], list] | None = None
    cached: bool = True
    error: str | None = None  # why ``score`` cannot be called (the reference scorer: it needs a reference model)

    @property
    def uses_reference_model(self) -> bool:
        """Computed by sftgo from a reference model's log-probs (``needs_reference`` or ``reference_gap``)."""
        return self.needs_reference or self.reference_gap

    def __call__(self, token_ids, **kwargs):
        """The scores (``SCORERS[name](token_ids, texts=..., offsets=...)``, as when SCORERS held the functions)."""
        if self.score is None:
            raise ScorerError(self.error or f"scorer {self.name!r} has no scoring function")
        return self.score(token_ids, **kwargs)

    @staticmethod
    def _read(source, s: ScorerSetting):
        if isinstance(source, dict):
            return source.get(s.name, s.default)
        return getattr(source, s.name, s.default)

    def values(self, source) -> dict:
        """``{setting name: value}`` of ``settings`` from ``source`` (a config, an argparse namespace or a dict keyed by
        setting name); a setting ``source`` lacks takes its default."""
        return {s.name: self._read(source, s) for s in self.settings}

    def cache_settings(self, source, tokenizer) -> dict:
        """The settings that change this scorer's output, read from ``source`` (as :meth:`values`): the cache key's
        ``settings`` and ``score``'s keyword arguments."""
        return self.key({s.kwarg or s.name: self._read(source, s) for s in self.settings}, tokenizer)

    def run_kwargs(self, source) -> dict:
        """``run_settings`` that ``source`` sets (a ``sftgo score`` namespace), as ``score``'s keyword arguments."""
        given = ((s.kwarg or s.name, self._read(source, s)) for s in self.run_settings)
        return {k: v for k, v in given if v is not None}

    def hub_models(self, source) -> list[tuple[str, str, str]]:
        """``(flag, name, what)`` of each Hub model this scorer would load under ``source``'s settings."""
        return [] if self.downloads is None else list(self.downloads(self.values(source)))
