"""The sweep's error (below the spec and the executors, which both raise it)."""

from __future__ import annotations

from ..errors import UserError


class SweepError(UserError):
    """A bad sweep specification or a sweep directory that does not match it; the message says what to change."""
