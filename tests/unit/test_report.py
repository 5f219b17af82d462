import json
import math

import pytest

from sftgo.report import moving_average, plot_loss_groups, report_run


def test_moving_average_trailing_and_nan_skipping():
    assert moving_average([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]
    out = moving_average([1.0, float("nan"), 3.0], 2)
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == 3.0
    assert math.isnan(moving_average([float("nan")], 3)[0])


def test_report_redraws_png_from_metrics(tmp_path):
    recs = [{"step": i, "loss": 2.0 - i / 50, "loss_ce": 2.0, "loss_important": 3.0, "loss_unimportant": 1.5}
            for i in range(1, 31)]
    recs[3]["loss_important"] = None  # an empty group at one step
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    png = report_run(tmp_path)
    assert png.exists() and png.stat().st_size > 1000
    assert plot_loss_groups(recs[:1], tmp_path / "one.png").exists()


def test_a_figure_is_drawn_once_per_save_and_unchanged(tmp_path, monkeypatch):
    """Every training run draws loss_groups.png: laid out once (figures.tight), it is rendered once, not laid out
    again by savefig (an extra draw of the whole figure), and the file is the same bytes as with the extra draw."""
    from matplotlib.figure import Figure

    from sftgo.report import figures

    recs = [{"step": i, "loss": 2.0 - i / 50, "loss_ce": 2.0 - i / 40, "loss_important": 3.0 - i / 30,
             "loss_unimportant": 1.5} for i in range(1, 31)]
    draws = []
    real_draw = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, renderer: draws.append(1) or real_draw(self, renderer))
    plot_loss_groups(recs, tmp_path / "once.png")
    assert len(draws) == 1
    draws.clear()
    monkeypatch.setattr(figures, "tight", lambda fig: fig.tight_layout())  # the layout engine left on the figure
    plot_loss_groups(recs, tmp_path / "twice.png")
    assert len(draws) == 2
    assert (tmp_path / "once.png").read_bytes() == (tmp_path / "twice.png").read_bytes()


# ------------------------------------------------------------------------------------------ multi-run report

PAPER = ["MMLU-0", "MMLU-5", "MathQA", "ARC-C", "OpenBookQA", "HellaSwag", "TruthfulQA", "IFEval"]


def make_run(root, name, seed, eval_cols=None, heldout=None, eval_losses=False, **settings):
    """A run directory as `sftgo train` (+ `sftgo eval`) leaves it, with numbers chosen by the test."""
    import yaml

    d = root / name
    d.mkdir(parents=True)
    cfg = {"model_name_or_path": "tiny", "dataset": "d.jsonl", "objective": "sft-go", "scorer": "tfidf",
           "percentile": 90.0, "lam": 0.9, "lam_min": None, "max_steps": 20, "learning_rate": 5e-5, "seed": seed,
           "output_dir": str(d), **settings}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    recs = []
    for s in range(1, 21):
        r = {"step": s, "loss": 2.0 - s / 40, "loss_ce": 2.0 - s / 40 + seed / 100, "loss_important": 3.0 - s / 30,
             "loss_unimportant": 1.5 - s / 60, "lam": 0.9}
        if eval_losses and s % 5 == 0:
            r.update(eval_loss_important=3.1 - s / 40, eval_loss_unimportant=1.6 - s / 70)
        recs.append(r)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 21, "lo')  # torn line
    (d / "summary.json").write_text(json.dumps({"steps": 20, "supervised_tokens": 1000 + seed, "wall_time_s": 61.0}))
    if eval_cols is not None:
        (d / "eval").mkdir()
        cols = dict(eval_cols)
        cols["Avg"] = sum(cols.values()) / len(cols)
        res = [{"task": c.lower(), "column": c, "metric": "acc", "value": v} for c, v in eval_cols.items()]
        (d / "eval" / "paper.json").write_text(json.dumps({"format": 1, "suite": "paper", "results": res,
                                                           "columns": cols}))
    if heldout is not None:
        (d / "eval").mkdir(exist_ok=True)
        (d / "eval" / "heldout.json").write_text(json.dumps({"format": 1, "suite": "heldout", "loss_ce": 1.0,
                                                             "loss_important": heldout, "loss_unimportant": 0.9,
                                                             "loss_worst": heldout}))
    return d


def scores(base, seed):
    return {c: base + 0.01 * i + 0.003 * seed * seed for i, c in enumerate(PAPER)}


