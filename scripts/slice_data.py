"""Write rows [start, stop) of a JSON-array or JSONL dataset to a new file (train / held-out splits for experiments).

    python scripts/slice_data.py ../shared/data/alpaca_5000.json runs/cpu/data/alpaca_train.json --start 0 --stop 1000
"""

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int, required=True)
    a = p.parse_args()
    text = Path(a.src).read_text()
    rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    if not 0 <= a.start < a.stop <= len(rows):
        raise SystemExit(f"slice_data: [{a.start}, {a.stop}) is outside the {len(rows)} rows of {a.src}")
    out = Path(a.dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows[a.start:a.stop], ensure_ascii=False))
    print(f"{out}: rows {a.start}..{a.stop - 1} of {a.src}")


if __name__ == "__main__":
    main()
