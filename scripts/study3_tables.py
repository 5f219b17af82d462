"""Tables (markdown) and the training-curve figure of CPU study 3 (docs/study3/README.md), read from run directories.

    python scripts/study3_tables.py prop1 runs/study3/prop1 [--figure docs/study3/prop1_training_loss.png]
    python scripts/study3_tables.py combine runs/study3/combine

A run directory is `<method>_s<seed>/` with `metrics.jsonl` (one line per step) and `eval/heldout-<set>.json` (from
`sftgo eval RUN --heldout FILE`). Cells are mean ± sample std over the seeds present; "paired" columns are the
per-seed differences between two methods (same seed, same data order).
"""

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

RUN_RE = re.compile(r"^(?P<method>.+)_s(?P<seed>\d+)$")


def runs_by_method(root: Path) -> dict[str, dict[int, Path]]:
    out: dict[str, dict[int, Path]] = defaultdict(dict)
    for d in sorted(root.iterdir()):
        m = RUN_RE.match(d.name)
        if d.is_dir() and m and (d / "summary.json").is_file():
            out[m["method"]][int(m["seed"])] = d
    return out


def held(run: Path, name: str) -> dict | None:
    """A run's `eval/heldout-<name>.json`; for a model evaluated with --output_dir DIR, `DIR/heldout-<name>.json`."""
    for f in (run / "eval" / f"heldout-{name}.json", run / f"heldout-{name}.json"):
        if f.is_file():
            return json.loads(f.read_text())
    return None


def fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def signed(values: list[float], digits: int = 4) -> str:
    return " / ".join(f"{v:+.{digits}f}" for v in values) or "–"


