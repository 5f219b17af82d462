"""Figures from saved run artifacts (``metrics.jsonl``, ``eval/*.json``), drawn headless with matplotlib."""

from __future__ import annotations

from pathlib import Path


def tight(fig) -> None:
    """``fig.tight_layout()`` once, and no layout engine left on the figure: with one left (tight_layout leaves a
    placeholder), every ``savefig`` first draws the whole figure once more without rendering, to lay it out again.
    The PNG is byte-identical; each figure costs 15-20% less CPU (benchmarks/bench_figures.py), paid by every
    training run (loss_groups.png) and every report."""
    fig.tight_layout()
    fig.set_layout_engine(None)  # None (rc figure.autolayout / constrained_layout.use off): no engine; "none" keeps one


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
    tight(fig)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _dots(steps) -> dict:
    """Marker settings for a line: small dots when it has few points (a single point draws no line at all)."""
    return {"marker": "o", "markersize": 3} if len(steps) <= 30 else {}


def channel_names(records: list[dict], prefix: str = "loss/") -> list[str]:
    """The channels a run logged (``loss/<channel>`` keys of its metrics records), in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        for k in r:
            if k.startswith(prefix):
                seen.setdefault(k[len(prefix):], None)
    return list(seen)


def plot_channel_losses(records: list[dict], path: str | Path, title: str = "") -> Path | None:
    """One training-loss curve per channel (``loss/<channel>``: the weighted mean CE over the channel's tokens of
    each logging step), held-out ``eval_loss/<channel>`` dashed in the same color when logged. None (and no file)
    when the run has no channels."""
    names = channel_names(records)
    evals = channel_names(records, "eval_loss/")
    if not names and not evals:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    cmap = plt.get_cmap("tab10" if len(names + evals) <= 10 else "tab20")
    colors = {}
    for key, style in (("loss/", "-"), ("eval_loss/", "--")):
        for ch in (names if key == "loss/" else evals):
            pts = [(r["step"], float(r[key + ch])) for r in records if isinstance(r.get(key + ch), (int, float))]
            if not pts:
                continue
            color = colors.setdefault(ch, cmap(len(colors) % cmap.N))
            steps, ys = zip(*pts)
            window = max(1, len(steps) // 10) if key == "loss/" else 1
            if window > 1:
                ax.plot(steps, ys, color=color, linestyle=style, linewidth=0.8, alpha=0.3)
            label = ch if key == "loss/" else f"{ch} (held-out)"
            ax.plot(steps, moving_average(list(ys), window), color=color, linestyle=style, linewidth=1.6,
                    label=label if window == 1 else f"{label} (avg {window})", **_dots(steps))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "loss per channel")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if len(colors) > 8 else 9)
    tight(fig)
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


# --------------------------------------------------------------------------------------------- multi-run figures

GROUP_SERIES = [("loss_ce", "overall", "black"), ("loss_important", "important", "tab:red"),
                ("loss_unimportant", "unimportant", "tab:blue")]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def seed_band(runs_records: list[list[dict]], key: str, window: int | None = None):
    """Mean and std over seeds of a metric, per step present in every seed that logged it (each seed's series
    smoothed by a trailing moving average first, so the band shows the seed spread, not step noise)."""
    import math

    per_run = []
    for recs in runs_records:
        pts = [(r["step"], float(r[key])) for r in recs if isinstance(r.get(key), (int, float)) and "step" in r]
        if pts:
            w = window or max(1, len(pts) // 20)
            steps, ys = zip(*pts)
            per_run.append(dict(zip(steps, moving_average(list(ys), w))))
    if not per_run:
        return [], [], []
    steps = sorted(set.intersection(*(set(d) for d in per_run)))
    means, stds = [], []
    for s in steps:
        vals = [d[s] for d in per_run]
        m = sum(vals) / len(vals)
        means.append(m)
        stds.append(math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)
    return steps, means, stds


def plot_group_losses(groups, series=GROUP_SERIES, title="Training loss by token group") -> bytes | None:
    """Figure 2 style: one panel per method, each series the mean over seeds with a ±1 std band."""
    panels = []
    for g in groups:
        recs = [r.metrics for r in g.runs if r.metrics]
        lines = [(label, color, *seed_band(recs, key)) for key, label, color in series]
        lines = [ln for ln in lines if ln[2]]
        if lines:
            panels.append((g, len(recs), lines))
    if not panels:
        return None
    plt = _pyplot()
    ncols = min(3, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), dpi=110, squeeze=False, sharey=True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (g, n, lines) in zip(axes.flat, panels):
        for label, color, steps, mean, std in lines:
            # dots on short series: a per-channel curve may have a point at only some steps (or one)
            ax.plot(steps, mean, color=color, label=label, linewidth=1.5, **_dots(steps))
            if n > 1:
                ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=color, alpha=0.18, linewidth=0)
        ax.set_title(f"{g.label} ({n} seed{'s' if n != 1 else ''})", fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("cross-entropy (nats/token)")
    fig.suptitle(title, fontsize=11)
    tight(fig)
    return _png(fig)


def channel_series(groups) -> list[tuple[str, str, str]]:
    """The per-channel training losses any run logged (``loss/<channel>``), as plot series (key, label, color)."""
    names: dict[str, None] = {}
    for g in groups:
        for r in g.runs:
            for ch in channel_names(r.metrics):
                names.setdefault(ch, None)
    return [(f"loss/{ch}", ch, f"C{i % 10}") for i, ch in enumerate(names)]


def eval_loss_series(groups) -> list[tuple[str, str, str]]:
    """The held-out loss keys logged during training (``eval_loss*`` in metrics.jsonl), as plot series."""
    keys = sorted({k for g in groups for r in g.runs for rec in r.metrics for k in rec if k.startswith("eval_loss")})
    colors = {"eval_loss_ce": "black", "eval_loss_important": "tab:red", "eval_loss_unimportant": "tab:blue",
              "eval_loss": "tab:gray", "eval_loss_worst": "tab:purple"}
    return [(k, k.replace("eval_loss", "held-out").replace("_", " "), colors.get(k, None)) for k in keys]


def plot_eta_bars(groups, suite, baseline=None) -> bytes | None:
    """Figure 3 style: average score per eta (percentile), bars grouped by grouping function; baseline as a line."""
    from .runs import declared, mean_std, method_label, varying_keys
    from .tables import run_average

    cand = [g for g in groups if declared(g.objective, "eta_ablation") and "percentile" in g.config
            and any(suite in r.evals for r in g.runs)]
    if len({g.config.get("percentile") for g in cand}) < 2:
        return None
    varying = varying_keys([g.config for g in groups])
    clusters: dict[str, list] = {}
    for g in cand:
        clusters.setdefault(method_label(g.config, varying, exclude=("percentile",)), []).append(g)
    etas = sorted({float(g.config["percentile"]) for g in cand})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(clusters) * len(etas) / 2 + 2), 3.8), dpi=110)
    width = 0.8 / len(etas)
    cmap = plt.get_cmap("viridis")
    lows = []
    for ci, (name, gs) in enumerate(clusters.items()):
        for g in gs:
            ei = etas.index(float(g.config["percentile"]))
            m, s, n = mean_std(run_average(r, suite) for r in g.runs if suite in r.evals)
            if m is None:
                continue
            x = ci - 0.4 + width * (ei + 0.5)
            ax.bar(x, m * 100, width * 0.92, yerr=None if s is None else s * 100, capsize=3,
                   color=cmap(ei / max(1, len(etas) - 1)), label=f"eta = {etas[ei]:g}")
            lows.append(m * 100 - (s or 0) * 100)
    if not lows:  # no grid point has a score in this suite: no figure rather than empty axes
        plt.close(fig)
        return None
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    if baseline is not None:
        bm = mean_std(run_average(r, suite) for r in baseline.runs if suite in r.evals)[0]
        if bm is not None:
            line = ax.axhline(bm * 100, color="black", linestyle="--", linewidth=1.2)
            uniq[f"{baseline.label} (baseline)"] = line
            lows.append(bm * 100)
    ax.set_xticks(range(len(clusters)))
    ax.set_xticklabels(list(clusters), fontsize=8)
    ax.set_ylabel("Avg score (x 100)")
    if lows:
        top = ax.get_ylim()[1]
        ax.set_ylim(max(0.0, min(lows) - 0.15 * (top - min(lows)) - 0.5), top)
    ax.set_title("Average score per eta, by grouping function", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="lower right")
    tight(fig)
    return _png(fig)
