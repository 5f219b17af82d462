"""The figures sftgo draws (every training run writes loss_groups.png; every report several): laid out by
``tight_layout`` and then saved with a layout engine still on the figure (savefig then draws it once more, without
rendering, to lay it out again) vs ``sftgo.report.figures.tight`` (the same layout, no engine left: one draw per
save). Side by side in one process, interleaved; prints the median CPU seconds per figure of each, their ratio, and
whether the PNG files are byte-identical.

    python benchmarks/bench_figures.py --rounds 15      # ~15 s on one core
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=30, help="logged steps in the figure (make demo: 30)")
    a = ap.parse_args(argv)

    from sftgo.report import figures

    recs = [{"step": s, "loss": 5 - s / 20, "loss_ce": 5 - s / 25, "loss_important": 5.5 - s / 22,
             "loss_unimportant": 4.8 - s / 30} for s in range(1, a.steps + 1)]
    variants = {"tight_layout, engine left on the figure (before)": lambda fig: fig.tight_layout(),
                "figures.tight (now)": figures.tight}
    real = figures.tight
    times: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: Path(tmp) / f"{i}.png" for i, k in enumerate(variants)}
        for k, fn in variants.items():  # warm-up: matplotlib's imports, font cache
            figures.tight = fn
            figures.plot_loss_groups(recs, paths[k])
        for _ in range(a.rounds):
            for k, fn in variants.items():
                figures.tight = fn
                t = time.process_time()
                figures.plot_loss_groups(recs, paths[k])
                times[k].append(time.process_time() - t)
        figures.tight = real
        same = len({p.read_bytes() for p in paths.values()}) == 1
    med = {k: statistics.median(v) for k, v in times.items()}
    before, now = med.values()
    for k, m in med.items():
        print(f"{k:50s} {m * 1000:7.1f} ms CPU per figure (median of {a.rounds})")
    print(f"now / before: {now / before:.2f}; PNG byte-identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
