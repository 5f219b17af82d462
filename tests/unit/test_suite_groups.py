"""The xdist groups of tests/conftest.py: what `make test` (pytest -n 2 --dist loadgroup) runs one at a time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

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


GROUPED = '''
import time
import pytest

@pytest.fixture(scope="module")
def built_once():
    return 1

@pytest.mark.parametrize("i", range(4))
def test_module(built_once, i):
    time.sleep(0.2)

@pytest.mark.parametrize("i", range(4))
def test_free(i):
    time.sleep(0.2)

@pytest.mark.serial
@pytest.mark.parametrize("i", range(4))
def test_serial(i):
    time.sleep(0.2)
'''


@pytest.mark.serial
def test_groups_hold_under_xdist(tmp_path):
    """pytest -n 2 --dist loadgroup really keeps each group on one worker (xdist 3.8's own suffix is lost on pytest
    9.2, which silently spread the groups over both workers)."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-n", "2", "--dist", "loadgroup", "-v",
                        "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_grouped.py")],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    workers: dict[str, set] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\[(gw\d)\] .*PASSED .*::(test_\w+)\[", line)
        if m:
            workers.setdefault(m.group(2), set()).add(m.group(1))
    assert len(workers["test_module"]) == 1 and len(workers["test_serial"]) == 1, workers


def test_the_pip_install_test_is_handed_out_first():
    """The ~3-minute pip-install test (CI) comes first in the run order, the others keep theirs."""
    from tests.conftest import pytest_collection_modifyitems

    def item(module, name):
        return SimpleNamespace(module=SimpleNamespace(__name__=module), function=_plain, name=name,
                               get_closest_marker=lambda m: None, _fixtureinfo=None,
                               add_marker=lambda m: None)

    items = [item("tests.integration.test_a", "a1"), item("tests.integration.test_pip_install", "pip"),
             item("tests.unit.test_b", "b1"), item("tests.integration.test_a", "a2")]
    pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["pip", "a1", "b1", "a2"]
