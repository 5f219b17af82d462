"""sftgo report --capacity: results against model capacity (sftgo.report.capacity), on run directories written by
the test with numbers it chooses."""

import json

import pytest
import yaml


def sft_worst(cap, seed, stem):
    return 2.0 + 16 / cap + seed / 10 + (0.5 if stem == "heldout" else 0.0)


def go_delta(cap, seed, lam, stem):
    """The chosen SFT-GO minus SFT worst-group difference: differs by seed, capacity, lam and set."""
    return (-0.01 if lam == 0.9 else 0.02) * seed * (cap / 16) + (0.001 if stem == "heldout" else 0.0)


def model_dir(root, width):
    d = root / "models" / f"h{width}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": width}))
    return d


def make_run(root, name, seed, model, worst, ce=1.0, epochs=None, final_width=None, weights=None, **settings):
    """A run directory as `sftgo sweep` + `sftgo eval --heldout` (two sets) leave it; ``weights``: the mean_weight
    logged at each of the 12 steps (a run with a token weighting)."""
    d = root / name
    (d / "eval").mkdir(parents=True)
    cfg = {"model_name_or_path": str(model), "dataset": "d.jsonl", "objective": "sft-go", "scorer": "tfidf",
           "percentile": 90.0, "lam": 0.9, "lam_min": None, "max_steps": 12, "seed": seed, "output_dir": str(d),
           **settings}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    recs = [{"step": s, "loss_ce": v, "epoch": s / 4, "learning_rate": 1e-3 * (12 - s) / 12}
            for s, v in enumerate(epochs or [3.0] * 12, start=1)]
    for r, w in zip(recs, weights or []):
        r["mean_weight"] = w
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "summary.json").write_text(json.dumps({"steps": 12, "supervised_tokens": 100, "wall_time_s": 5.0}))
    for stem, w in worst.items():
        (d / "eval" / f"heldout-{stem}.json").write_text(json.dumps(
            {"format": 1, "suite": "heldout", "dataset": f"{stem}.jsonl", "loss_ce": ce + w / 10,
             "loss_important": w, "loss_unimportant": w - 1, "loss_worst": w}))
    if final_width is not None:  # the trained model's own config.json (what --capacity reads first)
        (d / "final").mkdir()
        (d / "final" / "config.json").write_text(json.dumps({"hidden_size": final_width}))
    return d


def build_sweep(root, caps=(16, 32), seeds=(1, 2, 3)):
    for cap in caps:
        m = model_dir(root, cap)
        for seed in seeds:
            base = {stem: sft_worst(cap, seed, stem) for stem in ("train", "heldout")}
            make_run(root, f"sft_h{cap}_s{seed}", seed, m, base, objective="sft")
            for lam in (0.9, 0.5):
                make_run(root, f"go_h{cap}_lam{lam}_s{seed}", seed, m,
                         {stem: base[stem] + go_delta(cap, seed, lam, stem) for stem in base}, lam=lam)


def view_of(root, key="hidden_size"):
    from sftgo.report.capacity import CapacityView
    from sftgo.report.runs import find_runs, group_runs

    runs, _ = find_runs([root])
    return CapacityView(group_runs(runs), key)


def test_paired_differences_pair_each_run_with_sft_of_its_seed_and_capacity(tmp_path):
    from sftgo.report.capacity import paired_difference_table

    root = tmp_path / "sweep"
    build_sweep(root)
    # Seeds listed out of order on disk must still pair by seed.
    view = view_of(root)
    assert view.capacities() == [16, 32]
    table = paired_difference_table(view)
    labels = {json.dumps(k): v for k, v in view.labels.items()}
    assert sorted(set(labels.values())) == ["sft", "sft-go tfidf lam=0.5", "sft-go tfidf lam=0.9"]
    for lam in (0.9, 0.5):
        for stem in ("train", "heldout"):
            for cap in (16, 32):
                got = table.data[f"sft-go tfidf lam={lam:g}"][stem][str(cap)]["loss_worst"]
                assert got == pytest.approx([go_delta(cap, s, lam, stem) for s in (1, 2, 3)], abs=1e-12)
    row = next(r for r in table.rows if r[:3] == ["sft-go tfidf lam=0.9", "train", "32"])
    assert row[5] == "3/3" and "s2: -0.0400" in row[4]  # every seed below SFT; the per-seed values listed
    row = next(r for r in table.rows if r[:3] == ["sft-go tfidf lam=0.5", "heldout", "16"])
    assert row[5] == "0/3"
    assert not any(r[0] == "sft" for r in table.rows)  # SFT is the reference, not a row


