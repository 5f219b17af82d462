"""Each multi-process command of the README's "Several processes" section starts the processes it says: its launcher
(everything before `-m sftgo.cli`) runs a probe that records RANK / WORLD_SIZE, and the probe must run N times with
WORLD_SIZE = N and ranks 0..N-1 (no GPU is touched: the launchers start processes without one). And the command the
README used to show, `accelerate launch --cpu --num_processes 2`, starts one process, which `sftgo train` warns about."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"
BIN = Path(sys.executable).parent
PROBE = """
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"rank": os.environ.get("RANK"), "world": os.environ.get("WORLD_SIZE")}) + "\\n")
"""


def readme_commands() -> list[str]:
    section = re.split(r"\n#{2,} ", README.read_text().split("### Several processes", 1)[1], maxsplit=1)[0]
    block = section.split("```", 2)[1]
    text = re.sub(r"\\\n\s*", " ", block)  # join continued lines
    cmds = [re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines()]
    return [c for c in cmds if c.startswith(("torchrun", "accelerate launch"))]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(launcher: list[str], tmp_path: Path, *args: str) -> tuple[list[dict], str]:
    probe, out = tmp_path / "probe.py", tmp_path / "ranks.jsonl"
    probe.write_text(PROBE)
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    p = subprocess.run([*launcher, str(probe), str(out), *args], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()], p.stderr


def test_the_section_has_its_commands():
    cmds = readme_commands()
    assert len(cmds) == 3 and sum(c.startswith("torchrun") for c in cmds) == 2, cmds
    assert not any("--cpu" in shlex.split(c) for c in cmds)  # the one-process command is gone


@pytest.mark.serial
@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_starts_its_processes(command, tmp_path):
    tokens = shlex.split(command)
    launcher = tokens[: tokens.index("-m")]
    n = int(next(tokens[i + 1] for i, t in enumerate(tokens) if t in ("--nproc_per_node", "--num_processes")))
    # The venv's launcher, on a free port (tests run side by side), with the probe as the script.
    if launcher[0] == "torchrun":
        launcher = [str(BIN / "torchrun"), "--master_port", str(_port()), *launcher[1:]]
    else:
        launcher = [str(BIN / "accelerate"), "launch", "--main_process_port", str(_port()), *launcher[2:]]
    records, _ = _run(launcher, tmp_path)
    assert len(records) == n, (command, records)
    assert {r["world"] for r in records} == {str(n)} and sorted(int(r["rank"]) for r in records) == list(range(n))


@pytest.mark.serial
def test_accelerate_cpu_starts_one_process_and_sftgo_warns(tmp_path):
    launcher = [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "2"]
    records, _ = _run(launcher, tmp_path)
    assert records == [{"rank": None, "world": None}]  # one process, not part of any group
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    warned = subprocess.run([*launcher, "-m", "sftgo.cli", "train", "--help"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert warned.returncode == 0 and "started only this one" in warned.stderr, warned.stderr[-2000:]
    # Two real processes (torchrun): no warning.
    quiet = subprocess.run([str(BIN / "torchrun"), "--master_port", str(_port()), "--nproc_per_node", "2", "-m",
                            "sftgo.cli", "train", "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and "usage: sftgo train" in quiet.stdout, quiet.stderr[-2000:]
    assert "started only this one" not in quiet.stderr
