"""The paper's tables from grouped runs: benchmark means ± std over seeds (Tables 1/2), subject-specific vs general
reasoning (Table 3), static vs decaying lambda (Table 4), held-out group losses (Proposition 1's quantity), and
learn-vs-forget. Each builder returns a :class:`Table` or None when the runs hold nothing for it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..naming import point_of
from .runs import NON_METHOD_KEYS, Group, Run, baseline_group, fmt_value, is_static_lam, mean_std, varying_keys

PAPER_COLUMNS = ["MMLU-0", "MMLU-5", "MathQA", "ARC-C", "OpenBookQA", "HellaSwag", "TruthfulQA", "IFEval"]
SUBJECT_COLUMNS = ["MMLU-0", "MMLU-5", "MathQA", "ARC-C", "OpenBookQA"]
GENERAL_COLUMNS = ["HellaSwag", "TruthfulQA", "IFEval"]
MATH_COLUMNS = ["GSM8K", "MATH-500"]
HELDOUT_KEYS = [("loss_ce", "overall"), ("loss_important", "important"), ("loss_unimportant", "unimportant"),
                ("loss_worst", "worst group")]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    bold: set = field(default_factory=set)  # (row, col) cells to emphasize
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # the numbers behind the cells (report.json)
    text: bool = False  # cells are prose (generated answers): wrapped, top-aligned, line breaks kept


def pct(m, s, n, scale=100.0, digits=2) -> str:
    if m is None:
        return "–"
    txt = f"{m * scale:.{digits}f}"
    if s is not None:
        txt += f" ± {s * scale:.{digits}f}"
    return f"{txt} ({n})"


def result_name(r: dict) -> str:
    """A result row's column: its paper column when it has one, else ``task:metric``."""
    return r.get("column") or f"{r.get('task')}:{r.get('metric')}"


def run_columns(run: Run, suite: str) -> dict[str, float]:
    """A run's score per column in one suite: the file's ``columns`` map, else its ``results`` rows."""
    data = run.evals.get(suite) or {}
    cols = {k: v for k, v in (data.get("columns") or {}).items() if isinstance(v, (int, float))}
    if not cols:
        for r in data.get("results") or []:
            if isinstance(r.get("value"), (int, float)):
                cols[result_name(r)] = r["value"]
    return cols


def run_average(run: Run, suite: str) -> float | None:
    """One number per run and suite: its ``Avg`` column (the paper's 8-column average) where the suite has one, else
    the mean of its columns (a plain task list has no Avg); None without results."""
    cols = run_columns(run, suite)
    if "Avg" in cols:
        return cols["Avg"]
    vals = list(cols.values())
    return sum(vals) / len(vals) if vals else None


def suite_columns(runs: list[Run], suite: str) -> list[str]:
    present: list[str] = []
    for r in runs:
        for c in run_columns(r, suite):
            if c not in present:
                present.append(c)
    order = PAPER_COLUMNS + MATH_COLUMNS
    known = [c for c in order if c in present]
    other = [c for c in present if c not in order and c != "Avg"]
    return known + other + (["Avg"] if "Avg" in present else [])


def suites(runs: list[Run]) -> list[str]:
    names = sorted({s for r in runs for s in r.evals})
    return sorted(names, key=lambda s: (s != "paper", s != "math", s))


def primary_suite(runs: list[Run]) -> str | None:
    ss = suites(runs)
    return ss[0] if ss else None


def _bold_best(rows_stats: list[list], higher_better=True) -> set:
    """rows_stats[i][j] = mean or None -> cells holding the best mean of each column."""
    bold = set()
    if not rows_stats:
        return bold
    for j in range(len(rows_stats[0])):
        col = [(i, row[j]) for i, row in enumerate(rows_stats) if row[j] is not None]
        if len(col) < 2:
            continue
        best = max(v for _, v in col) if higher_better else min(v for _, v in col)
        if all(abs(v - best) < 1e-12 for _, v in col):
            continue  # all equal: nothing stands out
        bold |= {(i, j) for i, v in col if abs(v - best) < 1e-12}
    return bold


def benchmark_table(groups: list[Group], suite: str, number: str = "1/2") -> Table | None:
    runs = [r for g in groups for r in g.runs]
    cols = suite_columns(runs, suite)
    if not cols:
        return None
    header = ["Method", *cols, "seeds"]
    rows, stats, data = [], [], {}
    for g in groups:
        evaluated = [r for r in g.runs if suite in r.evals]
        if not evaluated:
            continue
        cells, means, gd = [], [], {}
        for c in cols:
            m, s, n = mean_std(run_columns(r, suite).get(c) for r in evaluated)
            cells.append(pct(m, s, n))
            means.append(m)
            gd[c] = {"mean": m, "std": s, "n": n}
        rows.append([g.label, *cells, ", ".join(str(r.seed) for r in evaluated)])
        stats.append(means)
        data[g.label] = gd
    if not rows:
        return None
    bold = {(i, j + 1) for i, j in _bold_best(stats)}
    return Table(f"Table {number} style: {suite} suite (scores x 100, mean ± std over seeds, (n) seeds)",
                 header, rows, bold, data=data,
                 notes=["Best mean per column in bold. Std is the sample standard deviation (n - 1); "
                        "a single seed shows no std."])


