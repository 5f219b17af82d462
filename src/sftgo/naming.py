"""Run-directory names shared by `sftgo sweep` (which makes them) and `sftgo report` (which reads them back), so that
neither package imports the other."""

from __future__ import annotations

import re


def run_name(point: str, seed) -> str:
    """A sweep run's directory name: its grid point's name and its seed (``sft-go_tfidf_p70_s2``)."""
    return f"{point}_s{seed}"


def point_of(name: str) -> str:
    """The inverse of :func:`run_name`: the grid point a run directory belongs to."""
    return re.sub(r"_s\d+$", "", name)