def test_report_tables_static_vs_decaying_eta_figure_and_unevaluated_runs(tmp_path):
    import statistics

    from sftgo.report import build_report

    root = tmp_path / "runs"
    for seed in (1, 2, 3):
        make_run(root, f"sft_s{seed}", seed, scores(0.30, seed), 2.0 + seed / 10, objective="sft")
        make_run(root, f"go_p90_s{seed}", seed, scores(0.32, seed), 1.8 + seed / 10, eval_losses=True)
        make_run(root, f"go_p70_s{seed}", seed, scores(0.31, seed), 1.9, percentile=70.0)
        make_run(root, f"go_decay_s{seed}", seed, scores(0.33, seed), 1.7, lam_min=0.1)
    make_run(root, "dft_s1", 1, objective="dft")  # trained, never evaluated
    out = build_report([root], tmp_path / "out")
    md = out["md"].read_text()
    # Table 1/2: the decaying-lambda row is best in every column (bold), cells are mean ± sample std (n).
    col = [scores(0.33, s)["MMLU-0"] for s in (1, 2, 3)]
    cell = f"{statistics.mean(col) * 100:.2f} ± {statistics.stdev(col) * 100:.2f} (3)"
    row = next(l for l in md.splitlines() if l.startswith("| sft-go tfidf lam 0.9->0.1 eta=90 |"))
    assert f"**{cell}**" in row and row.count("**") == 2 * 9  # 8 columns + Avg
    # Table 3: subject-specific Δ vs the sft row.
    subj = lambda b: statistics.mean(statistics.mean(scores(b, s)[c] for c in PAPER[:5]) for s in (1, 2, 3))
    assert f"{(subj(0.32) - subj(0.30)) * 100:+.2f}" in md
    # Table 4 pairs the configurations that differ only in lam_min.
    t4 = md.split("Static vs decaying lambda")[1].split("## ")[0]
    assert "| static 0.9 |" in t4 and "| 0.9 -> 0.1 |" in t4 and "eta=70" not in t4
    # Held-out worst group: mean ± std and the lowest in bold.
    w = [1.8 + s / 10 for s in (1, 2, 3)]
    assert f"{statistics.mean(w):.4f} ± {statistics.stdev(w):.4f} (3)" in md and "**1.7000 (3)**" not in md
    assert "**1.7000 ± 0.0000 (3)**" in md
    # The unevaluated run is listed as such, not dropped.
    assert "dft_s1 (trained, not evaluated)" in md
    figs = {p.name for p in out["figures"]}
    assert figs == {"fig2_group_losses.png", "fig2_heldout_losses.png", "fig3_eta.png"}
    html = out["html"].read_text()
    assert html.count("data:image/png;base64,") == 3 and "<b>" in html
    data = json.loads(out["json"].read_text())
    assert data["baseline"] == "sft" and len(data["groups"]) == 5


def test_report_cli_single_run_and_missing_columns(tmp_path):
    from sftgo.cli import main

    run = make_run(tmp_path, "one", 1, {"ARC-C": 0.5, "HellaSwag": 0.4})
    assert main(["report", str(run)]) == 0  # one run, no --output_dir: redraw its loss plot as before
    assert (run / "loss_groups.png").stat().st_size > 1000
    assert main(["report", str(run), "--output_dir", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    header = next(l for l in md.splitlines() if l.startswith("| Method | "))
    assert header == "| Method | ARC-C | HellaSwag | Avg | seeds |"  # only the columns that exist
    assert main(["report", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "r2")]) == 2


def _chromium():
    import shutil

    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_report_html_renders_in_headless_chromium(tmp_path):
    """The self-contained report.html, opened from a copy with no PNG files beside it, shows its figures: the
    screenshot holds the red 'important group' curves of Figure 2 (no table or text is that red)."""
    import shutil
    import subprocess

    import matplotlib.image as mpimg
    import numpy as np

    from sftgo.report import build_report

    root = tmp_path / "runs"
    for seed in (1, 2):
        make_run(root, f"sft_s{seed}", seed, scores(0.30, seed), 2.0, objective="sft")
        make_run(root, f"go_s{seed}", seed, scores(0.32, seed), 1.8)
    out = build_report([root], tmp_path / "out")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out["html"], alone / "report.html")  # no figure files next to it: images must be embedded
    shot = tmp_path / "shot.png"
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1300,3000", f"--screenshot={shot}", (alone / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    red = np.array([214, 39, 40]) / 255  # matplotlib tab:red
    near = np.abs(img - red).max(axis=-1) < 0.08
    assert near.sum() > 300, f"only {near.sum()} tab:red pixels: figures did not render"


