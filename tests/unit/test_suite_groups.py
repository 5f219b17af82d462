"""The xdist groups of tests/conftest.py: what `make test` (pytest -n 2 --dist loadgroup) runs one at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import SimpleNamespace

from tests.conftest import xdist_group_of


def _item(fn, marks=(), fixture_scopes=()):
    defs = {f"f{i}": [SimpleNamespace(scope=s, baseid="tests/unit/test_x.py")] for i, s in enumerate(fixture_scopes)}
    return SimpleNamespace(function=fn, get_closest_marker=lambda m: SimpleNamespace() if m in marks else None,
                           _fixtureinfo=SimpleNamespace(name2fixturedefs=defs), module=SimpleNamespace(__name__="test_x"))


def _torchrun(tmp_path):
    from pathlib import Path

    subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "x.py"])


def _ctrl_c(p):
    os.kill(p.pid, signal.SIGINT)


def _terminate(p):
    p.send_signal(signal.SIGTERM)


def _plain(tmp_path):
    assert tmp_path


def test_multi_process_signal_and_slurm_tests_are_serial_and_module_fixtures_keep_a_module_together():
    for fn in (_torchrun, _ctrl_c, _terminate):
        assert xdist_group_of(_item(fn)) == "serial", fn.__name__
    assert xdist_group_of(_item(_plain, marks=("serial",))) == "serial"
    assert xdist_group_of(_item(_plain, marks=("slurm",))) == "serial"
    assert xdist_group_of(_item(_plain, fixture_scopes=("module",))) == "test_x"
    assert xdist_group_of(_item(_plain, fixture_scopes=("session", "function"))) is None
    assert xdist_group_of(_item(_plain)) is None
