"""Results against model capacity (``sftgo report --capacity KEY``): held-out group losses per method and capacity,
each method's difference from plain SFT paired by seed and capacity (worst group and average), the training loss at
the end of each run (did it flatten?), and one figure with capacity on the x axis.

The capacity of a run is ``KEY`` of its config (``lora_r``) or, where the config has no such key, of the model's
``config.json`` (``hidden_size``): the trained model's (``RUN/final/config.json``), else the folder its
``model_name_or_path`` names. Runs pair with the plain-SFT run of the same seed, the same capacity and the same
settings apart from the method (objective and its settings) and the model."""

from __future__ import annotations

import json
from pathlib import Path

from ..rundir import FINAL
from .runs import METHOD_KEYS, Group, Run, fmt_value, mean_std, method_label, plain_sft, varying_keys
from .tables import Table

MODEL_KEYS = {"model_name_or_path"}
DIFF_KEYS = [("loss_worst", "worst group"), ("loss_ce", "average")]


def capacity_of(run: Run, key: str):
    """``key`` of the run's config, else of its model's ``config.json`` (the trained model's, else the one
    ``model_name_or_path`` names); None when neither has it."""
    if run.config.get(key) is not None:
        return run.config[key]
    for folder in (run.path / FINAL, Path(str(run.config.get("model_name_or_path") or "")).expanduser()):
        f = folder / "config.json"
        if str(folder) and f.is_file():
            try:
                value = json.loads(f.read_text()).get(key)
            except (OSError, json.JSONDecodeError):
                continue
            if value is not None:
                return value
    return None


def _series_config(config: dict, key: str) -> dict:
    """A configuration without what sets the capacity: the runs of one method at every capacity share it."""
    return {k: v for k, v in config.items() if k not in MODEL_KEYS and k != key}


def _context(config: dict, key: str) -> str:
    """What a run and its SFT partner share: every setting but the method's, the model's and the capacity."""
    return json.dumps({k: v for k, v in _series_config(config, key).items()
                       if k != "objective" and k not in METHOD_KEYS}, sort_keys=True, default=str)


def _sets(runs: list[Run]) -> list[str]:
    """The held-out sets the runs were evaluated on: eval/heldout-<stem>.json stems (else the one heldout.json)."""
    stems = sorted({k for r in runs for k in r.heldout_sets})
    return stems or (["heldout"] if any(r.heldout for r in runs) else [])


def _result(run: Run, stem: str) -> dict:
    return (run.heldout_sets.get(stem) if run.heldout_sets else run.heldout) or {}


class CapacityView:
    """Runs arranged by method series (their configuration without the capacity) and capacity."""

    def __init__(self, groups: list[Group], key: str):
        self.key = key
        self.runs = [r for g in groups for r in g.runs]
        self.cap = {id(r): capacity_of(r, key) for r in self.runs}
        series: dict[str, dict] = {}
        for r in self.runs:
            if self.cap[id(r)] is None:
                continue
            c = _series_config(r.method_config, key)
            series.setdefault(json.dumps(c, sort_keys=True, default=str), c)
        configs = list(series.values())
        varying = varying_keys(configs)
        self.labels = {k: method_label(c, varying) for k, c in series.items()}
        self.order = sorted(series, key=lambda k: (not plain_sft(series[k]),
                                                   self.labels[k]))

    def series_of(self, r: Run) -> str:
        return json.dumps(_series_config(r.method_config, self.key), sort_keys=True, default=str)

    def capacities(self) -> list:
        return sorted({c for c in self.cap.values() if c is not None}, key=float)

    def cell(self, series: str, cap) -> list[Run]:
        return [r for r in self.runs if self.cap[id(r)] == cap and self.series_of(r) == series]

    def partner(self, r: Run) -> Run | None:
        """The plain-SFT run of the same seed, capacity and context (None if absent or ambiguous)."""
        ctx = _context(r.method_config, self.key)
        found = [b for b in self.runs if b is not r and plain_sft(b.config)
                 and self.cap[id(b)] == self.cap[id(r)] and b.seed == r.seed
                 and _context(b.method_config, self.key) == ctx]
        return found[0] if len(found) == 1 else None

    def differences(self, stem: str, metric: str) -> dict:
        """{(series, capacity): [(seed, method - SFT), ...]} for every non-baseline run with a partner."""
        out: dict = {}
        for r in self.runs:
            if self.cap[id(r)] is None or plain_sft(r.config):
                continue
            b = self.partner(r)
            if b is None:
                continue
            mine, theirs = _result(r, stem).get(metric), _result(b, stem).get(metric)
            if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)):
                out.setdefault((self.series_of(r), self.cap[id(r)]), []).append((r.seed, mine - theirs))
        for v in out.values():
            v.sort(key=lambda x: str(x[0]))
        return out


