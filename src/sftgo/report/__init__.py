"""Tables and figures from saved run artifacts; never imports the trainer or loads a model.

``report_run(RUN)`` redraws one run's ``loss_groups.png``; ``build_report([RUN_OR_SWEEP, ...], OUT)`` writes
``OUT/report.md`` (+ figure PNGs), a self-contained ``OUT/report.html`` and ``OUT/report.json``, grouping runs that
differ only in their seed (the SFT-GO paper's Tables 1-4 and Figures 2-3, held-out group losses, learn vs forget, and
the runs' answers to the same prompts side by side as in its Appendix I).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .figures import moving_average, plot_channel_losses, plot_loss_groups

__all__ = ["build_report", "moving_average", "plot_channel_losses", "plot_loss_groups", "report_run"]


def report_run(run_dir: str | Path) -> Path:
    """Re-draw ``loss_groups.png`` of a run directory from its ``metrics.jsonl`` (and ``loss_channels.png``, one curve
    per channel, when the run logged channels)."""
    from ..rundir import LOSS_CHANNELS_PNG, LOSS_GROUPS_PNG, METRICS, SUMMARY, read_metrics

    run_dir = Path(run_dir)
    metrics = run_dir / METRICS
    if not metrics.exists():
        raise FileNotFoundError(f"{metrics} not found: is {run_dir} an sftgo run directory?")
    records = read_metrics(metrics)
    summary = run_dir / SUMMARY
    title = ""
    if summary.exists():
        s = json.loads(summary.read_text())
        title = f"{s.get('objective', '')} / {s.get('scorer', '')}"
    plot_channel_losses(records, run_dir / LOSS_CHANNELS_PNG, f"{title}: loss per channel" if title else "")
    return plot_loss_groups(records, run_dir / LOSS_GROUPS_PNG, title)


def build_report(paths, output_dir: str | Path, domain_suite: str | None = None, capacity: str | None = None) -> dict:
    """Write the multi-run report; returns ``{"md": path, "html": path, "json": path, "figures": [...]}``.
    ``capacity``: a config (or model config.json) key such as ``hidden_size`` or ``lora_r``: adds the results by
    capacity (:mod:`sftgo.report.capacity`)."""
    from . import figures as F
    from . import tables as T
    from .generations import generation_tables
    from .render import Figure, Section, to_html, to_markdown
    from .runs import baseline_group, find_runs, group_runs

    runs, sweeps = find_runs(paths)
    if not runs and not any(sw.get("runs") for sw in sweeps):
        raise FileNotFoundError(f"no runs found in {', '.join(map(str, paths))}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    base = baseline_group(groups)
    present = {r.path.resolve() for r in runs}
    pending = [p for sw in sweeps for p in sw.get("runs", []) if p.get("role") != "select"
               and p.get("dir") and (Path(sw["_path"]) / p["dir"]).resolve() not in present]

    sections: list[Section] = []
    figs: list[Figure] = []

    def add(title, table=None, figure=None, text=()):
        if table is None and figure is None and not text:
            return
        if figure is not None:
            figs.append(figure)
        sections.append(Section(title, list(text), table, figure))

    suite_list = T.suites(runs)
    for s in suite_list:
        add(f"Benchmarks: {s}", T.benchmark_table(groups, s))
    paper = next((s for s in suite_list if set(T.suite_columns(runs, s)) & set(T.PAPER_COLUMNS)), None)
    if paper:
        add("Subject-specific vs general reasoning", T.subject_general_table(groups, paper))
    primary = paper or (suite_list[0] if suite_list else None)
    add("Static vs decaying lambda", T.lambda_table(groups, primary))
    add("Held-out worst-group loss (Proposition 1)", T.heldout_table(groups))
    add("Learn vs forget", T.learn_forget_table(groups, domain_suite))
    add("Selection", T.selection_table(sweeps, groups, primary))

    png = F.plot_group_losses(groups)
    if png:
        add("Training loss by token group (Figure 2 style)",
            figure=Figure("fig2_group_losses.png", png, "Overall / important / unimportant training loss per method: "
                          "mean over seeds (each seed smoothed by a trailing moving average), band = ±1 std."))
    # Curves other than the training groups' (same plot, other series): held-out group losses, per-channel losses.
    for series, title, name, caption in (
            (F.eval_loss_series(groups), "Held-out loss by token group during training", "fig2_heldout_losses.png",
             "Held-out group losses logged during training (eval_loss_* in metrics.jsonl): mean over seeds, band = "
             "±1 std."),
            (F.channel_series(groups), "Training loss per channel", "fig_channel_losses.png",
             "loss/<channel> in metrics.jsonl: the mean CE over each channel's tokens (data-weighted) per logging "
             "step; mean over seeds, band = ±1 std.")):
        png = F.plot_group_losses(groups, series=series, title=title) if series else None
        if png:
            add(title, figure=Figure(name, png, caption))
    if primary:
        png = F.plot_eta_bars(groups, primary, base)
        if png:
            add("Average score per eta (Figure 3 style)",
                figure=Figure("fig3_eta.png", png, f"{primary}: Avg per eta (its Avg column, or the mean of its "
                              "columns where it has none), grouped by grouping function (error bars: std over seeds); "
                              "dashed line: the plain-SFT baseline."))

    if capacity:
        from . import capacity as C

        view = C.CapacityView(groups, capacity)
        if not view.capacities():
            add(f"Results by {capacity}", text=[f"No run has {capacity!r} in its config.yaml or its model's "
                                                "config.json: no results by capacity."])
        add(f"Group losses by {capacity}", C.capacity_loss_table(view))
        add(f"Paired difference from SFT by {capacity}", C.paired_difference_table(view))
        png = C.plot_paired_differences(view)
        if png:
            add(f"Paired difference from SFT against {capacity}",
                figure=Figure("fig_capacity_paired.png", png, f"Each method minus plain SFT (same seed, same "
                              f"{capacity}) on each evaluated set, worst group and average CE: mean over seeds with "
                              "±1 std bars, each seed a dot; below the dashed line = lower loss than SFT."))
        add(f"Training loss at the end of each run, by {capacity}", C.convergence_table(view))
        add(f"Token weight at the start and the end of each run, by {capacity}", C.weight_table(view))

    for table in generation_tables(groups):
        add(f"{table.title} (Appendix I style)", table)

    no_eval = [r for r in runs if not r.evals and not r.heldout]
    if no_eval:
        add("Runs without evaluation results",
            text=["These runs have no eval/*.json and appear in no benchmark table: "
                  + ", ".join(f"{r.name} ({r.status})" for r in no_eval) + "."])
    add("Runs: settings, wall time, tokens", T.runs_table(runs, groups, pending))
    problems = [p for r in runs for p in r.problems]
    if problems:
        add("Problems reading run files", text=problems)

    title = "sftgo report"
    intro = [f"{len(runs)} run(s) in {len(groups)} configuration(s) from {', '.join(map(str, paths))}; "
             f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}."
             + (f" Baseline row: {base.label}." if base else " No plain-SFT baseline among the runs.")]
    for f in figs:
        (out / f.filename).write_bytes(f.png)
    md = out / "report.md"
    md.write_text(to_markdown(title, intro, sections))
    page = out / "report.html"
    page.write_text(to_html(title, intro, sections))
    data = {"format": 1, "groups": [{"label": g.label, "config": g.config, "runs": [str(r.path) for r in g.runs],
                                     "seeds": g.seeds} for g in groups],
            "baseline": base.label if base else None,
            "tables": {s.table.title: {"header": s.table.header, "rows": s.table.rows, "data": s.table.data}
                       for s in sections if s.table is not None}}
    js = out / "report.json"
    js.write_text(T.dumps(data))
    return {"md": md, "html": page, "json": js, "figures": [out / f.filename for f in figs]}