def test_report_never_imports_torch_or_the_trainer(tmp_path):
    """The report reads files only: building one does not import torch, transformers, sftgo's trainer or the sweep."""
    import subprocess
    import sys

    root = tmp_path / "runs"
    for seed in (1, 2):
        make_run(root, f"go_s{seed}", seed, scores(0.3, seed), 1.5)
    (root / "go_s1" / "generations").mkdir()  # answers from `sftgo generate` are read too
    (root / "go_s1" / "generations" / "p.jsonl").write_text(
        json.dumps({"kind": "sftgo.generations", "format": 1, "settings": {"max_new_tokens": 4}}) + "\n"
        + json.dumps({"index": 0, "messages": [{"role": "user", "content": "Hi?"}], "answer": "Hello."}) + "\n")
    code = ("import sys; from sftgo.report import build_report; build_report([sys.argv[1]], sys.argv[2]); "
            "assert 'Hello.' in open(sys.argv[2] + '/report.md').read(); "
            "bad = [m for m in ('torch', 'transformers', 'sftgo.trainer', 'sftgo.models', 'sftgo.sweep') "
            "if m in sys.modules]; "
            "print('IMPORTED', bad)")
    r = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "IMPORTED []" in r.stdout


def test_learn_vs_forget_per_method(tmp_path):
    """Learn: held-out loss and GSM8K accuracy (math suite) with its Δ vs base; forget: mean Δ vs base over the
    general suite's rows; each mean ± std over seeds."""
    import statistics

    from sftgo.report import build_report

    def write(run, suite, rows):
        res = [{"task": t, "column": c, "metric": "acc", "value": v, "base_value": b, "delta_vs_base": v - b}
               for t, c, v, b in rows]
        cols = {c: v for _, c, v, _ in rows}
        (run / "eval" / f"{suite}.json").write_text(json.dumps({"format": 1, "suite": suite, "results": res,
                                                                 "columns": cols}))

    gsm = {("sft", 1): 0.20, ("sft", 2): 0.24, ("infosft", 1): 0.22, ("infosft", 2): 0.23}
    arc = {("sft", 1): 0.30, ("sft", 2): 0.28, ("infosft", 1): 0.35, ("infosft", 2): 0.34}
    for obj in ("sft", "infosft"):
        for seed in (1, 2):
            run = make_run(tmp_path / "runs", f"{obj}_s{seed}", seed, heldout=1.0 + seed / 10, objective=obj)
            write(run, "math", [("gsm8k", "GSM8K", gsm[obj, seed], 0.10)])
            write(run, "paper", [("arc_challenge", "ARC-C", arc[obj, seed], 0.36), ("hellaswag", "HellaSwag", 0.5, 0.5)])
    md = build_report([tmp_path / "runs"], tmp_path / "out")["md"].read_text()
    t = md.split("## Learn vs forget")[1].split("## ")[0]
    assert "learn: GSM8K" in t and "learn: mean Δ vs base (math)" in t and "forget: mean Δ vs base (general)" in t
    for obj in ("sft", "infosft"):
        g = [gsm[obj, s] for s in (1, 2)]
        learn = f"{statistics.mean(g) * 100:.2f} ± {statistics.stdev(g) * 100:.2f} (2)"
        ld = [x - 0.10 for x in g]
        learn_d = f"{statistics.mean(ld) * 100:+.2f} ± {statistics.stdev(ld) * 100:.2f} (2)"
        fd = [((arc[obj, s] - 0.36) + 0.0) / 2 for s in (1, 2)]  # ARC-C and HellaSwag rows, averaged per run
        forget = f"{statistics.mean(fd) * 100:+.2f} ± {statistics.stdev(fd) * 100:.2f} (2)"
        row = next(l for l in t.splitlines() if l.startswith(f"| {obj} |"))
        assert f"| {learn} | {learn_d} | {forget} | ARC-C, HellaSwag |" in row, row