def _ms(values, digits=4) -> str:
    m, s, n = mean_std(values)
    if m is None:
        return "–"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "") + f" ({n})"


def capacity_loss_table(view: CapacityView) -> Table | None:
    sets = _sets(view.runs)
    if not sets:
        return None
    header = ["Method", view.key, *[f"{stem}: {name}" for stem in sets for name in ("average", "important",
                                                                                    "unimportant", "worst group")]]
    rows, data = [], {}
    for s in view.order:
        for cap in view.capacities():
            runs = view.cell(s, cap)
            if not runs:
                continue
            cells = []
            for stem in sets:
                for key in ("loss_ce", "loss_important", "loss_unimportant", "loss_worst"):
                    vals = [_result(r, stem).get(key) for r in runs]
                    cells.append(_ms(vals))
                    data.setdefault(view.labels[s], {}).setdefault(str(cap), {})[f"{stem}:{key}"] = mean_std(vals)[:2]
            if any(c != "–" for c in cells):  # runs still training have no results yet
                rows.append([view.labels[s], fmt_value(cap), *cells])
    notes = [f"Cross-entropy (nats/token) per token group on each evaluated set (eval/heldout-<set>.json), by "
             f"{view.key}; mean ± std over seeds (n)."]
    return Table(f"Group losses by {view.key}", header, rows, notes=notes, data=data)


def paired_difference_table(view: CapacityView) -> Table | None:
    sets = _sets(view.runs)
    header = ["Method", "set", view.key]
    for _, name in DIFF_KEYS:
        header += [f"Δ {name} (mean ± std)", f"Δ {name} per seed", f"seeds with Δ {name} < 0"]
    rows, data = [], {}
    for stem in sets:
        diffs = {metric: view.differences(stem, metric) for metric, _ in DIFF_KEYS}
        for s in view.order:
            for cap in view.capacities():
                if (s, cap) not in diffs[DIFF_KEYS[0][0]]:
                    continue
                row = [view.labels[s], stem, fmt_value(cap)]
                for metric, _ in DIFF_KEYS:
                    pairs = diffs[metric].get((s, cap), [])
                    vals = [d for _, d in pairs]
                    row += [_ms(vals), " / ".join(f"s{seed}: {d:+.4f}" for seed, d in pairs),
                            f"{sum(d < 0 for d in vals)}/{len(vals)}"]
                    data.setdefault(view.labels[s], {}).setdefault(stem, {}).setdefault(str(cap), {})[metric] = vals
                rows.append(row)
    if not rows:
        return None
    notes = ["Each run minus the plain-SFT run of the same seed and capacity (same data and schedule), on each "
             "evaluated set: negative = lower loss than SFT. Proposition 1 predicts Δ worst group ≤ 0 at the "
             "objectives' minimizers."]
    return Table(f"Paired difference from SFT by {view.key}", header, rows, notes=notes, data=data)


def _epoch_means(records: list[dict], key="loss_ce") -> list[tuple[int, float]]:
    """Mean ``key`` over the steps of each (started) epoch: [(epoch number from 1, mean), ...]."""
    import math

    sums: dict[int, list[float]] = {}
    for r in records:
        e, v = r.get("epoch"), r.get(key)
        if isinstance(e, (int, float)) and isinstance(v, (int, float)) and "train_runtime" not in r:
            sums.setdefault(max(1, math.ceil(float(e) - 1e-9)), []).append(float(v))
    return [(e, sum(v) / len(v)) for e, v in sorted(sums.items())]


def convergence_table(view: CapacityView) -> Table | None:
    """Did each run flatten? Training CE over its last three epochs and its last learning rate."""
    header = ["Method", view.key, "train CE, 3rd-last epoch", "2nd-last epoch", "last epoch",
              "last / 3rd-last", "last logged learning rate"]
    rows = []
    for s in view.order:
        for cap in view.capacities():
            runs = [r for r in view.cell(s, cap) if r.metrics and r.summary is not None]  # finished runs only
            if not runs:
                continue
            tails = [_epoch_means(r.metrics)[-3:] for r in runs]
            tails = [t for t in tails if len(t) == 3]
            if not tails:
                continue
            lrs = [next((m["learning_rate"] for m in reversed(r.metrics) if "learning_rate" in m), None) for r in runs]
            rows.append([view.labels[s], fmt_value(cap), *[_ms([t[i][1] for t in tails]) for i in range(3)],
                         _ms([t[2][1] / t[0][1] for t in tails if t[0][1]], digits=3), _ms(lrs, digits=6)])
    if not rows:
        return None
    return Table(f"Training loss at the end of each run, by {view.key}", header, rows,
                 notes=["Mean per-step training CE (loss_ce in metrics.jsonl) over each of the last three epochs, "
                        "mean ± std over seeds; a ratio near 1 is a flat training loss. Finished runs only (a summary.json)."])