def _avg(cols: dict, names) -> float | None:
    vals = [cols[c] for c in names if c in cols]
    return sum(vals) / len(vals) if vals else None


def subject_general_table(groups: list[Group], suite: str) -> Table | None:
    runs = [r for g in groups for r in g.runs]
    present = suite_columns(runs, suite)
    subj = [c for c in SUBJECT_COLUMNS if c in present]
    gen = [c for c in GENERAL_COLUMNS if c in present]
    if not subj and not gen:
        return None
    base = baseline_group(groups)
    per_group = {}
    for g in groups:
        ev = [r for r in g.runs if suite in r.evals]
        if ev:
            per_group[g.label] = (mean_std(_avg(run_columns(r, suite), subj) for r in ev),
                                  mean_std(_avg(run_columns(r, suite), gen) for r in ev))
    if not per_group:
        return None
    b = per_group.get(base.label) if base else None
    header = ["Method", f"Subject-specific ({', '.join(subj) or 'none'})", "Δ vs baseline",
              f"General reasoning ({', '.join(gen) or 'none'})", "Δ vs baseline"]
    rows, data = [], {}
    for label, (sj, gn) in per_group.items():
        def delta(x, bx):
            return "–" if x[0] is None or bx is None or bx[0] is None else f"{(x[0] - bx[0]) * 100:+.2f}"

        rows.append([label, pct(*sj), delta(sj, b[0] if b else None), pct(*gn), delta(gn, b[1] if b else None)])
        data[label] = {"subject": sj[0], "subject_std": sj[1], "general": gn[0], "general_std": gn[1],
                       "subject_delta": None if not b or b[0][0] is None or sj[0] is None else sj[0] - b[0][0],
                       "general_delta": None if not b or b[1][0] is None or gn[0] is None else gn[0] - b[1][0]}
    notes = [f"Averages of each run's columns, then mean ± std over seeds; Δ against {base.label!r}."
             if base else "No plain-SFT (objective: sft) runs: no Δ column."]
    return Table("Table 3 style: subject-specific vs general reasoning (x 100)", header, rows, notes=notes, data=data)


def lambda_table(groups: list[Group], suite: str | None) -> Table | None:
    """Static vs decaying lambda where two configurations differ only in ``lam_min``."""
    pairs = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            diff = varying_keys([a.config, b.config])
            if diff == ["lam_min"] and is_static_lam(a.config) != is_static_lam(b.config):
                pairs.append((a, b) if is_static_lam(a.config) else (b, a))
    if not pairs:
        return None
    runs = [r for g in groups for r in g.runs]
    cols = suite_columns(runs, suite) if suite else []
    has_heldout = any(r.heldout for r in runs)
    header = ["Method", "lambda", *cols, *(["held-out worst-group loss"] if has_heldout else [])]
    rows, data = [], {}
    for static, decay in pairs:
        for g, kind in ((static, "static"), (decay, "decaying")):
            lam = fmt_value(g.config.get("lam"))
            sched = f"static {lam}" if kind == "static" else f"{lam} -> {fmt_value(g.config.get('lam_min'))}"
            cells = []
            for c in cols:
                cells.append(pct(*mean_std(run_columns(r, suite).get(c) for r in g.runs if suite in r.evals)))
            if has_heldout:
                cells.append(pct(*mean_std((r.heldout or {}).get("loss_worst") for r in g.runs), scale=1.0, digits=4))
            rows.append([g.label, sched, *cells])
            data[g.label] = kind
    return Table("Table 4 style: static vs decaying lambda", header, rows, data=data,
                 notes=["Pairs of configurations that differ only in lam_min (static: lam_min unset or >= lam)."])


