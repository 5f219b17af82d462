"""Every fenced block of README.md runs as written (issue 26, part 5), so the documentation cannot drift from the code.

Each ```-fenced block is classified:

- commands: every line (after joining `\\`-continued lines, dropping `# comments`) is a command. `sftgo ...` runs
  (in one long-lived runner process that calls `sftgo.cli.main(argv)`, the `sftgo` entry point, so transformers is
  imported once), `torchrun ... -m sftgo.cli ...` runs as a subprocess with the venv's torchrun; any other command
  (`make`, `pip install`, `accelerate launch`, `python`, ...) and any `sftgo` command that cannot run here must be
  listed in NOT_RUN below with the reason (its named files are still checked to exist).
- python (```python): runs as a script of its own (`runpy`, fresh globals) in the runner process, after the
  PYTHON_CONTEXT code for the names the README says the user's script already has (a model, rows, a collator) and
  before the code that follows it there (e.g. `trainer.train()`).
- data: every line is one JSON object; the lines are written to a .jsonl file and read by sftgo's own data reader.
- text: formulas and listings, listed in TEXT_BLOCKS by their first line.

A block that fits none of these fails `test_every_block_is_classified` with the line to add. All blocks run in README
order in one directory (a chain: `sftgo train ... --output_dir runs/llama`, then its resume; the sweep, then its
report and generations), where `configs/` is the repository's and the files a command names (`data.jsonl`, ...)
are the small ones in FILES.

What runs is the README's text with SUBSTITUTIONS applied (visible, on purpose: each only shrinks a run, points at
a local file or stands for the user's own settings) and ADDED_FLAGS appended: the tiny Llama of tests/conftest.py
instead of a 135M-8B model, one optimizer step. The slow parts are the subprocesses (the sweep's three training
runs, the 2-process torchrun) and the Rho-1 chain (two trainings, LLMLingua-2 and reference scores of the built-in
data). Measured (all 16 tests, with the resume fix of issue 26 part 1): 125 s of CPU (user + sys, every process),
8 min wall on the 2-core machine shared with other jobs (load ~11).

To add a block: a `sftgo` command runs by itself (add a SUBSTITUTIONS / ADDED_FLAGS entry if it names a big model,
the Hub or a long run); one that cannot run here: its start (a prefix of the command after substitutions) in NOT_RUN
with the reason; a new kind of command line: its first word in COMMAND_STARTS (and NOT_RUN); a formula/listing: its
first line in TEXT_BLOCKS; a Python fragment that needs names from the user's script: its first line in
PYTHON_CONTEXT; a data file a command names: FILES.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The blocks chain (one directory, README order): under pytest-xdist they must stay on one worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("readme")

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
PY = sys.executable
BIN = Path(PY).parent

# ------------------------------------------------------------------------------------------------- substitutions
# (README text, what runs here, why). Applied in order to each block's text before it is split into commands.
SUBSTITUTIONS = [
    ("meta-llama/Llama-3.2-3B", "{tiny_model}", "a 3B model -> the tiny Llama"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "{tiny_model}", "a Hub id (offline here) -> the tiny Llama"),
    ("--bf16 true", "--bf16 false", "no bf16 on this CPU"),
    ("../shared/data", "shared_data", "the repository's sibling data folder -> small files of the same layout"),
    ("--seeds 1,2,3", "--seeds 1", "one seed per grid point"),
    ("--limit 100", "--limit 2", "two rows of the multiple-choice file"),
    ("--max_new_tokens 256", "--max_new_tokens 8", "short answers from the tiny model, as sftgo generate's ADDED_FLAGS "
     "(256 greedy tokens for each prompt and run: about 3 s of CPU)"),
    ("--grid percentile=55,70,90", "--grid percentile=70,90", "the first sweep's grid: its runs are complete and "
     "skipped, the sweep's continue path (a third grid point would train again)"),
    ("sftgo sweep --status runs/paper/table1_lima_llama32_3b", "sftgo sweep --status runs/sw",
     "the SLURM sweep is only planned here (--dry_run, no sweep.json): the status of the local sweep instead"),
    ("SFTConfig(...)", "SFTConfig(output_dir='out', use_cpu=True, bf16=False, max_steps=1, report_to='none')",
     "`...`: the user's own settings"),
    ("TrainingArguments(...)", "TrainingArguments(output_dir='out', use_cpu=True, max_steps=1, report_to='none')",
     "`...`: the user's own settings"),
]

# Flags appended to a command that does not set them itself: (command start, flag, value, why). Never to a resume
# (`--resume_from_checkpoint`): a resume reads the run's own config.yaml. `sftgo sweep` passes them on to every run.
ADDED_FLAGS = [
    ("sftgo train", "--model_name_or_path", "{tiny_model}", "the built-in SmolLM2-135M -> the tiny Llama"),
    ("sftgo train", "--max_steps", "1", "one optimizer step"),
    ("torchrun", "--model_name_or_path", "{tiny_model}", "as sftgo train"),
    ("torchrun", "--max_steps", "1", "as sftgo train"),
    ("sftgo sweep configs/", "--model_name_or_path", "{tiny_model}", "as sftgo train, for each run"),
    ("sftgo sweep configs/", "--max_steps", "1", "as sftgo train, for each run"),
    ("sftgo train paper/", "--dataset", "data.jsonl", "a paper recipe (by name): its Hub dataset -> a small file"),
    ("sftgo train paper/", "--bf16", "false", "a paper recipe sets bf16: true; no bf16 on this CPU"),
    ("sftgo train configs/paper/", "--dataset", "data.jsonl", "as a paper recipe by name"),
    ("sftgo train configs/paper/", "--bf16", "false", "as a paper recipe by name"),
    ("sftgo score", "--model_name_or_path", "{tiny_model}", "the tokenizer of the tiny Llama"),
    ("sftgo generate", "--max_new_tokens", "8", "short answers from the tiny model (default 256)"),
    ("sftgo score", "--llmlingua2_model", "{tiny_encoder}", "only where --scorer names llmlingua2: the Hub model -> "
     "a tiny BERT token classifier"),
    ("sftgo sweep configs/paper/sweeps/table1_lima_llama32_3b.yaml --executor slurm", "--dry_run", "",
     "SLURM is not here (tests/integration/test_sweep_slurm.py submits to one): the plan is read and printed"),
]

# Commands not run here: (command start after substitutions, reason). Their file arguments (*.yaml, *.py, ...) must
# still exist in the repository, and the `sftgo.cli train` arguments of a launcher command must parse (sftgo's own
# parser, with `--use_cpu true --bf16 false` added: no GPU here).
NOT_RUN = [
    ("make demo", "the real SmolLM2-135M for 30 steps (minutes): `sftgo train --output_dir runs/demo`, the command "
     "path `sftgo train` below runs on the tiny model"),
    ("make test", "the test suite itself"),
    ("make ", "a Makefile target (installs or runs the real model)"),
    ("pip install", "installs packages: the wheel test installs sftgo in a fresh venv"),
    ("pip check", "the wheel test runs it in the fresh venv (tests/integration/test_pip_install.py, under CI=true)"),
    ("accelerate launch --multi_gpu", "8 GPUs; the launcher's process count is checked in "
     "tests/integration/test_multiprocess_commands.py"),
    ("torchrun --nproc_per_node 8", "8 processes of a 3B model; checked in tests/integration/test_multiprocess_commands.py"),
    ("accelerate launch --config_file", "GPU launch configs (no GPU here); loaded and validated in "
     "tests/unit/test_launch_configs.py"),
    ("sftgo eval runs/demo --tasks paper", "8 lm-eval suites incl. MMLU's 57 subjects twice: 30 s of CPU at --limit 1 on "
     "the tiny model; the registered tasks on local files run in tests/integration/test_eval.py"),
    ("sftgo eval runs/demo --tasks math", "generation to 256 tokens per question: tests/integration/test_eval.py "
     "(test_registered_tasks_run_on_local_files)"),
    ("sftgo eval runs/demo --tasks arc_challenge,hellaswag", "Hub data (offline here)"),
]

# Text blocks (not code): first line -> what it is.
TEXT_BLOCKS = {
    "w_n   data weight (1 without data weights)": "formula (Token weights compose)",
    "src/sftgo/   data/ models.py config.py objectives/ tokens.py token_head/ grouping.py scorers/ cache.py":
        "listing (Layout)",
}

# Python blocks that are fragments of the user's script: first line -> code run before the block (the names the README
# says the script already has), and code run after it.
_USER_ROWS = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({tiny_model!r})
model = AutoModelForCausalLM.from_pretrained({tiny_model!r})
def _row(prompt, answer):
    p = tok(prompt)["input_ids"]; a = tok(answer)["input_ids"] + [tok.eos_token_id]
    return {{"input_ids": p + a, "labels": [-100] * len(p) + a}}
rows = [_row("Add three and four.", "Three plus four equals seven."), _row("Sort 5, 2, 9.", "2, 5, 9."),
        _row("What is the capital of France?", "Paris."), _row("Explain photosynthesis.", "Plants make sugar.")]
def collate(batch):
    n = max(len(r["input_ids"]) for r in batch)
    out = {{"input_ids": torch.tensor([r["input_ids"] + [tok.pad_token_id] * (n - len(r["input_ids"])) for r in batch]),
           "labels": torch.tensor([r["labels"] + [-100] * (n - len(r["labels"])) for r in batch])}}
    out["attention_mask"] = (torch.arange(n)[None] < torch.tensor([len(r["input_ids"]) for r in batch])[:, None]).long()
    if "importance" in batch[0]:
        out["importance"] = torch.tensor([r["importance"] + [0.0] * (n - len(r["importance"])) for r in batch])
    return out
"""
PYTHON_CONTEXT = {
    "from sftgo.objectives import compute_loss_func": (
        _USER_ROWS + "from datasets import load_dataset\nfrom trl import SFTConfig, SFTTrainer\n"
        "from transformers import Trainer, TrainingArguments\n"
        "dataset = load_dataset('json', data_files='chat.jsonl', split='train')\n",
        "trainer.train()\nprint('trained', trainer.state.global_step)\n"),
    "from sftgo.config import SFTGoConfig": (
        _USER_ROWS, "trainer.args.max_steps = 1\ntrainer.train()\nprint('trained', trainer.state.global_step)\n"),
}

