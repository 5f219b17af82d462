"""Command line: ``sftgo train | score | eval | generate | sweep | report | recipes``. Heavy imports happen inside the commands."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from .errors import UserError

USAGE = """usage: sftgo <command> [options]

commands:
  train [config.yaml] [--flag value ...]   fine-tune (no arguments: the built-in SmolLM2 + SFT-GO demo)
  recipes [copy NAME [DEST]|path NAME]     the bundled recipes, a config by name (`sftgo train paper/NAME`)
  score --dataset D --scorer tfidf,...     token-importance heatmap (importance.html) and stats.json
  eval RUN_DIR|MODEL [--tasks paper|math|local:PATH|names] [--data_dir DIR] [--heldout DATA]
                                           benchmarks through lm-evaluation-harness, held-out group losses
  generate RUN... --prompts FILE           each run's answers to the same prompts (side by side in `sftgo report`)
  sweep CONFIG.yaml --grid k=v1,v2 --seeds 1,2,3 --output_dir SWEEP   train (and evaluate) a grid x seeds
  report RUN_OR_SWEEP... --output_dir OUT  tables and figures (report.md, report.html) over runs, mean ± std
  report RUN_DIR                           redraw loss_groups.png (and loss_channels.png) from a run's metrics.jsonl

`sftgo <command> --help` lists a command's options.
"""


TRAIN_HELP_FLAGS = ("-h", "--help", "--help_all")  # sftgo train prints its help and exits (sftgo.config)


# transformers imports `datasets` (with pandas and pyarrow) in its Trainer module and scipy in its object-detection
# losses (loaded with its model code) whenever they are installed: about 1 s of the ~5.5 s of CPU that every `sftgo
# train` process spends starting. sftgo's commands use neither through transformers: sftgo reads data itself and gives
# the Trainer its own torch datasets (a Hub or save_to_disk dataset imports `datasets` when sftgo reads it, which still
# works), and no language model loss needs scipy.
NOT_FOR_TRANSFORMERS = ("datasets", "scipy")
# A process without LoRA (`sftgo train --help`, the `sftgo sweep` process that plans, launches and waits, a training run
# without LoRA: train_may_need_peft) also has transformers skip peft, which it imports with TrainingArguments whenever
# it is installed (0.4 s of a run's start-up; 3-4 s of the help's 7 s of CPU). The help text is the same either way.
NOT_FOR_TRANSFORMERS_NO_PEFT = (*NOT_FOR_TRANSFORMERS, "peft")


def transformers_without(packages=NOT_FOR_TRANSFORMERS) -> None:
    """Make transformers treat ``packages`` as not installed, for this process only, without hiding them from anyone
    else: transformers asks once per process whether a package is installed (``is_<name>_available``, cached; some
    of them already while ``import transformers`` runs) and imports it only then. Import transformers while they are
    marked absent (``None`` in ``sys.modules``: ``find_spec`` answers None) and have it ask, then unmark them, so that a
    later ``import datasets`` (sftgo's own Hub reader, lm-evaluation-harness) loads them as usual. Only in the
    ``sftgo`` process itself (``main()`` without argv) and before transformers is loaded: a user's script that passes a
    ``datasets.Dataset`` to a Trainer needs transformers to know datasets."""
    if "transformers" in sys.modules:
        return  # it may have asked (and imported them) already: a different answer now would disagree
    marked = [p for p in packages if p not in sys.modules]
    for p in marked:
        sys.modules[p] = None
    try:
        from transformers.utils import import_utils

        for p in packages:
            getattr(import_utils, f"is_{p}_available")()
    finally:
        for p in marked:
            if sys.modules.get(p, 0) is None:
                del sys.modules[p]


# Words of a `sftgo train` command or config that may bring LoRA into the run (--lora_r, --merge_lora, --load_in_4bit;
# a resume takes the run's own config.yaml); the run then needs transformers to know peft.
PEFT_WORDS = ("lora", "4bit", "resume")


def train_may_need_peft(argv: list[str]) -> bool:
    """Whether a ``sftgo train ARGV`` run may need transformers to know peft, decided from its words before
    transformers is loaded (it imports peft with TrainingArguments when installed: ~0.4 s of CPU): a LoRA run's model
    is a PeftModel, and transformers loads a model folder's adapter itself when the folder also has a config.json.
    Conservative: yes for any word (or any word of the config file / bundled recipe) naming LoRA, 4-bit or a resume, a
    config file that is not a plain readable file (a pipe is read once, by the run), and any folder named that holds
    an adapter_config.json. A run that turns out to need peft without it stops (:func:`check_peft_for`)."""
    from pathlib import Path

    words = list(argv)
    if argv and not argv[0].startswith("-"):
        from .recipes import resolve_recipe

        try:
            path = resolve_recipe(argv[0])
            if not path.is_file():
                return True
            text = path.read_text()
        except (OSError, ValueError, UnicodeDecodeError):
            return True  # the run itself reports it
        words += text.split()
    for w in words:
        low = w.lower()
        if any(k in low for k in PEFT_WORDS):
            return True
        for cand in (w, w.strip("'\","), w.partition("=")[2]):  # --model_name_or_path=DIR too
            try:
                if cand and (Path(cand) / "adapter_config.json").is_file():
                    return True
            except (OSError, ValueError):
                continue
    return False


def check_peft_for(cfg) -> None:
    """The guard of :func:`train_may_need_peft`: a run with LoRA whose transformers was told there is no peft."""
    from transformers.utils import import_utils

    if cfg.lora_r and not import_utils.is_peft_available():
        if importlib.util.find_spec("peft") is not None:
            raise RuntimeError("internal: this LoRA run started without peft known to transformers "
                               "(sftgo.cli.train_may_need_peft missed it); please report it with the command")


def lean_start(cmd: str, rest: list[str]) -> None:
    """What the ``sftgo`` process of ``cmd`` has transformers skip (:func:`transformers_without`), before anything loads
    it: a run without LoRA and ``train --help`` all three, ``score`` / ``eval`` / ``generate`` datasets and scipy (they
    may load a LoRA folder), the ``sweep`` process all three; nothing for a help or ``sweep --status`` that never
    loads transformers, nor for the commands that never do (report, recipes)."""
    if cmd == "train":
        no_peft = set(TRAIN_HELP_FLAGS) & set(rest) or not train_may_need_peft(rest)
        transformers_without(NOT_FOR_TRANSFORMERS_NO_PEFT if no_peft else NOT_FOR_TRANSFORMERS)
    elif cmd in ("score", "eval", "generate") and not {"-h", "--help"} & set(rest):
        transformers_without()
    elif cmd == "sweep" and not {"-h", "--help", "--status"} & set(rest):  # those read no train settings
        transformers_without(NOT_FOR_TRANSFORMERS_NO_PEFT)


def main(argv: list[str] | None = None) -> int:
    entry_point = argv is None  # the sftgo process itself (console script, python -m sftgo.cli)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if entry_point:
            if cmd == "train":
                from . import startup_gc

                startup_gc.pause()  # resumed (start-up frozen) right before the first step: no full pass over imports
            lean_start(cmd, rest)
        if cmd == "train":
            from .config import parse_config
            from .launch import lone_process_warning
            from .pipeline import run_training

            if warning := lone_process_warning():
                logging.getLogger("sftgo").warning(warning)

            try:
                cfg = parse_config(rest)
                check_peft_for(cfg)
                from .pipeline import check_train_sources

                check_train_sources(cfg)  # offline: a Hub id fails now, in one line
                summary = run_training(cfg)
            except KeyboardInterrupt as e:
                return interrupted(rest, getattr(e, "step", None))
            if summary:
                print(f"done: {summary['steps']} steps, train {summary['train_time_s']} s, run directory {cfg.output_dir}")
            return 0
        if cmd == "score":
            from .score_cmd import main as score_main

            return score_main(rest)
        if cmd == "eval":
            from .evaluation.run import main as eval_main

            return eval_main(rest)
        if cmd == "generate":
            from .generate import main as generate_main

            return generate_main(rest)
        if cmd == "sweep":
            from .sweep import main as sweep_main

            return sweep_main(rest)
        if cmd == "report":
            return report_main(rest)
        if cmd == "recipes":
            from .recipes import main as recipes_main

            return recipes_main(rest)
    except (UserError, FileNotFoundError) as e:
        # ConfigError, DataError, ModelLoadError, SweepError, TaskError (and TrainingArguments' validation errors,
        # turned into ConfigError by parse_config): one line naming the field/file and the fix; SFTGO_DEBUG=1 shows
        # the traceback. Anything else is a bug and keeps its traceback and cause.
        if os.environ.get("SFTGO_DEBUG"):
            raise
        print(f"sftgo {cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C before a command handles it itself (the imports of its first seconds, parsing): one line, not the
        # import machinery's traceback. `train` says how to start the run again, as it does once training began.
        if cmd == "train":
            return interrupted(rest, None)
        print(f"sftgo {cmd}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`sftgo recipes | head`): stop quietly, as `ls | head` does. stdout points at
        # /dev/null so that the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's status for a command ended by a closed pipe
    print(f"sftgo: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def resume_command(argv: list[str]) -> str:
    """The shell command that continues this `sftgo train` run: its arguments with ``--resume_from_checkpoint last``
    (replacing any other value), run the way this process was (``sftgo``, ``python -m sftgo.cli`` or torchrun)."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--resume_from_checkpoint", "--resume-from-checkpoint"):
            skip = True
        elif not a.startswith(("--resume_from_checkpoint=", "--resume-from-checkpoint=")):
            args.append(a)
    return _train_command([*args, "--resume_from_checkpoint", "last"])


