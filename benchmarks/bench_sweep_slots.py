"""Wall time of the same 4-run CPU sweep with `--slots 2` and with `--slots 1`, side by side in one invocation.

The sweep: a tiny Llama (tests/conftest.py's, built here), objective sft and sft-go x seeds 1, 2, each run one thread
(OMP_NUM_THREADS=1), no evaluation. Each measurement is a fresh `sftgo sweep` process in a fresh directory (the
tokenized / score caches are warmed once first, so neither side pays for them); rounds alternate the order
(1, 2, then 2, 1, ...). Prints each wall time, the medians, the ratio slots-2 / slots-1, and the largest weight
difference between the two sides' final models (the same runs: it must be 0).

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep_slots.py --steps 40 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(tmp: Path) -> tuple[str, str]:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import EXAMPLES, build_tiny_model, build_tokenizer

    tok = build_tokenizer(chat=True)
    model_dir = tmp / "model"
    build_tiny_model(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES))
    return str(model_dir), str(data)


def sweep(out: Path, slots: int, model: str, data: str, cache: Path, steps: int) -> float:
    cmd = [sys.executable, "-m", "sftgo.cli", "sweep", "--grid", "objective=sft,sft-go", "--seeds", "1,2",
           "--slots", str(slots), "--output_dir", str(out), "--model_name_or_path", model, "--dataset", data,
           "--max_steps", str(steps), "--save_steps", str(steps), "--per_device_train_batch_size", "2",
           "--max_length", "64", "--score_cache_dir", str(cache), "--report_to", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"sweep failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return took


def max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    worst = 0.0
    for run in sorted(p.name for p in a.iterdir() if (p / "final").is_dir()):
        x, y = load_file(a / run / "final" / "model.safetensors"), load_file(b / run / "final" / "model.safetensors")
        worst = max(worst, max(float((x[k] - y[k]).abs().max()) for k in x))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model, data = setup(tmp)
        cache = tmp / "cache"
        sweep(tmp / "warm", 1, model, data, cache, 1)  # fills the tokenized and score caches
        times = {1: [], 2: []}
        last = {}
        for i in range(a.rounds):
            for slots in ((1, 2) if i % 2 == 0 else (2, 1)):
                out = tmp / f"r{i}_slots{slots}"
                times[slots].append(sweep(out, slots, model, data, cache, a.steps))
                last[slots] = out
                print(f"round {i + 1}: --slots {slots}: {times[slots][-1]:.1f} s", flush=True)
        m1, m2 = statistics.median(times[1]), statistics.median(times[2])
        print(f"cpus {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}")
        print(f"4 runs x {a.steps} steps, one thread per run: --slots 1 median {m1:.1f} s, --slots 2 median {m2:.1f} s")
        print(f"ratio slots-2 / slots-1: {m2 / m1:.3f} (speed-up {m1 / m2:.2f}x)")
        print(f"largest final-weight difference between the two sides: {max_weight_diff(last[1], last[2]):.3g}")


if __name__ == "__main__":
    main()