def test_a_run_without_its_sft_partner_is_left_out(tmp_path):
    from sftgo.report.capacity import paired_difference_table

    root = tmp_path / "sweep"
    build_sweep(root, caps=(16,), seeds=(1, 2))
    import shutil

    shutil.rmtree(root / "sft_h16_s2")  # seed 2's SFT run is missing: seed 2 has no pair
    table = paired_difference_table(view_of(root))
    got = table.data["sft-go tfidf lam=0.9"]["train"]["16"]["loss_worst"]
    assert got == pytest.approx([go_delta(16, 1, 0.9, "train")])


def test_capacity_from_config_key_trained_model_or_model_folder(tmp_path):
    from sftgo.report.capacity import capacity_of
    from sftgo.report.runs import load_run

    m = model_dir(tmp_path, 64)
    a = load_run(make_run(tmp_path, "a", 1, m, {}))
    assert capacity_of(a, "hidden_size") == 64  # the folder model_name_or_path names
    b = load_run(make_run(tmp_path, "b", 1, m, {}, final_width=8))
    assert capacity_of(b, "hidden_size") == 8  # the trained model's config.json first
    c = load_run(make_run(tmp_path, "c", 1, m, {}, lora_r=4))
    assert capacity_of(c, "lora_r") == 4 and capacity_of(c, "num_layers") is None


def test_convergence_table_reads_the_last_three_epochs(tmp_path):
    from sftgo.report.capacity import convergence_table

    m = model_dir(tmp_path / "sweep", 16)
    # 12 steps, 4 per epoch: epoch means 3.0, 2.0, 1.0 (steps at epoch 0.25 ... 3.0).
    losses = [3.5, 2.5, 3.5, 2.5, 2.0, 2.0, 2.0, 2.0, 1.2, 0.8, 1.2, 0.8]
    make_run(tmp_path / "sweep", "sft_s1", 1, m, {"train": 1.0}, epochs=losses, objective="sft")
    # Seed 2 is still training (no summary.json yet): left out, though its loss so far would move the means.
    (make_run(tmp_path / "sweep", "sft_s2", 2, m, {}, epochs=[9.0] * 12, objective="sft") / "summary.json").unlink()
    table = convergence_table(view_of(tmp_path / "sweep"))
    assert table.rows == [["sft", "16", "3.0000 (1)", "2.0000 (1)", "1.0000 (1)", "0.333 (1)", "0.000000 (1)"]]


def test_sft_with_a_token_weighting_is_a_method_paired_with_plain_sft(tmp_path):
    """`--objective sft --token_weight chord` (or power) is a method compared with SFT, not a second SFT baseline:
    it gets its own paired differences, and plain SFT stays every run's one partner."""
    from sftgo.report.capacity import paired_difference_table
    from sftgo.report.runs import baseline_group, find_runs, group_runs

    root = tmp_path / "sweep"
    build_sweep(root, caps=(16,), seeds=(1, 2))
    m = model_dir(root, 16)
    for seed in (1, 2):
        base = {stem: sft_worst(16, seed, stem) for stem in ("train", "heldout")}
        make_run(root, f"chord_h16_s{seed}", seed, m, {stem: base[stem] - 0.25 * seed for stem in base},
                 objective="sft", token_weight="chord")
    table = paired_difference_table(view_of(root))
    chord = [k for k in table.data if "chord" in k]
    assert len(chord) == 1 and chord[0].startswith("sft")
    assert table.data[chord[0]]["train"]["16"]["loss_worst"] == pytest.approx([-0.25, -0.5])
    # SFT-GO still pairs with plain SFT (the chord runs are no second partner).
    go = next(k for k in table.data if k.startswith("sft-go tfidf lam=0.9"))
    assert table.data[go]["train"]["16"]["loss_worst"] == pytest.approx(
        [go_delta(16, s, 0.9, "train") for s in (1, 2)])
    runs, _ = find_runs([root])
    assert baseline_group(group_runs(runs)).config.get("token_weight", "none") == "none"


