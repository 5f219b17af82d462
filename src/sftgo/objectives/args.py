"""``ObjectiveArgs``: the dataclass of every objective setting, built from the declarations (:mod:`.declare`), and its
validation. Built by :mod:`sftgo.objectives` from its tables; re-exported by :mod:`sftgo.config`."""

from __future__ import annotations

import logging
from dataclasses import fields, make_dataclass

from ..errors import ConfigError
from .declare import Setting

logger = logging.getLogger("sftgo.config")  # where the config's warnings have always been logged


def missing_reference(what: str) -> str:
    """The error for Rho-1 / the reference scorer without --ref_model_name_or_path (also used by `sftgo score`)."""
    return (f"{what} needs a reference model trained on in-domain data. Make one with "
            "`sftgo train --objective sft --dataset <in-domain data> --output_dir runs/ref`, then pass "
            "`--ref_model_name_or_path runs/ref/final` (or `--ref_model_name_or_path initial` for the initial model: "
            "every excess loss then starts at zero)")


class _Checks:
    """The methods of :class:`ObjectiveArgs` (its fields come from the declarations)."""

    _settings: dict[str, Setting] = {}
    _objectives: dict = {}

    def check_objective(self) -> None:
        """Resolve ``keep_ratio`` into ``percentile`` and check every objective setting (ConfigError naming the field):
        the declared check of each setting, then the checks across settings and the objective's own."""
        def bad(name, msg):
            raise ConfigError(f"{name}: {msg}")

        objectives = self._objectives
        if self.keep_ratio is not None and 0.0 < self.keep_ratio <= 1.0:
            eta = round(100.0 * (1.0 - self.keep_ratio), 10)
            if self.percentile not in (90.0, eta):  # 90 is the default: an explicit other eta conflicts
                bad("keep_ratio", f"{self.keep_ratio} means percentile {eta}, but percentile is {self.percentile}; "
                                  "give only one of them")
            self.percentile = eta
        if self.objective not in objectives:
            bad("objective", f"{self.objective!r} is not one of {', '.join(objectives)}")
        from ..scorers import ScorerError, scorer_needs_reference, scorer_reference_gap, scorer_spec

        if self.scorer:
            try:
                scorer_spec(self.scorer)  # fail before the model is loaded, not after
            except ScorerError as e:
                bad("scorer", str(e))
        obj = objectives[self.objective]
        by_scorer = scorer_needs_reference(self.scorer) or scorer_reference_gap(self.scorer)
        if (obj.needs_ref_logp(self) or by_scorer) and not self.ref_model_name_or_path:
            if not by_scorer and "ref_logp" not in obj.columns(self):  # the token weighting reads it
                if ":" not in str(self.token_weight):  # a built-in weighting: PriFT
                    bad("ref_model_name_or_path", f"token_weight={self.token_weight} weighs tokens by a frozen "
                                                  "reference model's probabilities; pass --ref_model_name_or_path "
                                                  "initial (the model before training, as the PriFT authors do) or "
                                                  "another model's path")
                bad("ref_model_name_or_path", missing_reference(f"token_weight={self.token_weight}"))
            bad("ref_model_name_or_path", missing_reference(f"scorer={self.scorer}" if by_scorer
                                                            else f"objective={self.objective}"))
        if scorer_reference_gap(self.scorer) and self.ref_model_name_or_path == "initial":
            bad("ref_model_name_or_path", f"scorer={self.scorer} scores the reference's log p minus the initial "
                                          "model's: with the initial model as the reference every score is 0; give a "
                                          "model trained on in-domain data (Token Cleaning's warm-up model)")
        for name, s in self._settings.items():
            error = s.error(getattr(self, name))
            if error is not None:
                raise ConfigError(error)
        try:
            obj.check_token_weight(self)
            obj.check_args(self)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        defaults = {f.name: f.default for f in fields(type(self)) if f.init}
        ignored = self._ignored_settings(self, defaults)
        if ignored:  # not an error: a sweep's baseline (objective=sft) inherits the base config's method settings
            logger.warning("objective %s does not read %s; %s ignored", self.objective,
                           ", ".join(f"{k}={getattr(self, k)!r}" for k in ignored), "it is" if len(ignored) == 1 else "they are")

    @property
    def gamma_value(self) -> float | str:
        return "p" if self.target_gamma == "p" else float(self.target_gamma)


def objective_args(settings: dict[str, Setting], objectives: dict, ignored_settings, module: str):
    """The ``ObjectiveArgs`` dataclass: one field per declared setting (in ``settings``' order), checked against
    ``objectives`` (the table of objectives) and warning about the settings ``ignored_settings`` lists."""
    cls = make_dataclass("ObjectiveArgs", [(s.name, s.type, s.field()) for s in settings.values()], bases=(_Checks,),
                         namespace={"_settings": settings, "_objectives": objectives,
                                    "_ignored_settings": staticmethod(ignored_settings)})
    cls.__module__ = module
    cls.__doc__ = (
        "sftgo's objective settings, declared once (each objective's and token weighting's ``Settings`` and "
        ":mod:`sftgo.objectives.common`): the fields ``sftgo train`` takes as flags, mixed into "
        ":class:`sftgo.config.SFTGoConfig` (over ``transformers.TrainingArguments``) and into "
        ":class:`sftgo.integrations.trl.SFTGoSFTConfig` (over ``trl.SFTConfig``), so both read and check them the same "
        "way. On its own (``ObjectiveArgs(objective=\"infosft\", infosft_p=0.9)``) it holds the settings of "
        ":func:`sftgo.objectives.compute_loss_func`. Call :meth:`check_objective` after construction.")
    return cls