def weight_table(view: CapacityView) -> Table | None:
    """How each token weighting's mean weight moved: ``mean_weight`` at the first logged step, over the first epoch
    and over the last (does the weighting keep its steps, or shrink them as the model grows sure of its tokens?)."""
    header = ["Method", view.key, "mean weight, first step", "first epoch", "last epoch", "last / first epoch"]
    rows, data = [], {}
    for s in view.order:
        for cap in view.capacities():
            runs = [r for r in view.cell(s, cap) if r.summary is not None]  # finished runs only
            weights = [[m["mean_weight"] for m in r.metrics if isinstance(m.get("mean_weight"), (int, float))]
                       for r in runs]
            epochs = [_epoch_means(r.metrics, "mean_weight") for r, w in zip(runs, weights) if w]
            if not epochs:
                continue  # no token weighting logged (plain SFT, SFT-GO without --token_weight)
            cols = {"first_step": [w[0] for w in weights if w], "first_epoch": [e[0][1] for e in epochs],
                    "last_epoch": [e[-1][1] for e in epochs],
                    "ratio": [e[-1][1] / e[0][1] for e in epochs if e[0][1]]}
            rows.append([view.labels[s], fmt_value(cap), _ms(cols["first_step"]), _ms(cols["first_epoch"]),
                         _ms(cols["last_epoch"]), _ms(cols["ratio"], digits=3)])
            data.setdefault(view.labels[s], {})[str(cap)] = {k: mean_std(v)[:2] for k, v in cols.items()}
    if not rows:
        return None
    return Table(f"Token weight at the start and the end of each run, by {view.key}", header, rows, data=data,
                 notes=["mean_weight in metrics.jsonl (the mean token weighting t_n over the step's supervised "
                        "tokens): at the first logged step and averaged over the first and the last epoch, mean ± "
                        "std over seeds (n); a ratio below 1: the weighting shrinks the steps as training goes on. "
                        "Finished runs only."])


def plot_paired_differences(view: CapacityView) -> bytes | None:
    """One panel per (evaluated set, worst group / average): each method's paired difference from SFT against
    capacity (log-2 x axis): mean over seeds with ±1 std bars, each seed a dot, the zero line dashed."""
    from .figures import _png, _pyplot, tight

    panels = [(stem, metric, name, view.differences(stem, metric)) for stem in _sets(view.runs)
              for metric, name in DIFF_KEYS]
    sets = [stem for stem in _sets(view.runs) if any(d for s, *_, d in panels if s == stem)]  # no empty rows
    panels = [p for p in panels if p[0] in sets]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(sets), len(DIFF_KEYS), figsize=(5.2 * len(DIFF_KEYS), 3.4 * len(sets)), dpi=110,
                             squeeze=False)
    series = [s for s in view.order if any((s, c) in d for *_, d in panels for c in view.capacities())]
    cmap = plt.get_cmap("tab10")
    for i, (stem, metric, name, diffs) in enumerate(panels):
        ax = axes[i // len(DIFF_KEYS)][i % len(DIFF_KEYS)]
        for j, s in enumerate(series):
            caps = [c for c in view.capacities() if (s, c) in diffs]
            if not caps:
                continue
            shift = 1.0 + 0.04 * (j - (len(series) - 1) / 2)  # side by side on the log axis
            xs = [float(c) * shift for c in caps]
            stats = [mean_std(d for _, d in diffs[(s, c)]) for c in caps]
            ax.errorbar(xs, [m for m, _, _ in stats], yerr=[sd or 0.0 for _, sd, _ in stats], color=cmap(j % 10),
                        marker="o", capsize=3, linewidth=1.4, label=view.labels[s])
            for x, c in zip(xs, caps):
                ys = [d for _, d in diffs[(s, c)]]
                ax.scatter([x] * len(ys), ys, color=cmap(j % 10), s=9, alpha=0.45, zorder=3)
        ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_xscale("log", base=2)
        caps = [float(c) for c in view.capacities()]
        ax.set_xlim(min(caps) / 1.4, max(caps) * 1.4)  # the outer capacities' dots and bars inside the frame
        ax.set_xticks([float(c) for c in view.capacities()], [fmt_value(c) for c in view.capacities()])
        ax.set_xlabel(view.key)
        ax.set_ylabel(f"Δ {name} CE vs SFT")
        ax.set_title(f"{stem}: {name}", fontsize=10)
        ax.grid(alpha=0.3)
    # One legend of every series, on the first panel (a series evaluated on some sets only is missing from others).
    handles = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    axes[0][0].legend(handles.values(), handles.keys(), fontsize=8)
    tight(fig)
    return _png(fig)