def test_weight_table_reads_the_first_step_and_the_first_and_last_epoch(tmp_path):
    from sftgo.report.capacity import weight_table

    root = tmp_path / "sweep"
    m = model_dir(root, 16)
    make_run(root, "sft_s1", 1, m, {"train": 1.0}, objective="sft")  # no token weighting: no row
    # 12 steps, 4 per epoch: the first step 0.4, the first epoch's mean 0.25, the last epoch's 0.05 (seed 1) and
    # 0.1 (seed 2).
    make_run(root, "infosft_s1", 1, m, {"train": 1.0}, objective="infosft",
             weights=[0.4, 0.2, 0.2, 0.2] + [0.1] * 4 + [0.05] * 4)
    make_run(root, "infosft_s2", 2, m, {"train": 1.0}, objective="infosft",
             weights=[0.4, 0.2, 0.2, 0.2] + [0.1] * 4 + [0.1] * 4)
    table = weight_table(view_of(root))
    assert [r[:2] for r in table.rows] == [["infosft", "16"]]
    got = table.data["infosft"]["16"]
    assert got["first_step"] == pytest.approx((0.4, 0.0)) and got["first_epoch"] == pytest.approx((0.25, 0.0))
    assert got["last_epoch"][0] == pytest.approx(0.075) and got["ratio"][0] == pytest.approx(0.3)
    assert table.rows[0][4].startswith("0.0750 ± 0.0354 (2)")


def test_figure_legend_names_every_series_also_one_missing_from_the_first_panel(tmp_path, monkeypatch):
    """A method evaluated on the training rows only (no heldout set) still gets its legend entry: the legend is of
    every panel's series, not of the first panel's."""
    from sftgo.report import figures
    from sftgo.report.capacity import plot_paired_differences

    root = tmp_path / "sweep"
    build_sweep(root, caps=(16, 32), seeds=(1,))
    for cap in (16, 32):
        make_run(root, f"dft_h{cap}_s1", 1, model_dir(root, cap), {"train": 1.0}, objective="dft")  # train set only
    figs = []
    monkeypatch.setattr(figures, "_png", lambda fig: figs.append(fig) or b"png")
    assert plot_paired_differences(view_of(root)) == b"png"
    first = figs[0].axes[0]
    assert first.get_title() == "heldout: worst group"
    assert sorted(t.get_text() for t in first.get_legend().get_texts()) == ["dft", "sft-go tfidf lam=0.5",
                                                                           "sft-go tfidf lam=0.9"]


def test_figure_leaves_out_a_set_with_no_pair(tmp_path, monkeypatch):
    """A set only the SFT runs were evaluated on (an older sweep's extra set) has no paired difference: no empty row
    of panels for it; the sets with pairs keep theirs."""
    from sftgo.report import figures
    from sftgo.report.capacity import plot_paired_differences

    root = tmp_path / "sweep"
    build_sweep(root, caps=(16, 32), seeds=(1,))
    for cap in (16, 32):
        make_run(root, f"sft_h{cap}_s2", 2, model_dir(root, cap), {"train": 4.0, "unseen": 9.0}, objective="sft")
        make_run(root, f"go_h{cap}_lam0.9_s2", 2, model_dir(root, cap), {"train": 3.0}, lam=0.9)
    figs = []
    monkeypatch.setattr(figures, "_png", lambda fig: figs.append(fig) or b"png")
    assert plot_paired_differences(view_of(root)) == b"png"
    assert [ax.get_title() for ax in figs[0].axes] == ["heldout: worst group", "heldout: average",
                                                       "train: worst group", "train: average"]


def test_report_capacity_section_and_figure_through_the_cli(tmp_path):
    from sftgo.cli import main

    root = tmp_path / "sweep"
    build_sweep(root)
    out = tmp_path / "report"
    assert main(["report", str(root), "--output_dir", str(out), "--capacity", "hidden_size"]) == 0
    md = (out / "report.md").read_text()
    for title in ("Group losses by hidden_size", "Paired difference from SFT by hidden_size",
                  "Paired difference from SFT against hidden_size", "Training loss at the end of each run"):
        assert f"## {title}" in md
    png = out / "fig_capacity_paired.png"
    assert png.exists() and png.stat().st_size > 5000
    data = json.loads((out / "report.json").read_text())
    losses = data["tables"]["Group losses by hidden_size"]["data"]
    m, s = losses["sft"]["32"]["heldout:loss_worst"]
    assert m == pytest.approx(sum(sft_worst(32, x, "heldout") for x in (1, 2, 3)) / 3) and s == pytest.approx(0.1)
    # Without --capacity the report has none of it; with a key no run has, one line says so.
    assert main(["report", str(root), "--output_dir", str(tmp_path / "plain")]) == 0
    assert "by hidden_size" not in (tmp_path / "plain" / "report.md").read_text()
    assert main(["report", str(root), "--output_dir", str(tmp_path / "none"), "--capacity", "lora_r"]) == 0
    assert "No run has 'lora_r'" in (tmp_path / "none" / "report.md").read_text()