def test_learn_vs_forget_shows_every_held_out_set(tmp_path):
    """A run evaluated on two held-out sets (training domain, then a general one) keeps both (heldout-<stem>.json);
    the table shows the general set's loss as its own column, mean ± std over seeds, beside the domain one."""
    import statistics

    from sftgo.report import build_report

    general = {("sft", 1): 1.71, ("sft", 2): 1.75, ("dft", 1): 1.62, ("dft", 2): 1.60}
    domain = {("sft", 1): 0.91, ("sft", 2): 0.95, ("dft", 1): 1.02, ("dft", 2): 1.08}
    for obj in ("sft", "dft"):
        for seed in (1, 2):
            run = make_run(tmp_path / "runs", f"{obj}_s{seed}", seed, objective=obj)
            (run / "eval").mkdir(exist_ok=True)
            for stem, loss in (("heldout_alpaca", general[obj, seed]), ("heldout_gsm8k", domain[obj, seed])):
                doc = {"format": 1, "suite": "heldout", "dataset": f"x/{stem}.json", "loss_ce": loss,
                       "loss_important": loss, "loss_unimportant": loss, "loss_worst": loss}
                (run / "eval" / f"heldout-{stem}.json").write_text(json.dumps(doc))
            (run / "eval" / "heldout.json").write_text(json.dumps(doc))  # the latest set: the training domain
    md = build_report([tmp_path / "runs"], tmp_path / "out")["md"].read_text()
    t = md.split("## Learn vs forget")[1].split("## ")[0]
    assert "learn: held-out loss (heldout_gsm8k)" in t and "held-out loss (heldout_alpaca)" in t, t
    for obj in ("sft", "dft"):
        cells = []
        for table in (domain, general):
            v = [table[obj, s] for s in (1, 2)]
            cells.append(f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f} (2)")
        row = next(l for l in t.splitlines() if l.startswith(f"| {obj} |"))
        assert f"| {obj} | {cells[0]} | {cells[1]} |" in row, row


def test_method_labels_leave_out_unset_settings_and_name_reference_models():
    """A setting only some runs set (a reference model) must not print as `=None` on the others, and a run's model
    folder is named with its run (ref/final), not as the bare `final` every run has."""
    from sftgo.report.runs import Group, label_groups

    cfgs = [{"objective": "sft"},
            {"objective": "sft-go", "scorer": "tfidf", "percentile": 70},
            {"objective": "sft-go", "scorer": "tfidf", "percentile": 90},
            {"objective": "sft-go", "scorer": "reference", "percentile": 90, "ref_model_name_or_path": "runs/cpu/ref/final"}]
    groups = [Group(config=c, runs=[]) for c in cfgs]
    label_groups(groups)
    assert [g.label for g in groups] == ["sft", "sft-go tfidf eta=70", "sft-go tfidf eta=90",
                                         "sft-go reference eta=90 ref=ref/final"]


def test_lam_min_equal_to_lam_is_a_static_lambda():
    """The trainer keeps lambda constant when lam_min >= lam (or unset); the report must call exactly those static."""
    from sftgo.objectives import lambda_schedule
    from sftgo.report.runs import Group, is_static_lam, label_groups, method_label
    from sftgo.report.tables import lambda_table

    for lam_min in (None, 0.95, 0.9, 0.5, 0.1):
        cfg = {"objective": "sft-go", "scorer": "tfidf", "lam": 0.9, "lam_min": lam_min}
        constant = len({lambda_schedule(s, 10, 0.9, 0.9 if lam_min is None else lam_min) for s in range(11)}) == 1
        assert is_static_lam(cfg) == constant == (lam_min is None or lam_min >= 0.9), lam_min
        assert ("static lam" in method_label(cfg, ["lam_min"])) == constant, lam_min
    groups = [Group(config={"objective": "sft-go", "scorer": "tfidf", "lam": 0.9, "lam_min": v}, runs=[])
              for v in (0.9, 0.1)]
    label_groups(groups)
    assert [g.label for g in groups] == ["sft-go tfidf static lam", "sft-go tfidf lam 0.9->0.1"]
    assert lambda_table(groups, None).data == {"sft-go tfidf static lam": "static", "sft-go tfidf lam 0.9->0.1": "decaying"}