def _train_command(args: list[str]) -> str:
    """``sftgo train ARGS`` as this process was started (see :func:`_program`), shell-quoted."""
    import shlex

    return " ".join([*_program(), "train", *map(shlex.quote, args)])


def _program() -> list[str]:
    """How this process was started, as a command to type (already shell-quoted words)."""
    import shlex
    import shutil
    from pathlib import Path

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and os.environ.get("TORCHELASTIC_RUN_ID"):
        return ["torchrun", "--nproc_per_node", shlex.quote(os.environ.get("LOCAL_WORLD_SIZE", str(world))), "-m",
                "sftgo.cli"]
    arg0 = sys.argv[0] if sys.argv else ""
    if Path(arg0).name == "sftgo":  # the console script
        found = shutil.which("sftgo")
        same = found is not None and Path(found).resolve() == Path(arg0).resolve()
        return ["sftgo" if same else shlex.quote(arg0)]
    return [shlex.quote(sys.executable), "-m", "sftgo.cli"]


def interrupted(argv: list[str], step: int | None) -> int:
    """Ctrl-C: one line saying how to continue (process 0 only), exit status 130. A second Ctrl-C from here on ends
    the process at once, without a traceback."""
    import signal
    import threading

    from tqdm import tqdm

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()  # a progress bar left open would share the line
    if int(os.environ.get("RANK", "0") or 0) == 0:
        if step is None:
            print(f"interrupted before training began; run again with: {_train_command(argv)}", file=sys.stderr,
                  flush=True)
        else:
            print(f"interrupted at step {step}; resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
    return 130


def report_main(argv: list[str]) -> int:
    from .cliargs import ArgumentParser

    p = ArgumentParser(prog="sftgo report", description="Tables and figures from run directories: with "
                                "--output_dir, OUT/report.md, OUT/report.html (self-contained) and OUT/report.json "
                                "over every run given (sweep directories are expanded); with one run and no "
                                "--output_dir, redraw RUN/loss_groups.png (and RUN/loss_channels.png when the run logged "
                                "per-channel losses).")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_DIR")
    p.add_argument("--output_dir", help="where report.md / report.html go (default for one sweep directory: SWEEP/report)")
    p.add_argument("--domain_suite", help="eval suite that measures the training domain for learn-vs-forget "
                   "(default: math when present); the other suites count as general")
    p.add_argument("--capacity", metavar="KEY", help="results by model capacity: KEY of each run's config.yaml "
                   "(lora_r) or of its model's config.json (hidden_size); adds group losses, the paired difference "
                   "from plain SFT per seed (table and figure, KEY on the x axis) and the end-of-run training loss")
    a = p.parse_args(argv)
    from pathlib import Path

    from .report import build_report, report_run
    from .rundir import CONFIG, METRICS

    single_run = len(a.paths) == 1 and (Path(a.paths[0]) / CONFIG).exists()
    if a.output_dir is None:
        if single_run or (len(a.paths) == 1 and (Path(a.paths[0]) / METRICS).exists()):
            print(report_run(a.paths[0]))
            return 0
        if len(a.paths) != 1:
            raise ValueError("several directories given: pass --output_dir OUT for the combined report")
        a.output_dir = str(Path(a.paths[0]) / "report")
    paths = build_report(a.paths, a.output_dir, domain_suite=a.domain_suite, capacity=a.capacity)
    if single_run and (Path(a.paths[0]) / METRICS).exists():
        report_run(a.paths[0])
    print(f"wrote {paths['md']} and {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
