"""`sftgo sweep`: a grid of settings x seeds, each run trained (and evaluated) in its own process — up to N at once on
this machine (``--slots N``), or as SLURM jobs (``--executor slurm``).

    sftgo sweep CONFIG.yaml --grid percentile=55,70,90 --grid lam=0.9 --seeds 1,2,3 \
        --baseline objective=sft --eval paper --heldout heldout.json --output_dir SWEEP

One run directory per grid point and seed with a readable name (``SWEEP/sft-go_tfidf_p70_lam0.9_s2``). Baseline
settings (``--baseline objective=sft``) run once per seed, not per grid point. ``SWEEP/sweep.json`` records every run
(state, SLURM job id or pid, exit codes). Re-running the same command continues the sweep: complete runs are skipped,
interrupted runs resume from their last complete checkpoint, evaluations of an older training are redone, SLURM jobs
still queued or running are attached to, not submitted again. Each training is a subprocess (``python -m sftgo.cli
train``; ``--launcher "torchrun --nproc_per_node 8"`` / ``"accelerate launch ..."``), so one crash does not stop the
sweep; each evaluation is ``sftgo eval RUN --tasks ... [--heldout DATA]`` (or ``--eval_cmd``).

A sweep file (YAML) holds the same options: ``config`` (a train YAML, relative to the sweep file, or a bundled
recipe by name: ``paper/llama32_3b_alpaca_sft``), ``set`` (settings for every run), ``grid`` (key: [values]),
``variants`` (a list, each a mapping of settings or a train YAML, crossed with the grid), ``baseline`` (mapping or
train YAML), ``seeds``, ``eval``, ``heldout``, ``eval_args``, ``launcher``,
``select``, ``select_steps``, ``output_dir``, ``executor``, ``slots``, ``gpus_per_run``, ``slurm`` (a mapping:
partition, time_min, gpus_per_node, cpus_per_task, mem_gb, account, qos, array_parallelism, setup). ``extends``
(another sweep file, relative to this one, or a bundled sweep by name) starts from that file: ``set``, ``grid`` and
``slurm`` merge key by key, other keys replace its own. Command-line options override it.

``--select heldout_worst --select_steps K`` first trains every grid point (first seed) for K steps under the full
budget's schedule, evaluates held-out group losses, and continues only the point with the lowest held-out worst-group
loss (and the baseline) to the full budget over all seeds.

Layout: :mod:`.spec` (options -> Spec), :mod:`.plan` (Spec -> runs; pure), :mod:`.status` (a run's status from its
directory; pure), :mod:`.work` (one run's train + evaluate, what a slot or a job runs), :mod:`.executors` (one
interface; one module each: local slots, SLURM via submitit), :mod:`.core` (the sweep: phases, its one processing
loop, selection, sweep.json, --status).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys

from ..cliargs import is_number as _is_number
from ..naming import point_of, run_name
from .core import POLL_S, Sweep, print_status, sweep_status
from .plan import RunPlan, plan_runs, point_name, selection_runs
from .spec import EXECUTORS, SELECTORS, SLURM_KEYS, Spec, SweepError, is_sweep_file, load_spec
from .status import run_status

__all__ = ["Spec", "SweepError", "RunPlan", "Sweep", "build_parser", "is_sweep_file", "load_spec", "main",
           "plan_runs", "point_name", "point_of", "print_status", "run_name", "run_status", "selection_runs",
           "sweep_status"]


def build_parser() -> argparse.ArgumentParser:
    from ..cliargs import ArgumentParser

    p = ArgumentParser(
        prog="sftgo sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 2)[0] + "\n\nOther --flags are passed to every `sftgo train`.",
        epilog="Re-run the same command to continue an interrupted sweep.")
    p.add_argument("config", nargs="?", help="train YAML (shared settings) or a sweep file")
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="a setting and its values; repeat for a product")
    p.add_argument("--variant", action="append", metavar="'K=V K2=V2'",
                   help="a bundle of settings (e.g. 'scorer=llmlingua2 percentile=70'); variants are crossed with the grid")
    p.add_argument("--seeds", help="comma-separated seeds (default 1)")
    p.add_argument("--baseline", nargs="+", metavar="KEY=VALUE", help="settings of a baseline run once per seed (e.g. objective=sft)")
    p.add_argument("--eval", metavar="TASKS", help="evaluate each run: `sftgo eval RUN --tasks TASKS`")
    p.add_argument("--heldout", metavar="DATA", help="held-out data for group losses: `sftgo eval RUN --heldout DATA`")
    p.add_argument("--eval_args", help="extra arguments for `sftgo eval`, quoted (e.g. \"--data_dir ../shared/data --limit 50\")")
    p.add_argument("--eval_cmd", help="your own evaluation command instead of `sftgo eval`; {run_dir}, {tasks} and "
                   "{heldout} are substituted; it writes RUN/eval/<suite>.json")
    p.add_argument("--launcher", help="prefix for multi-GPU training, e.g. \"torchrun --nproc_per_node 8\" or "
                   "\"accelerate launch --config_file F\" (the sweep appends `-m sftgo.cli train ...`)")
    p.add_argument("--select", choices=SELECTORS, help="choose one grid point by held-out worst-group loss after "
                   "--select_steps, then train only it (and the baseline) to the full budget over all seeds")
    p.add_argument("--select_steps", type=int, help="short budget (optimizer steps) per grid point for --select")
    p.add_argument("--output_dir", help="sweep directory (run directories, sweep.json, logs/, configs/)")
    p.add_argument("--prune_checkpoints", action="store_true", default=None,
                   help="the same as --keep_checkpoints none (sftgo train's default) for every run: a complete run "
                   "keeps final/ and its evaluation, no checkpoint-*/; a finished sweep run again applies it to "
                   "its complete runs (so does --keep_checkpoints last|none)")
    p.add_argument("--dry_run", action="store_true", help="print the runs and their state; train nothing")
    g = p.add_argument_group("where runs go")
    g.add_argument("--executor", choices=EXECUTORS, help="; ".join(
        f"{k}{' (default)' if k == Spec.executor else ''}: {x.help}" for k, x in EXECUTORS.items()))
    g.add_argument("--slots", type=int, help="local: runs at once (default 1); each slot gets its own GPUs or its "
                   "share of the CPU threads")
    g.add_argument("--gpus_per_run", type=int, help="local: GPUs per run (default 1 when GPUs are visible, else 0: "
                   "CPU); a run with K > 1 starts K processes (torchrun) inside its slot")
    g.add_argument("--detach", action="store_true", help="slurm: submit and return; the same command again attaches "
                   "to the jobs still queued or running")
    g.add_argument("--status", metavar="SWEEP", help="print every run's state (queued / running / done / failed), "
                   "SLURM job id and last step, and exit")
    g.add_argument("--poll_s", type=float, default=POLL_S, help="slurm: seconds between squeue calls while waiting")
    for k, t in SLURM_KEYS.items():
        helps = {"partition": "partition (sbatch --partition)", "time_min": "time limit per job in minutes "
                 "(default 1440); a run that reaches it is requeued and resumes", "gpus_per_node": "GPUs per run (a "
                 "run with K > 1 starts torchrun inside its job)", "cpus_per_task": "CPUs per run",
                 "mem_gb": "memory per run in GB (sbatch --mem; needed where memory is a consumable resource)",
                 "account": "account to charge", "qos": "quality of service",
                 "array_parallelism": "jobs of one submission running at once (job array %%N)",
                 "setup": "a shell line run first in each job (e.g. 'module load cuda'); repeat for several"}
        g.add_argument(f"--slurm_{k}", type=t if t is not list else str, action="append" if t is list else None,
                       help=helps[k])
    return p


def split_argv(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Sweep options vs. `sftgo train` flags (each --flag with the values that follow it). argparse's
    parse_known_args would take an unknown flag's value for the positional CONFIG. A single-value sweep option takes
    the next token whatever it looks like (``--eval_args "--limit 50"``)."""
    single = {o for a in parser._actions if a.nargs is None and a.option_strings for o in a.option_strings}
    known = {o for a in parser._actions for o in a.option_strings}
    mine, train, target = [], [], None
    it = iter(argv)
    for tok in it:
        name = tok.split("=", 1)[0]
        if tok.startswith("-") and not _is_number(tok):
            if name in single and "=" not in tok:
                val = next(it, None)
                mine.append(tok if val is None else f"{tok}={val}")
                target = None
                continue
            target = mine if name in known else train
            target.append(tok)
        elif target is None:
            mine.append(tok)  # the positional CONFIG
        else:
            target.append(tok)
    return mine, train


def main(argv: list[str]) -> int:
    parser = build_parser()
    mine, train = split_argv(parser, argv)
    args = parser.parse_args(mine)
    args.train_args = train
    args.sweep_flags = tuple(parser.long_flags())  # suggested for a typo beside the train flags (spec.validate_spec)
    if args.status:
        return print_status(args.status)
    spec = load_spec(args.config, args)
    sweep = Sweep(spec, poll_s=args.poll_s, detach=args.detach)
    sweep.command = shlex.join(["sftgo", "sweep", *argv])

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        return sweep.run(dry_run=args.dry_run)
    except KeyboardInterrupt:
        note = EXECUTORS[spec.executor].interrupted_note
        print(f"sweep: interrupted; run the same command again to continue (state in {sweep.state_file})"
              + (f"; {note}" if note else ""), file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
