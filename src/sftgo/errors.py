"""The one error type for the user's mistakes.

A :class:`UserError` (a bad setting, data file, model name, sweep file or task) carries a message that names the
field / file / line and the fix; ``sftgo`` prints it in one line and exits with status 2. Every other exception is a
bug (ours or a library's) and keeps its traceback and its cause.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input; the message names what is wrong and how to fix it."""


class ConfigError(UserError):
    """A bad setting; the message names the field and the fix (re-exported by :mod:`sftgo.config`)."""
