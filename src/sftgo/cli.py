"""Command line: ``sftgo train | score | eval | report``. Heavy imports happen inside the commands."""

from __future__ import annotations

import logging
import os
import sys

USAGE = """usage: sftgo <command> [options]

commands:
  train [config.yaml] [--flag value ...]   fine-tune (no arguments: the built-in SmolLM2 + SFT-GO demo)
  score --dataset D --scorer tfidf,...     token-importance heatmap (importance.html) and stats.json
  eval RUN_DIR|MODEL [--tasks paper|math|local:PATH|names] [--data_dir DIR] [--heldout DATA]
                                           benchmarks through lm-evaluation-harness, held-out group losses
  report RUN_DIR                           redraw loss_groups.png from a run's metrics.jsonl

`sftgo <command> --help` lists a command's options.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if cmd == "train":
            from .config import parse_config
            from .pipeline import run_training

            cfg = parse_config(rest)
            summary = run_training(cfg)
            if summary:
                print(f"done: {summary['steps']} steps, train {summary['train_time_s']} s, run directory {cfg.output_dir}")
            return 0
        if cmd == "score":
            from .score_cmd import main as score_main

            return score_main(rest)
        if cmd == "eval":
            try:
                import lm_eval  # noqa: F401
            except ImportError:
                print("sftgo eval: error: lm-evaluation-harness is not installed; pip install 'sftgo[eval]'", file=sys.stderr)
                return 2
            from .evaluation.run import main as eval_main

            return eval_main(rest)
        if cmd == "report":
            from .report import report_run

            if len(rest) != 1:
                print("usage: sftgo report RUN_DIR", file=sys.stderr)
                return 2
            print(report_run(rest[0]))
            return 0
    except (ValueError, FileNotFoundError) as e:
        # ConfigError, DataError and ModelLoadError are ValueErrors; so are TrainingArguments' validation errors.
        # A user mistake gets one line naming the field/file and the fix; SFTGO_DEBUG=1 shows the traceback.
        if os.environ.get("SFTGO_DEBUG"):
            raise
        print(f"sftgo {cmd}: error: {e}", file=sys.stderr)
        return 2
    print(f"sftgo: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