# The fields a README data example may show (what sftgo's data reader reads; a misspelt one would be ignored).
DATA_FIELDS = {"instruction", "input", "output", "messages", "role", "content", "prompt", "completion", "question",
               "answer", "conversations", "weight", "loss_weight", "channel"}

# The small files the README's commands name, written in the run directory.
ALPACA = [
    {"instruction": "Add three and four.", "input": "", "output": "Three plus four equals seven."},
    {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Paris."},
    {"instruction": "Sort these numbers.", "input": "5, 2, 9", "output": "The sorted list is 2, 5, 9."},
    {"instruction": "Explain photosynthesis.", "input": "", "output": "Plants use sunlight to make sugar and oxygen."},
]
CHAT = [{"messages": [{"role": "user", "content": r["instruction"] + " " + r["input"]},
                      {"role": "assistant", "content": r["output"]}]} for r in ALPACA]
MMLU = [{"question": f"Which number is {w}?", "answer_a": "1", "answer_b": "2", "answer_c": "3", "answer_d": "4",
         "correct_answer": "ABC"[i], "topic": "elementary mathematics"} for i, w in enumerate(["one", "two", "three"])]


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


FILES = {
    "data.jsonl": _jsonl(ALPACA),
    "chat.jsonl": _jsonl(CHAT),
    "held_out.jsonl": _jsonl(ALPACA[:2]),
    "prompts.jsonl": _jsonl([{"instruction": "Add two and two."}, {"prompt": "Name a colour."}]),
    "prompts.txt": "Add two and two.\nName a colour.\n",
    "shared_data/mmlu_test.jsonl": _jsonl(MMLU),
}

# What a command needs from earlier ones that no README block makes (the run names are the sweep's own).
SETUP = {
    "sftgo generate runs/sft runs/go": "link runs/sft and runs/go to the sweep's sft and sft-go runs of seed 1",
}


# ------------------------------------------------------------------------------------------------- README parsing


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    kind: str = ""
    why: str = ""
    commands: list = field(default_factory=list)  # (README line, command after substitutions, NOT_RUN reason or "")

    @property
    def first(self) -> str:
        return next((s.strip() for s in self.text.splitlines() if s.strip()), "")


COMMAND_STARTS = ("sftgo ", "make ", "torchrun ", "accelerate launch ", "pip install ", "pip check", "python ", "python3 ")


def readme_blocks(text: str | None = None) -> list[Block]:
    lines = (README.read_text() if text is None else text).splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(Block(i + 1, m.group(1), "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return out


def substitute(text: str) -> str:
    for old, new, _ in SUBSTITUTIONS:
        text = text.replace(old, new)
    return text


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """(README line, line) with `\\`-continued lines joined and trailing `# comments` dropped; comment lines go."""
    out, buf, start = [], "", 0
    for k, raw in enumerate(block.text.splitlines()):
        if not buf:
            start = block.line + 1 + k
        buf += raw.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        cmd = re.sub(r"\s+#\s.*$", "", buf).strip()
        buf = ""
        if cmd and not cmd.startswith("#"):
            out.append((start, cmd))
    return out


def classify(block: Block) -> Block:
    lines = [s for s in block.text.splitlines() if s.strip()]
    if block.lang == "python":
        block.kind = "python"
    elif lines and all(_is_json_object(s) for s in lines):
        block.kind = "data"
    elif block.first in TEXT_BLOCKS:
        block.kind, block.why = "text", TEXT_BLOCKS[block.first]
    else:
        cmds = logical_lines(block)
        if cmds and all(c.startswith(COMMAND_STARTS) for _, c in cmds):
            block.kind = "commands"
            for line, c in cmds:
                c = substitute(c)
                reason = next((why for start, why in NOT_RUN if c.startswith(start)), "")
                block.commands.append((line, c, reason))
    return block


def _is_json_object(s: str) -> bool:
    try:
        return isinstance(json.loads(s), dict)
    except ValueError:
        return False


def unrunnable(command: str) -> str:
    """Why a command that is not in NOT_RUN still cannot run here ("" when it can)."""
    if command.startswith(("sftgo ", "torchrun ")):
        return ""
    return "only `sftgo` and `torchrun ... -m sftgo.cli` commands run here: add it to NOT_RUN with the reason"


def with_added_flags(command: str) -> list[str]:
    argv = shlex.split(command)
    if "--resume_from_checkpoint" in argv:
        return argv
    for start, flag, value, _ in ADDED_FLAGS:
        if not command.startswith(start) or flag in argv:
            continue
        if flag == "--llmlingua2_model" and "llmlingua2" not in command:
            continue
        argv += [flag, value] if value else [flag]
    return argv


BLOCKS = [classify(b) for b in readme_blocks()]


def test_every_block_is_classified():
    bad = []
    for b in BLOCKS:
        if not b.kind:
            bad.append(f"README.md:{b.line}: unclassified block starting {b.first!r}: a command block's lines must each "
                       f"start with one of {COMMAND_STARTS}; a formula/listing goes in TEXT_BLOCKS by its first line")
        for line, c, reason in b.commands:
            if not reason and unrunnable(c):
                bad.append(f"README.md:{line}: {c!r}: {unrunnable(c)}")
        if b.kind == "python" and "import" not in b.text:
            bad.append(f"README.md:{b.line}: a python block without imports cannot run as written")
    assert not bad, "\n".join(bad)
    kinds = [b.kind for b in BLOCKS]
    # The README has each kind (a parser that stopped seeing blocks would pass vacuously otherwise).
    assert {"commands", "python", "data", "text"} <= set(kinds), kinds
    assert sum(len(b.commands) for b in BLOCKS) >= 30


def test_classifier_refuses_an_unknown_block():
    """A new block of an unknown kind, or a command nobody listed, is caught (the drift guard can fail)."""
    (b,) = [classify(x) for x in readme_blocks("```\nnvidia-smi --query-gpu=name\n```\n")]
    assert b.kind == ""
    (b,) = [classify(x) for x in readme_blocks("```\nsftgo train\ndocker run sftgo\n```\n")]
    assert b.kind == ""
    (b,) = [classify(x) for x in readme_blocks("```\naccelerate launch --cpu -m sftgo.cli train\n```\n")]
    assert b.kind == "commands" and unrunnable(b.commands[0][1])


def test_added_flags_leave_set_flags_and_resumes_alone():
    assert with_added_flags("sftgo train --max_steps 5") == ["sftgo", "train", "--max_steps", "5",
                                                             "--model_name_or_path", "{tiny_model}"]
    resume = "sftgo train --output_dir runs/x --resume_from_checkpoint last"
    assert with_added_flags(resume) == shlex.split(resume)  # a resume reads the run's own config.yaml


def test_not_run_entries_are_used():
    """Each NOT_RUN entry matches a README command (a stale entry would hide nothing, but says something false)."""
    used = {start for b in BLOCKS for _, c, _ in b.commands for start, _ in NOT_RUN if c.startswith(start)}
    assert {s for s, _ in NOT_RUN if s not in ("make ", "pip install")} <= used, used


# ------------------------------------------------------------------------------------------------- running them

RUNNER = r"""
import gc, json, os, runpy, sys, traceback
from sftgo.cli import main
def run(req):
    if "python" in req:  # a README Python block, as a script of its own (fresh globals, __name__ == "__main__")
        runpy.run_path(req["python"], run_name="__main__")
        return 0
    return main(req["argv"])
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1); os.dup2(fd, 2)
    try:
        rc = run(req)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc(); rc = 1
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(saved[0], 1); os.dup2(saved[1], 2); os.close(fd); os.close(saved[0]); os.close(saved[1])
    gc.collect(); gc.freeze()  # as tests/conftest.py after each test: later full collections skip what is left
    print(json.dumps({"rc": rc or 0}), flush=True)
"""


class Workspace:
    def __init__(self, root: Path, tiny_model: str, tiny_encoder: str):
        self.root, self.values = root, {"tiny_model": tiny_model, "tiny_encoder": tiny_encoder}
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                                                  os.environ.get("PYTHONPATH", "")]),
                    "SFTGO_CACHE": str(root.parent / "cache"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "PYTHONUNBUFFERED": "1"}
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            self.env.pop(k, None)
        self.runner = None
        self.logs = 0

    def fill(self, s: str) -> str:
        for k, v in self.values.items():
            s = s.replace("{" + k + "}", v)
        return s

    def log(self) -> Path:
        self.logs += 1
        return self.root.parent / "logs" / f"{self.logs:03d}.log"

    def sftgo(self, argv: list[str]) -> tuple[int, str]:
        return self.request({"argv": argv})

    def request(self, req: dict) -> tuple[int, str]:
        """`sftgo ARGV` (sftgo.cli.main) or a Python file, in the runner process; its exit code and output."""
        if self.runner is None:
            self.runner = subprocess.Popen([PY, "-c", RUNNER], cwd=self.root, env=self.env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True)
        log = self.log()
        self.runner.stdin.write(json.dumps({**req, "log": str(log)}) + "\n")
        self.runner.stdin.flush()
        reply = self.runner.stdout.readline()
        assert reply, "the runner process died:\n" + log.read_text()[-3000:]
        return json.loads(reply)["rc"], log.read_text()

    def shell(self, argv: list[str], timeout=600) -> tuple[int, str]:
        p = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr

    def close(self):
        if self.runner is not None:
            self.runner.stdin.close()
            self.runner.wait(timeout=60)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from tests.conftest import build_tiny_model, build_tokenizer
    from tests.unit.test_scorers import tiny_encoder

    base = tmp_path_factory.mktemp("readme")
    (base / "logs").mkdir()
    tok = build_tokenizer(chat=True)
    model = build_tiny_model(len(tok))
    model.config.max_position_embeddings = 1024  # room for prompt + answers (the positions are computed, not learned)
    model.save_pretrained(base / "tiny_model")
    tok.save_pretrained(base / "tiny_model")
    enc, enc_tok = tiny_encoder("the quick brown fox what is capital of france add three and four".split())
    enc.save_pretrained(base / "tiny_encoder")
    enc_tok.save_pretrained(base / "tiny_encoder")
    root = base / "repo"
    root.mkdir()
    (root / "configs").symlink_to(ROOT / "configs")
    for name, content in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    w = Workspace(root, str(base / "tiny_model"), str(base / "tiny_encoder"))
    yield w
    w.close()


def _setup(ws: Workspace, command: str):
    if command.startswith("sftgo generate runs/sft runs/go"):
        runs = sorted(p for p in (ws.root / "runs/sw").glob("*_s1") if (p / "final").is_dir())
        sft = [p for p in runs if p.name.startswith("sft_")]
        go = [p for p in runs if p.name.startswith("sft-go_")]
        assert sft and go, f"the sweep's runs: {runs}"
        for name, target in (("sft", sft[0]), ("go", go[0])):
            link = ws.root / "runs" / name
            if not link.exists():
                link.symlink_to(target)


def _check_not_run(ws: Workspace, command: str) -> list[str]:
    """A command that does not run here still names files that exist (configs, scripts) and Makefile targets."""
    bad = []
    for tok in shlex.split(command):
        if re.search(r"\.(ya?ml|py|sh|json)$", tok) and "/" in tok and not (ROOT / tok).exists():
            bad.append(f"{tok} does not exist")
    argv = shlex.split(command)
    at = argv.index("sftgo.cli") + 1 if "sftgo.cli" in argv else 1 if argv[0] == "sftgo" else len(argv)
    if argv[at:at + 1] == ["train"]:
        from sftgo.config import parse_config

        try:
            args = [str(ROOT / a) if (ROOT / a).is_file() else a for a in argv[at + 1:]]
            parse_config(args + ["--use_cpu", "true", "--bf16", "false"])
        except (Exception, SystemExit) as e:
            bad.append(f"its sftgo train arguments do not parse: {type(e).__name__}: {e}")
    if command.startswith("make "):
        target = command.split()[1]
        if not re.search(rf"^{re.escape(target)}:", (ROOT / "Makefile").read_text(), re.M):
            bad.append(f"the Makefile has no target {target}")
    return bad


def _run_command(ws: Workspace, command: str) -> tuple[int, str]:
    argv = [ws.fill(a) for a in with_added_flags(command)]
    _setup(ws, command)
    if argv[0] == "sftgo":
        return ws.sftgo(argv[1:])
    if argv[0] == "torchrun":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return ws.shell([str(BIN / "torchrun"), "--master_port", str(port), *argv[1:]])
    raise AssertionError(f"not runnable here: {command}")


def _run_python(ws: Workspace, block: Block) -> tuple[int, str]:
    before, after = PYTHON_CONTEXT.get(block.first, ("", ""))
    code = ws.fill(before.format(**ws.values) + substitute(block.text) + "\n" + after)
    path = ws.root / f"readme_block_{block.line}.py"
    path.write_text(code)
    return ws.request({"python": str(path)})


def _load_data(ws: Workspace, block: Block):
    from sftgo.data import load_examples

    path = ws.root / f"readme_block_{block.line}.jsonl"
    path.write_text(block.text.strip() + "\n")
    ex = load_examples(str(path))
    rows = [json.loads(s) for s in block.text.splitlines() if s.strip()]
    assert len(ex) == len(rows), (len(ex), rows)
    keys = {k for r in rows for k in r} | {k for r in rows for m in r.get("messages", []) for k in m}
    assert keys <= DATA_FIELDS, f"README.md:{block.line}: fields sftgo does not read: {keys - DATA_FIELDS}"
    for row, e in zip(rows, ex):  # each weight / channel field the README shows is read, with its value
        assert e.get("weight") == row.get("weight") and e.get("channel") == row.get("channel"), (row, e)
        shown = [m.get("loss_weight") for m in row.get("messages", [])]
        assert e.get("loss_weights", [None] * len(shown)) == shown, (row, e)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind != "text"], ids=lambda b: f"line{b.line}-{b.kind}")
def test_readme_block_runs(ws, block):
    """The block runs as written (after SUBSTITUTIONS and ADDED_FLAGS), in README order, in one directory."""
    failures = []
    if block.kind == "python":
        rc, out = _run_python(ws, block)
        if rc:
            failures.append(f"README.md:{block.line}: python block failed (exit {rc}):\n{out[-4000:]}")
    elif block.kind == "data":
        _load_data(ws, block)
    elif block.kind == "commands":
        for line, command, reason in block.commands:
            if reason:
                failures += [f"README.md:{line}: {command}: {b}" for b in _check_not_run(ws, command)]
                continue
            rc, out = _run_command(ws, command)
            if rc:
                failures.append(f"README.md:{line}: `{command}` exited {rc}:\n{out[-4000:]}")
    else:
        pytest.fail(f"README.md:{block.line}: unclassified block")
    assert not failures, "\n\n".join(failures)