def wall_times(runs: dict[str, dict[int, Path]], sets: tuple[str, ...]) -> None:
    """Per method: each run's training wall time (summary.json) and its evaluations' (eval/heldout-<set>.json)."""
    print("\nwall time per run (training s + evaluation s):")
    for m, by_seed in runs.items():
        cells = []
        for s, run in sorted(by_seed.items()):
            train = json.loads((run / "summary.json").read_text()).get("wall_time_s", 0.0)
            ev = sum((held(run, k) or {}).get("wall_time_s", 0.0) for k in sets)
            cells.append(f"s{s} {train:.0f} + {ev:.0f}")
        print(f"- {m}: " + ", ".join(cells))


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def epoch_means(run: Path, key: str) -> list[float]:
    """Mean of a per-step training metric over each epoch (steps grouped by the logged `epoch`, ceil)."""
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for row in metrics(run):
        if key in row and "epoch" in row:
            by_epoch[max(1, -int(-float(row["epoch"]) // 1))].append(float(row[key]))
    return [statistics.mean(by_epoch[e]) for e in sorted(by_epoch)]


def prop1(root: Path, figure: Path | None) -> None:
    runs = runs_by_method(root)
    seeds = sorted(set(runs.get("sft", {})) & set(runs.get("sft-go", {})))
    print(f"runs: {', '.join(f'{m} seeds {sorted(s)}' for m, s in runs.items())}\n")
    for split, title in (("train", "its own training rows"), ("heldout", "held-out rows 4800-4999")):
        print(f"**Worst-group loss on {title}** (TF-IDF groups, eta 90; mean ± std over seeds)\n")
        print("| method | CE (all tokens) | important | unimportant | worst group | paired worst, SFT-GO - SFT |")
        print("|---|---|---|---|---|---|")
        if b := held(root / "base", split):
            cells = [f"{b[k]:.4f}" for k in ("loss_ce", "loss_important", "loss_unimportant", "loss_worst")]
            print(f"| base model | {' | '.join(cells)} | – |")
        for method in ("sft", "sft-go"):
            rs = [held(runs[method][s], split) for s in sorted(runs.get(method, {}))]
            rs = [r for r in rs if r]
            diff = ""
            if method == "sft-go":
                pairs = [(held(runs["sft-go"][s], split), held(runs["sft"][s], split)) for s in seeds]
                diff = signed([a["loss_worst"] - b["loss_worst"] for a, b in pairs if a and b])
            cells = [fmt([r[k] for r in rs]) for k in ("loss_ce", "loss_important", "loss_unimportant", "loss_worst")]
            print(f"| {method} | {' | '.join(cells)} | {diff or '–'} |")
        worst_group = {r["loss_important"] >= r["loss_unimportant"]
                       for m in runs for s in runs[m] if (r := held(runs[m][s], split))}
        print(f"\n(worst group = {'important' if worst_group == {True} else 'unimportant' if worst_group == {False} else 'mixed'})\n")
    print("**Training curve: mean per-step CE over each epoch (mean over seeds)**\n")
    curves = {m: [epoch_means(runs[m][s], "loss_ce") for s in sorted(runs[m])] for m in ("sft", "sft-go") if m in runs}
    n = min((len(c) for cs in curves.values() for c in cs), default=0)
    print("| method | " + " | ".join(f"epoch {e + 1}" for e in range(n)) + " |")
    print("|---|" + "---|" * n)
    for m, cs in curves.items():
        print(f"| {m} | " + " | ".join(f"{statistics.mean(c[e] for c in cs):.3f}" for e in range(n)) + " |")
    for key in ("loss", "loss_important", "loss_unimportant"):
        what = "the objective (SFT-GO's loss for sft-go)" if key == "loss" else key
        print(f"\n{what}, per epoch (mean over seeds):\n")
        for m in curves:
            cs = [epoch_means(runs[m][s], key) for s in sorted(runs[m])]
            print(f"- {m}: " + ", ".join(f"{statistics.mean(c[e] for c in cs):.3f}" for e in range(n)))
    wall_times(runs, ("train", "heldout"))
    if figure:
        draw(runs, figure)


def draw(runs: dict[str, dict[int, Path]], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    colors = {"sft": "tab:blue", "sft-go": "tab:red"}
    for ax, key, title in zip(axes, ("loss_ce", "loss_important", "loss_unimportant"),
                              ("all tokens (CE)", "important tokens", "unimportant tokens")):
        for m, color in colors.items():
            for i, (seed, run) in enumerate(sorted(runs.get(m, {}).items())):
                rows = [r for r in metrics(run) if key in r]
                x = [float(r["epoch"]) for r in rows]
                ax.plot(x, [float(r[key]) for r in rows], color=color, alpha=0.15, lw=0.8)
                em = epoch_means(run, key)
                ax.plot([e + 0.5 for e in range(len(em))], em, color=color, marker="o", ms=3, lw=1.2,
                        label=m if i == 0 else None)
        ax.set_title(f"training loss, {title}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("CE, nats / token")
    fig.suptitle("faint: per step; dots: epoch means; one line per seed", fontsize=9)
    axes[0].legend()
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    print(f"\nwrote {figure}")


def combine(root: Path) -> None:
    runs = runs_by_method(root)
    base = {s: held(root / "base", f"heldout_{s}") for s in ("gsm8k", "alpaca")}
    order = [m for m in ("sft", "sft-go", "infosft", "sft-go_tw-infosft", "eaft", "sft-go_tw-eaft") if m in runs]
    print(f"runs: {', '.join(f'{m} seeds {sorted(runs[m])}' for m in order)}\n")
    print("| method | held-out GSM8K CE (learn, lower better) | held-out Alpaca CE (forget: higher = forgot more) "
          "| GSM8K worst group | Alpaca worst group | seeds |")
    print("|---|---|---|---|---|---|")
    if all(base.values()):
        print(f"| base model | {base['gsm8k']['loss_ce']:.4f} | {base['alpaca']['loss_ce']:.4f} "
              f"| {base['gsm8k']['loss_worst']:.4f} | {base['alpaca']['loss_worst']:.4f} | – |")
    for m in order:
        ev = {s: (held(r, "heldout_gsm8k"), held(r, "heldout_alpaca")) for s, r in sorted(runs[m].items())}
        ev = {s: v for s, v in ev.items() if v[0] and v[1]}
        cells = [fmt([v[i][k] for v in ev.values()]) for k in ("loss_ce",) for i in (0, 1)]
        cells += [fmt([v[i]["loss_worst"] for v in ev.values()]) for i in (0, 1)]
        print(f"| {m} | {' | '.join(cells)} | {', '.join(map(str, ev))} |")
    for combo, parts in (("sft-go_tw-infosft", ("sft-go", "infosft")), ("sft-go_tw-eaft", ("sft-go", "eaft"))):
        if combo not in runs:
            continue
        print(f"\n**{combo} minus each part, paired by seed** (negative learn = learned more; negative forget = "
              "forgot less)\n")
        print("| vs | learn: GSM8K CE difference per seed | forget: Alpaca CE difference per seed |")
        print("|---|---|---|")
        for part in parts:
            seeds = sorted(set(runs[combo]) & set(runs.get(part, {})))
            d = {k: [] for k in ("heldout_gsm8k", "heldout_alpaca")}
            for s in seeds:
                for k in d:
                    a, b = held(runs[combo][s], k), held(runs[part][s], k)
                    if a and b:
                        d[k].append(a["loss_ce"] - b["loss_ce"])
            print(f"| {part} | {signed(d['heldout_gsm8k'])} | {signed(d['heldout_alpaca'])} |")
    wall_times({m: runs[m] for m in order}, ("heldout_gsm8k", "heldout_alpaca"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["prop1", "combine"])
    p.add_argument("root", type=Path)
    p.add_argument("--figure", type=Path, help="prop1: write the training-curve figure here")
    a = p.parse_args()
    prop1(a.root, a.figure) if a.part == "prop1" else combine(a.root)


if __name__ == "__main__":
    main()
