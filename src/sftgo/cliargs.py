"""Command-line parsing shared by every ``sftgo`` command: whole flag names only, one line per mistake.

argparse on its own takes ``--learning_rat`` for ``--learning_rate`` (prefix matching), and answers a bad flag with the
whole usage (137 lines for ``sftgo train``) before the error. Every sftgo parser mixes in :class:`OneLineErrors`:
abbreviations are refused, an unknown flag gets the closest valid names, and any parse error is a :class:`FlagError`
(a :class:`~sftgo.errors.UserError`) that ``sftgo`` prints as ``sftgo <cmd>: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys

from .errors import UserError


class FlagError(UserError):
    """A flag the command does not know, or a flag with a bad value; the message names it (and the closest names)."""


def is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def closest_flags(name: str, valid: list[str], n: int = 3) -> list[str]:
    """The valid ``--flags`` closest to ``name`` (spelling first, then the flags it is a prefix of)."""
    key = name.split("=", 1)[0].replace("-", "_").lstrip("_")
    plain = {v.lstrip("-").replace("-", "_"): v for v in valid}
    scored = sorted(((difflib.SequenceMatcher(None, key, k).ratio(), k) for k in plain), reverse=True)
    close = [k for r, k in scored[:n] if r >= max(0.6, scored[0][0] - 0.1)] if scored else []  # near the best only
    if len(close) < n:
        close += [k for k in sorted(plain) if k.startswith(key) and k != key and k not in close][: n - len(close)]
    return [plain[k] for k in close]


def unknown_flag_message(tok: str, valid: list[str], prog: str) -> str:
    """``unknown flag --learnign_rate; did you mean --learning_rate?``"""
    name = tok.split("=", 1)[0]
    close = closest_flags(name, valid)
    if not close:
        return f"unknown flag {name}; `{prog} --help` lists the flags"
    return f"unknown flag {name}; did you mean {' or '.join([', '.join(close[:-1]), close[-1]] if len(close) > 1 else close)}?"


class OneLineErrors:
    """Mix into an ``argparse.ArgumentParser`` (first in the bases): no abbreviations, and errors raise
    :class:`FlagError` (no usage dump, no ``SystemExit``); unknown arguments are an error too, also through
    ``parse_known_args`` (which ``transformers.HfArgumentParser`` uses)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    also_suggest: tuple[str, ...] = ()  # more flags to suggest (sweep: its own options beside the train flags)

    def long_flags(self) -> list[str]:
        """Every ``--flag`` the parser takes, in its underscore spelling (``--learning-rate`` aliases left out)."""
        names = [o for a in self._actions for o in a.option_strings if o.startswith("--")] + list(self.also_suggest)
        have = set(names)
        return [o for o in names if not ("-" in o[2:] and "--" + o[2:].replace("-", "_") in have)]

    def parse_known_args(self, args=None, namespace=None):
        # An unknown flag first: argparse would otherwise report a required option it took for missing
        # (`--output_di x`: "the following arguments are required: --output_dir")
        for tok in sys.argv[1:] if args is None else args:
            if tok == "--":
                break
            if (tok.startswith("-") and len(tok) > 1 and " " not in tok and not is_number(tok)
                    and tok.split("=", 1)[0] not in self._option_string_actions):
                self.error(unknown_flag_message(tok, self.long_flags(), self.prog))
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            flag = next((t for t in extra if t.startswith("-") and not is_number(t)), None)
            if flag is not None:
                self.error(unknown_flag_message(flag, self.long_flags(), self.prog))
            self.error(f"unexpected argument{'s' if len(extra) > 1 else ''} {' '.join(extra)}")
        return ns, extra

    def error(self, message: str):
        # argparse names a flag by all its spellings ("argument --learning_rate/--learning-rate: ..."): keep the first
        message = re.sub(r"(argument --[\w]+)(/--[\w-]+)+", r"\1", message)
        raise FlagError(message)


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`OneLineErrors`: what every sftgo command but ``train`` uses."""