def test_runs_table_leaves_out_unset_settings_and_marks_resumed_runs(tmp_path):
    from sftgo.report import build_report

    make_run(tmp_path, "a_s1", 1, {"ARC-C": 0.5})
    b = make_run(tmp_path, "b_s1", 1, {"ARC-C": 0.4}, scorer="reference", ref_model_name_or_path="runs/ref/final")
    s = json.loads((b / "summary.json").read_text())
    (b / "summary.json").write_text(json.dumps({**s, "legs": 2, "wall_time_s": 125.0}))
    md = build_report([tmp_path], tmp_path / "rep")["md"].read_text()
    row = {l.split(" | ")[0].lstrip("| "): l for l in md.splitlines() if l.startswith(("| a_s1 ", "| b_s1 "))}
    assert "ref_model_name_or_path" not in row["a_s1"] and "ref_model_name_or_path=ref/final" in row["b_s1"]
    assert "(2 legs: resumed)" in row["b_s1"] and "legs" not in row["a_s1"]


def test_eta_figure_and_selection_score_for_a_suite_without_an_avg_column(tmp_path, monkeypatch):
    """A plain task list (`--tasks openbookqa,...`) has no Avg column: the eta bars use the mean of its columns
    (they were drawn as empty axes), and a suite with no scores at all gives no figure."""
    import matplotlib.axes

    from sftgo.report import figures as F
    from sftgo.report.runs import baseline_group, find_runs, group_runs
    from sftgo.report.tables import run_average

    vals = {}
    for name, seed, obj, eta, a, b in [("sft_s1", 1, "sft", 90, 0.30, 0.50), ("p70_s1", 1, "sft-go", 70, 0.20, 0.40),
                                       ("p90_s1", 1, "sft-go", 90, 0.25, 0.55)]:
        d = make_run(tmp_path, name, seed, objective=obj, percentile=eta)
        (d / "eval").mkdir()
        res = [{"task": "obqa", "metric": "acc", "value": a}, {"task": "tqa", "metric": "mc2", "value": b}]
        (d / "eval" / "local-x.json").write_text(json.dumps({"format": 1, "suite": "local-x", "results": res}))
        vals[name] = (a + b) / 2
    runs, _ = find_runs([tmp_path])
    assert {r.name: run_average(r, "local-x") for r in runs} == pytest.approx(vals)
    groups = group_runs(runs)
    heights = []
    real_bar = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, x, h, *a, **k: heights.append(h) or real_bar(self, x, h, *a, **k))
    assert F.plot_eta_bars(groups, "local-x", baseline_group(groups))
    assert sorted(heights) == pytest.approx(sorted([vals["p70_s1"] * 100, vals["p90_s1"] * 100]))
    assert F.plot_eta_bars(groups, "no-such-suite", baseline_group(groups)) is None


def test_runs_from_before_token_weight_group_with_identical_new_runs(tmp_path):
    """A run made before --token_weight, channels, ASFT... existed (no such keys in its config.yaml) did what their
    defaults do: it is one method with a new run that writes them all at their defaults, and stays apart from a new run
    with a token weighting."""
    from sftgo.report.runs import find_runs, group_runs, label_groups

    from sftgo.config import SFTGoConfig
    from sftgo.report.runs import SETTINGS_ADDED

    defaults = SFTGoConfig(output_dir=str(tmp_path / "x"))
    assert {k: getattr(defaults, k) for k in SETTINGS_ADDED} == SETTINGS_ADDED  # the report's copy of the defaults
    make_run(tmp_path, "old_s1", 1)  # none of the newer keys
    make_run(tmp_path, "new_s2", 2, **SETTINGS_ADDED)
    make_run(tmp_path, "dft_s1", 1, token_weight="dft")
    runs, _ = find_runs([tmp_path])
    groups = group_runs(runs)
    label_groups(groups)
    sizes = sorted((len(g.runs), g.label) for g in groups)
    assert [n for n, _ in sizes] == [1, 2], sizes
    assert any("dft" in label for n, label in sizes if n == 1), sizes


def test_colliding_labels_show_each_setting_once(tmp_path):
    """Two sft methods that differ only in a setting sft ignores get the hidden settings spelled out, each one once."""
    from sftgo.report.runs import find_runs, group_runs

    make_run(tmp_path, "a_s1", 1, objective="sft", dataset="a.jsonl", percentile=90.0)
    make_run(tmp_path, "b_s1", 1, objective="sft", dataset="a.jsonl", percentile=50.0)
    make_run(tmp_path, "c_s1", 1, objective="sft", dataset="b.jsonl", percentile=90.0)
    groups = group_runs(find_runs([tmp_path])[0])
    labels = [g.label for g in groups]
    assert len(set(labels)) == 3, labels
    for label in labels:
        words = label.split(" ")
        assert len(words) == len(set(words)), label
