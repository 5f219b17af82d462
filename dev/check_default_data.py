#!/usr/bin/env python3
"""Check ``src/sftgo/resources/default_sft.jsonl``, the built-in dataset (provenance: ``default_sft.md`` beside it).

Fails (exit 1, naming the line) on: a line that is not a JSON object with exactly the string fields
``instruction``, ``input``, ``output``; an empty instruction or output; a repeated (instruction, input) pair or
output; an output outside 15-70 words. Prints size statistics; ``--token-stats`` also counts tokens under the
SmolLM2-135M-Instruct chat template as ``sftgo`` renders the examples (needs the default model).

    python dev/check_default_data.py [--path FILE] [--token-stats]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "src" / "sftgo" / "resources" / "default_sft.jsonl"
KEYS = {"instruction", "input", "output"}
MIN_WORDS, MAX_WORDS = 15, 70


def check(path: Path) -> list[dict]:
    """The rows of ``path``; raises ValueError("path:line: problem") on the first problem."""
    rows, pairs, outputs = [], {}, {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(row, dict) or set(row) != KEYS or not all(isinstance(row[k], str) for k in KEYS):
            raise ValueError(f"{where}: expected a JSON object with exactly the string fields {sorted(KEYS)}")
        if not row["instruction"].strip() or not row["output"].strip():
            raise ValueError(f"{where}: empty instruction or output")
        n = len(row["output"].split())
        if not MIN_WORDS <= n <= MAX_WORDS:
            raise ValueError(f"{where}: output has {n} words, outside {MIN_WORDS}-{MAX_WORDS}")
        for seen, key, what in ((pairs, (row["instruction"], row["input"]), "(instruction, input)"),
                                (outputs, row["output"], "output")):
            if key in seen:
                raise ValueError(f"{where}: same {what} as line {seen[key]}")
            seen[key] = lineno
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, default=DEFAULT)
    ap.add_argument("--token-stats", action="store_true")
    args = ap.parse_args(argv)
    try:
        rows = check(args.path)
    except ValueError as e:
        print(f"check_default_data: {e}", file=sys.stderr)
        return 1
    words = [len(r["output"].split()) for r in rows]
    print(f"{args.path}: {len(rows)} examples ({sum(bool(r['input']) for r in rows)} with input), "
          f"output words mean {statistics.mean(words):.1f}, min {min(words)}, max {max(words)}")
    if args.token_stats:
        from sftgo.data import load_examples, tokenize_examples
        from sftgo.models import load_tokenizer

        data = tokenize_examples(load_examples(str(args.path)), load_tokenizer(None), 10_000)
        n = [len(x) for x in data.input_ids]
        print(f"SmolLM2 chat tokens: mean {statistics.mean(n):.1f}, max {max(n)}, <= 128: {sum(x <= 128 for x in n)}/{len(n)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