def heldout_table(groups: list[Group]) -> Table | None:
    if not any(r.heldout for g in groups for r in g.runs):
        return None
    base = baseline_group(groups)
    header = ["Method", *[f"held-out {name}" for _, name in HELDOUT_KEYS], "worst Δ vs baseline", "seeds"]
    rows, stats, data = [], [], {}
    base_worst = None
    if base:
        base_worst = mean_std((r.heldout or {}).get("loss_worst") for r in base.runs)[0]
    groupings = set()
    for g in groups:
        hs = [r.heldout for r in g.runs if r.heldout]
        if not hs:
            continue
        groupings |= {(h.get("scorer"), h.get("percentile")) for h in hs}
        cells, means, gd = [], [], {}
        for key, _ in HELDOUT_KEYS:
            m, s, n = mean_std(h.get(key) for h in hs)
            cells.append(pct(m, s, n, scale=1.0, digits=4))
            means.append(m)
            gd[key] = {"mean": m, "std": s, "n": n}
        worst = gd["loss_worst"]["mean"]
        delta = "–" if base_worst is None or worst is None else f"{worst - base_worst:+.4f}"
        rows.append([g.label, *cells, delta, ", ".join(str(r.seed) for r in g.runs if r.heldout)])
        stats.append(means)
        data[g.label] = gd
    bold = {(i, j + 1) for i, j in _bold_best(stats, higher_better=False)}
    notes = ["Cross-entropy (nats/token) on the held-out data, per token group; the worst group is Proposition 1's "
             "quantity (lower is better, lowest in bold)."]
    groupings.discard((None, None))
    if groupings:
        notes.append("Held-out groups from: " + "; ".join(f"scorer {s}, eta {p}" for s, p in sorted(groupings, key=str))
                     + (" (runs differ in the held-out grouping: compare with care)" if len(groupings) > 1 else ""))
    return Table("Held-out group losses (mean ± std over seeds)", header, rows, bold, notes=notes, data=data)


def _delta_rows(run: Run, suite_names) -> list[dict]:
    return [x for s in suite_names for x in (run.evals.get(s) or {}).get("results") or []
            if isinstance(x.get("delta_vs_base"), (int, float))]


def _mean_delta(g: Group, suite_names) -> tuple[str, set, float | None]:
    """Each run's mean ``delta_vs_base`` over the suites' result rows, then mean ± std over seeds (x 100)."""
    per_run, names = [], set()
    for r in g.runs:
        ds = _delta_rows(r, suite_names)
        if ds:
            per_run.append(sum(x["delta_vs_base"] for x in ds) / len(ds))
            names |= {result_name(x) for x in ds}
    m, s, n = mean_std(per_run)
    cell = "–" if m is None else f"{m * 100:+.2f}" + (f" ± {s * 100:.2f}" if s is not None else "") + f" ({n})"
    return cell, names, m


def learn_forget_table(groups: list[Group], domain_suite: str | None = None) -> Table | None:
    """Per method: what it learned on the training domain (held-out loss; domain-suite accuracy and its difference
    from the base model) and what it forgot on the general suites (mean ``delta_vs_base``)."""
    runs = [r for g in groups for r in g.runs]
    all_suites = suites(runs)
    if domain_suite is None and "math" in all_suites:
        domain_suite = "math"
    general = [s for s in all_suites if s != domain_suite]
    has_delta = any(_delta_rows(r, general) for r in runs)
    dom_delta = bool(domain_suite) and any(_delta_rows(r, [domain_suite]) for r in runs)
    has_heldout = any(r.heldout for r in runs)
    dom_cols = [c for c in suite_columns(runs, domain_suite) if c != "Avg"] if domain_suite else []
    # Other held-out sets (eval/heldout-<stem>.json besides the one in heldout.json): a general-domain set measures
    # forgetting as a loss, e.g. held-out Alpaca after training on GSM8K.
    main_stems = {Path(str(r.heldout.get("dataset", ""))).stem for r in runs if r.heldout}
    other_sets = sorted({k for r in runs for k in r.heldout_sets} - main_stems)
    if not has_delta and not (has_heldout and (dom_cols or general or other_sets)):
        return None
    header = ["Method"]
    if has_heldout:
        header.append("learn: held-out loss" + (f" ({', '.join(sorted(main_stems))})" if other_sets else ""))
    header += [f"held-out loss ({k})" for k in other_sets]
    header += [f"learn: {c}" for c in dom_cols]
    if dom_delta:
        header.append(f"learn: mean Δ vs base ({domain_suite})")
    if has_delta:
        header += ["forget: mean Δ vs base (general)", "benchmarks"]
    rows, data = [], {}
    for g in groups:
        row, gd = [g.label], {}
        if has_heldout:
            m = mean_std((r.heldout or {}).get("loss_ce") for r in g.runs)
            row.append(pct(*m, scale=1.0, digits=4))
            gd["heldout_loss"] = m[0]
        for k in other_sets:
            m = mean_std((r.heldout_sets.get(k) or {}).get("loss_ce") for r in g.runs)
            row.append(pct(*m, scale=1.0, digits=4))
            gd[f"heldout_loss:{k}"] = m[0]
        for c in dom_cols:
            m = mean_std(run_columns(r, domain_suite).get(c) for r in g.runs if domain_suite in r.evals)
            row.append(pct(*m))
            gd[c] = m[0]
        if dom_delta:
            cell, _, gd["learn_delta"] = _mean_delta(g, [domain_suite])
            row.append(cell)
        if has_delta:
            cell, names, gd["forget_delta"] = _mean_delta(g, general)
            row += [cell, ", ".join(sorted(str(x) for x in names)) or "–"]
        rows.append(row)
        data[g.label] = gd
    notes = ["learn: held-out cross-entropy on the training domain (lower is better)"
             + (f"; held-out loss (other sets): the same cross-entropy on {', '.join(other_sets)} (a rise = forgetting)"
                if other_sets else "")
             + (f" and {domain_suite}-suite accuracy x 100" if dom_cols else "")
             + "; forget: each run's mean difference from the base model over the general-suite benchmarks (x 100; "
               "negative = forgot), then mean ± std over seeds."]
    return Table("Learn vs forget (InfoSFT's two axes)", header, rows, notes=notes, data=data)


