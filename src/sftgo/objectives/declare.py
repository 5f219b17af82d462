"""How a method declares its settings: a torch-free dataclass whose fields are made with :func:`setting` (default, help
text, validation, report metadata). :data:`sftgo.objectives.ObjectiveArgs` (``sftgo train``'s flags, the TRL config's
fields), config validation and the report's labels and old-run defaults are all read from these declarations."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable


@dataclass(frozen=True)
class Setting:
    """One declared setting: its config field ``name``, ``type`` (annotation), ``default``, ``help`` text, ``check``
    (``value -> error message | None``; the config raises ``ConfigError("<name>: <message>")``), ``short`` (its label
    in report tables; None: the name) and ``added`` (newer than some runs: an old run without it did what the default
    does, :data:`sftgo.report.runs.SETTINGS_ADDED`)."""

    name: str
    type: Any
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    short: str | None = None
    added: bool = False

    def field(self):
        """The dataclass field of :class:`ObjectiveArgs` (metadata ``help`` only: transformers' argument parser passes
        the metadata on to argparse)."""
        return field(default=self.default, metadata={"help": self.help})

    def error(self, value) -> str | None:
        """``"<name>: <message>"`` when ``value`` fails the check, else None."""
        msg = self.check(value) if self.check is not None else None
        return None if msg is None else f"{self.name}: {msg}"


def setting(default, *, help: str, check: Callable[[Any], str | None] | None = None, short: str | None = None,
            added: bool = False):
    """A field of a settings dataclass: ``infosft_p: float = setting(0.93, help=..., check=...)``."""
    return field(default=default, metadata={"help": help, "check": check, "short": short, "added": added})


def declared(settings_class) -> list[Setting]:
    """The :class:`Setting` of each field of a settings dataclass (None: none), in field order."""
    if settings_class is None:
        return []
    out = []
    for f in fields(settings_class):
        if f.default is MISSING:
            raise TypeError(f"{settings_class.__name__}.{f.name}: a setting needs a default")
        m = f.metadata
        out.append(Setting(f.name, f.type, f.default, m["help"], m.get("check"), m.get("short"), m.get("added", False)))
    return out


def names(settings_class) -> tuple[str, ...]:
    return tuple(s.name for s in declared(settings_class))


# ----- checks (each returns the message after "<field>: ", as the config has always worded it)

def one_of(choices: tuple[str, ...]):
    return lambda v: None if v in choices else f"{v!r} is not one of {', '.join(choices)}"


def unit_interval(v):
    return None if 0.0 <= v <= 1.0 else f"{v} must be in [0, 1]"


def optional(check):
    return lambda v: None if v is None else check(v)


def finite_nonnegative(hint: str):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < float("inf"):
            return f"{v!r} must be a finite number >= 0 ({hint})"
        return None

    return check
