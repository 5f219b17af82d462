"""Figures and tables from saved run artifacts (``metrics.jsonl``, ``summary.json``). Never imports the trainer."""

from __future__ import annotations

import json
from pathlib import Path


def plot_loss_groups(records: list[dict], path: str | Path, title: str = "") -> Path:
    """Overall / important / unimportant loss over optimizer steps (the SFT-GO paper's Figure 2)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on training nodes
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    series = [("loss_ce", "overall (mean CE)", "black"), ("loss_important", "important group", "tab:red"),
              ("loss_unimportant", "unimportant group", "tab:blue"), ("loss", "training objective", "tab:gray")]
    # Per-step losses are noisy at small batch sizes: draw each series faintly and its moving average on top.
    window = max(1, len(steps) // 10)
    for key, label, color in series:
        ys = [float("nan") if r.get(key) is None else float(r[key]) for r in records]
        if all(y != y for y in ys):  # all NaN: this objective does not log that series
            continue
        style = "--" if key == "loss" else "-"
        if window > 1:
            ax.plot(steps, ys, color=color, linestyle=style, linewidth=0.8, alpha=0.3)
        ax.plot(steps, moving_average(ys, window), label=label if window == 1 else f"{label} (avg {window})",
                color=color, linestyle=style, linewidth=1.6)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "loss by token group")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def moving_average(ys: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` finite values (NaN entries are skipped, not propagated)."""
    out = []
    for i in range(len(ys)):
        vals = [y for y in ys[max(0, i - window + 1): i + 1] if y == y]
        out.append(sum(vals) / len(vals) if vals else float("nan"))
    return out


def report_run(run_dir: str | Path) -> Path:
    """Re-draw ``loss_groups.png`` of a run directory from its ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{metrics} not found: is {run_dir} an sftgo run directory?")
    records = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
    summary = run_dir / "summary.json"
    title = ""
    if summary.exists():
        s = json.loads(summary.read_text())
        title = f"{s.get('objective', '')} / {s.get('scorer', '')}"
    return plot_loss_groups(records, run_dir / "loss_groups.png", title)