def runs_table(runs: list[Run], groups: list[Group], pending: list[dict]) -> Table:
    label = {id(r): g.label for g in groups for r in g.runs}
    differing = [k for k in varying_keys([r.config for r in runs]) if k not in NON_METHOD_KEYS]
    header = ["Run", "Method", "seed", "settings that differ", "steps", "wall time", "supervised tokens",
              "evaluations", "status"]
    rows = []
    for r in runs:
        s = r.summary or {}
        evals = sorted(r.evals) + (["heldout"] if r.heldout else [])
        rows.append([r.name, label[id(r)], str(r.seed),
                     ", ".join(f"{k}={fmt_value(r.config.get(k))}" for k in differing
                               if r.config.get(k) is not None) or "–",  # not the settings this run leaves unset
                     str(s.get("steps", "–")),
                     fmt_time(s.get("wall_time_s")) + (f" ({s['legs']} legs: resumed)" if s.get("legs", 1) > 1 else ""),
                     f"{s['supervised_tokens']:,}" if isinstance(s.get("supervised_tokens"), int) else "–",
                     ", ".join(evals) or "none", r.status])
    for p in pending:
        rows.append([p.get("name", "?"), "–", str(p.get("seed", "–")),
                     ", ".join(f"{k}={fmt_value(v)}" for k, v in (p.get("settings") or {}).items()) or "–",
                     "–", "–", "–", "none", f"{p.get('state', 'pending')} (sweep.json; no run directory yet)"])
    return Table("Runs", header, rows)


def fmt_time(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def selection_table(sweeps: list[dict], groups: list[Group] = (), suite: str | None = None) -> Table | None:
    """The grid points of a ``--select heldout_worst`` sweep: held-out worst-group loss after the short budget (what
    the selection saw) beside each point's benchmark score at the full budget where the report has those runs (the
    full grid's verdict), so the chosen point can be compared with the grid's best."""
    def full_budget_score(point: str):
        return mean_std(run_average(r, suite) for g in groups for r in g.runs
                        if point_of(r.name) == point and suite in r.evals)

    rows, scored = [], []
    for sw in sweeps:
        sel = sw.get("selection")
        if not sel:
            continue
        for p in sel.get("points", []):
            v = p.get("loss_worst")
            m, sd, n = full_budget_score(p.get("name")) if suite else (None, None, 0)
            scored.append(m)
            rows.append([p.get("name", "?"), "–" if v is None else f"{v:.4f}", str(sel.get("steps")),
                         pct(m, sd, n), "chosen" if p.get("name") == sel.get("chosen") else ""])
    if not rows:
        return None
    known = [m for m in scored if m is not None]
    bold = set()
    if known:
        best = max(known)
        for i, m in enumerate(scored):
            if m == best:
                rows[i][4] = (rows[i][4] + ", " if rows[i][4] else "") + "grid best"
                bold.add((i, 3))
    return Table("Selection by held-out worst-group loss (--select heldout_worst)",
                 ["Grid point", "held-out worst-group loss", "after steps",
                  f"{suite or 'benchmark'} Avg x 100, full budget (seeds)", ""], rows, bold,
                 notes=["Each grid point trained for the short budget (first seed) and was ranked by held-out "
                        "worst-group loss; only the chosen point went on to the full budget. The score column is "
                        "the full grid's verdict (mean over seeds of each run's Avg column, or of its mean over the suite's "
                        "columns where the suite has no Avg), "
                        "where the report includes those runs."],
                 data={"selection": [sw.get("selection") for sw in sweeps]})


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
