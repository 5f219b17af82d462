"""`sftgo sweep` end to end on a tiny model: a 2-method x 2-seed sweep killed mid-run and continued, evaluated by a
fake eval command (written here), then `sftgo report` checked against means / stds computed here."""

from __future__ import annotations

import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest


def fake_scores(objective: str, seed: int, percentile: float) -> dict:
    """What the fake evaluation reports for a run (distinct per method and seed)."""
    go = objective != "sft"
    mmlu = 0.30 + 0.013 * seed + (0.04 if go else 0.0)
    arc = 0.45 - 0.02 * seed * seed + (0.01 if go else 0.0)
    worst = 2.0 + 0.05 * seed - (0.1 if go else 0.0) + (percentile / 1000 if go else 0.0)
    return {"MMLU-0": mmlu, "ARC-C": arc, "Avg": (mmlu + arc) / 2, "base": {"MMLU-0": 0.31, "ARC-C": 0.44},
            "heldout": {"loss_ce": 1.5 + 0.01 * seed, "loss_important": worst, "loss_unimportant": 1.2,
                        "loss_worst": worst}}


FAKE_EVAL = '''
import json, sys
from datetime import datetime
from pathlib import Path
import yaml

{source}

run = Path(sys.argv[1])
cfg = yaml.safe_load((run / "config.yaml").read_text())
s = fake_scores(cfg["objective"], int(cfg["seed"]), float(cfg.get("percentile") or 0))
(run / "eval").mkdir(exist_ok=True)
h = dict(s["heldout"], format=1, suite="heldout", scorer="tfidf", percentile=90)
(run / "eval" / "heldout.json").write_text(json.dumps(h))
if len(sys.argv) > 2 and sys.argv[2]:
    res = [{{"task": c.lower(), "column": c, "metric": "acc", "value": s[c], "base_value": s["base"][c],
             "delta_vs_base": s[c] - s["base"][c]}} for c in ("MMLU-0", "ARC-C")]
    cols = {{c: s[c] for c in ("MMLU-0", "ARC-C", "Avg")}}
    (run / "eval" / "paper.json").write_text(json.dumps({{"format": 1, "suite": "paper", "results": res, "columns": cols}}))
with open(run.parent / "eval_calls.txt", "a") as f:
    f.write(run.name + "\\n")
'''


def write_fake_eval(tmp_path: Path) -> Path:
    p = tmp_path / "fake_eval.py"
    p.write_text(FAKE_EVAL.format(source=inspect.getsource(fake_scores)))
    return p


def run_here(capfd, cmd, env=None):
    """``cmd`` (``[python, -m, sftgo.cli, ...]``) run in this process as sftgo.cli.main, with ``env`` (a whole
    environment, as subprocess.run takes it) in os.environ meanwhile: the command without its own interpreter and
    transformers import (~5 s of CPU); the training runs a sweep starts are still processes of their own. Returns
    what subprocess.run(cmd, capture_output=True, text=True, env=env) would (returncode, stdout, stderr)."""
    from unittest import mock

    from sftgo.cli import main

    assert cmd[:3] == [sys.executable, "-m", "sftgo.cli"], cmd
    capfd.readouterr()  # what came before is not this command's output
    with mock.patch.dict(os.environ, env or {}, clear=env is not None):
        rc = main(cmd[3:])
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(cmd, rc, out, err)


def intervals(log: Path) -> list[tuple[datetime, datetime]]:
    """(start, end) of each child a sweep's train log (logs/NAME.train.log) records."""
    text = log.read_text()
    starts = [datetime.fromisoformat(t) for t in re.findall(r"^# start (\S+)$", text, re.M)]
    ends = [datetime.fromisoformat(t) for t in re.findall(r"^# end (\S+) exit", text, re.M)]
    assert len(starts) == len(ends) >= 1, text[-2000:]
    return list(zip(starts, ends))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def cell(values, n_expected):
    m, s = statistics.mean(values), statistics.stdev(values)
    assert len(values) == n_expected
    return f"{m * 100:.2f} ± {s * 100:.2f} ({n_expected})"


# Steps per run: enough that the kill below lands mid-run (after checkpoint-5 of run 2, with 10 steps and 2
# checkpoints to go), few enough that four runs stay cheap.
STEPS = 15


def sweep_cmd(sweep_dir, tiny_model_dir, alpaca_file, cache, fake_eval, *extra):
    return [sys.executable, "-m", "sftgo.cli", "sweep", "--grid", "objective=sft,sft-go", "--seeds", "1,2",
            "--eval", "paper", "--eval_cmd", f"{sys.executable} {fake_eval} {{run_dir}} {{tasks}}",
            "--output_dir", str(sweep_dir), "--model_name_or_path", tiny_model_dir, "--dataset", alpaca_file,
            "--max_steps", str(STEPS), "--save_steps", "5", "--save_total_limit", "3", "--per_device_train_batch_size", "2",
            "--max_length", "64", "--score_cache_dir", str(cache), *extra]


@pytest.mark.serial
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def test_sweep_killed_continued_and_reported(tmp_path, tiny_model_dir, alpaca_file, capfd):
    fake_eval = write_fake_eval(tmp_path)
    sweep_dir = tmp_path / "sweep"
    cmd = sweep_cmd(sweep_dir, tiny_model_dir, alpaca_file, tmp_path / "cache", fake_eval)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # 1. Start, and kill the sweep (SIGKILL: no handler runs) while its 2nd run is training, after a checkpoint.
    log1 = open(tmp_path / "sweep1.log", "w")
    proc = subprocess.Popen(cmd, stdout=log1, stderr=subprocess.STDOUT, env=env)
    second = sweep_dir / "sft-go_tfidf_s1"
    deadline = time.time() + 600
    while not (second / "checkpoint-5" / "sftgo_complete.json").exists():
        assert proc.poll() is None, (tmp_path / "sweep1.log").read_text()[-3000:]
        assert time.time() < deadline, "second run never reached its first checkpoint"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    log1.close()
    state = json.loads((sweep_dir / "sweep.json").read_text())
    runs = {r["name"]: r for r in state["runs"]}
    assert [r["name"] for r in state["runs"]] == ["sft_s1", "sft-go_tfidf_s1", "sft_s2", "sft-go_tfidf_s2"]
    assert runs["sft_s1"]["state"] == "complete"
    assert runs["sft-go_tfidf_s1"]["state"] == "training"
    child = runs["sft-go_tfidf_s1"]["pid"]
    for _ in range(300):  # the training child follows its parent (PR_SET_PDEATHSIG), it is not left writing
        if not alive(child):
            break
        time.sleep(0.1)
    assert not alive(child), "training subprocess outlived the killed sweep"
    assert not (second / "summary.json").exists()
    first_summary = (sweep_dir / "sft_s1" / "summary.json").stat().st_mtime
    assert (sweep_dir / "eval_calls.txt").read_text().split() == ["sft_s1"]

    # 2. The same command continues: run 1 skipped, run 2 resumed from its last checkpoint, runs 3-4 trained.
    out = run_here(capfd, cmd, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[1/4] sft_s1: complete, skipped" in out.stdout
    assert "[2/4] sft-go_tfidf_s1: resuming from its last checkpoint" in out.stdout
    assert "remaining ~" in out.stdout
    assert (sweep_dir / "sft_s1" / "summary.json").stat().st_mtime == first_summary
    s2 = json.loads((second / "summary.json").read_text())
    assert s2["resumed_from"] and Path(s2["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(s2["resumed_from"]).name.split("-")[1]) >= 5 and s2["steps"] == STEPS
    steps = [json.loads(l)["step"] for l in (second / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # no gap, no duplicate across the kill
    state = json.loads((sweep_dir / "sweep.json").read_text())
    assert {r["state"] for r in state["runs"]} == {"complete"}
    assert sorted((sweep_dir / "eval_calls.txt").read_text().split()) == sorted(
        ["sft_s1", "sft-go_tfidf_s1", "sft_s2", "sft-go_tfidf_s2"])
    # Complete runs keep final/ and eval/ and, by default (keep_checkpoints none), none of their checkpoint-*/: their
    # training deletes them once it completes.
    done = sorted(p for p in sweep_dir.iterdir() if (p / "summary.json").exists())
    assert [p.name for p in done] == ["sft-go_tfidf_s1", "sft-go_tfidf_s2", "sft_s1", "sft_s2"]
    for r in done:
        assert (r / "final").is_dir() and (r / "eval" / "paper.json").exists()
        assert sorted(p.name for p in r.glob("checkpoint-*")) == [], r
    assert ("deleted checkpoint-5, checkpoint-10, checkpoint-15 (keep_checkpoints none"
            in (sweep_dir / "logs" / "sft_s1.train.log").read_text())

    # 3. A third invocation has nothing to do.
    again = run_here(capfd, cmd, env)
    assert again.returncode == 0 and again.stdout.count("complete, skipped") == 4

    # 4. The report's tables equal the means / stds of what the fake evaluation wrote.
    from sftgo.cli import main

    rep = tmp_path / "report"
    assert main(["report", str(sweep_dir), "--output_dir", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    exp = {o: [fake_scores(o, s, 90.0) for s in (1, 2)] for o in ("sft", "sft-go")}
    for obj, label in (("sft", "sft"), ("sft-go", "sft-go tfidf")):
        cells = [cell([e[c] for e in exp[obj]], 2) for c in ("MMLU-0", "ARC-C", "Avg")]
        if obj == "sft-go":  # higher on every column: bold
            cells = [f"**{c}**" for c in cells]
        assert f"| {label} | {' | '.join(cells)} | 1, 2 |" in md, md
        worst = [e["heldout"]["loss_worst"] for e in exp[obj]]
        m, s = statistics.mean(worst), statistics.stdev(worst)
        txt = f"{m:.4f} ± {s:.4f} (2)"
        assert (f"**{txt}**" if obj == "sft-go" else txt) in md
        forget = [statistics.mean([e["MMLU-0"] - 0.31, e["ARC-C"] - 0.44]) for e in exp[obj]]
        fm, fs = statistics.mean(forget), statistics.stdev(forget)
        assert f"{fm * 100:+.2f} ± {fs * 100:.2f} (2)" in md
    # Table 3: subject-specific average (MMLU-0, ARC-C) and its difference from the sft row.
    subj = {o: statistics.mean([(e["MMLU-0"] + e["ARC-C"]) / 2 for e in exp[o]]) for o in exp}
    assert f"{(subj['sft-go'] - subj['sft']) * 100:+.2f}" in md
    data = json.loads((rep / "report.json").read_text())
    assert len(data["groups"]) == 2 and data["baseline"] == "sft"
    assert (rep / "fig2_group_losses.png").stat().st_size > 5000
    assert "data:image/png;base64," in (rep / "report.html").read_text()


def test_select_heldout_worst_continues_only_the_best(tmp_path, tiny_model_dir, alpaca_file, capfd):
    """Two grid points for 3 steps; the fake held-out loss is lower for eta = 50, so only that point (and the sft
    baseline) goes on to the full 6 steps, continuing the selection run from its step-3 checkpoint."""
    fake_eval = write_fake_eval(tmp_path)
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "sftgo.cli", "sweep", "--grid", "percentile=90,50", "--seeds", "1",
           "--baseline", "objective=sft", "--heldout", "unused.jsonl", "--select", "heldout_worst",
           "--select_steps", "3", "--eval", "paper", "--eval_cmd", f"{sys.executable} {fake_eval} {{run_dir}} {{tasks}}",
           "--output_dir", str(sweep_dir), "--model_name_or_path", tiny_model_dir, "--dataset", alpaca_file,
           "--max_steps", "6", "--save_steps", "100", "--per_device_train_batch_size", "2", "--max_length", "64",
           "--score_cache_dir", str(tmp_path / "cache"), "--lr_scheduler_type", "linear"]
    out = run_here(capfd, cmd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    state = json.loads((sweep_dir / "sweep.json").read_text())
    sel = state["selection"]
    assert sel["chosen"] == "sft-go_tfidf_p50"
    # The short runs keep their own records, configs and logs beside the full-budget run of the same point and seed.
    recs = {r["name"]: r for r in state["runs"]}
    assert recs["select/sft-go_tfidf_p50_s1"]["state"] == "selection-evaluated"
    assert recs["select/sft-go_tfidf_p90_s1"]["dir"] == "select/sft-go_tfidf_p90_s1"
    assert recs["sft-go_tfidf_p50_s1"]["state"] == "complete" and recs["sft-go_tfidf_p50_s1"]["dir"] == "sft-go_tfidf_p50_s1"
    assert "stop_after_steps: 3" in (sweep_dir / "configs" / "select" / "sft-go_tfidf_p50_s1.yaml").read_text()
    assert "stop_after_steps" not in (sweep_dir / "configs" / "sft-go_tfidf_p50_s1.yaml").read_text()
    assert (sweep_dir / "logs" / "select" / "sft-go_tfidf_p50_s1.train.log").exists()
    # One slot (the default): the training processes ran one after the other, none overlapping another.
    spans = sorted(span for log in (sweep_dir / "logs").rglob("*.train.log") for span in intervals(log))
    assert len(spans) == 4 and all(a[1] < b[0] for a, b in zip(spans, spans[1:])), spans
    assert {p["name"]: round(p["loss_worst"], 4) for p in sel["points"]} == {
        "sft-go_tfidf_p90": round(2.05 - 0.1 + 0.09, 4), "sft-go_tfidf_p50": round(2.05 - 0.1 + 0.05, 4)}
    names = sorted(p.name for p in sweep_dir.iterdir() if (p / "config.yaml").exists())
    assert names == ["sft-go_tfidf_p50_s1", "sft_s1"]
    # The loser stopped at the short budget; the winner's seed-1 run continued from step 3 to 6.
    loser = json.loads((sweep_dir / "select" / "sft-go_tfidf_p90_s1" / "summary.json").read_text())
    assert loser["steps"] == 3 and loser["stopped_early"] is True
    win = json.loads((sweep_dir / "sft-go_tfidf_p50_s1" / "summary.json").read_text())
    assert win["steps"] == 6 and not win["stopped_early"] and Path(win["resumed_from"]).name == "checkpoint-3"
    # Same learning-rate schedule as an uninterrupted 6-step run (the baseline's): a linear 6-step decay throughout.
    recs = [json.loads(l) for l in (sweep_dir / "sft-go_tfidf_p50_s1" / "metrics.jsonl").read_text().splitlines()]
    other = [json.loads(l) for l in (sweep_dir / "sft_s1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 7))
    assert [r["learning_rate"] for r in recs] == pytest.approx([r["learning_rate"] for r in other])
    from sftgo.report import build_report

    paths = build_report([sweep_dir], tmp_path / "rep")
    md = paths["md"].read_text()
    assert "Selection by held-out worst-group loss" in md
    # Beside each point's selection loss: its full-budget benchmark score (the suite's Avg column),
    # the full grid's verdict. Only the chosen point has full-budget runs here, so it is also the grid's best.
    e = fake_scores("sft-go", 1, 50.0)
    score = (e["MMLU-0"] + e["ARC-C"]) / 2 * 100
    assert f"| sft-go_tfidf_p50 | 2.0000 | 3 | **{score:.2f} (1)** | chosen, grid best |" in md, md
    assert "| sft-go_tfidf_p90 | 2.0400 | 3 | – |  |" in md, md


def test_sweep_with_real_sftgo_eval_heldout(tmp_path, tiny_model_dir, alpaca_file, capfd):
    """The default evaluation is `sftgo eval RUN --heldout DATA` as a subprocess; its eval/heldout.json reaches the
    report's held-out table."""
    pytest.importorskip("lm_eval")
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "sftgo.cli", "sweep", "--seeds", "3", "--heldout", alpaca_file,
           "--eval_args", "--max_examples 4", "--output_dir", str(sweep_dir), "--model_name_or_path", tiny_model_dir,
           "--dataset", alpaca_file, "--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "64",
           "--score_cache_dir", str(tmp_path / "cache")]
    out = run_here(capfd, cmd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = sweep_dir / "sft-go_tfidf_s3"
    h = json.loads((run / "eval" / "heldout.json").read_text())
    assert h["loss_worst"] == max(h["loss_important"], h["loss_unimportant"])
    state = json.loads((sweep_dir / "sweep.json").read_text())
    assert state["runs"][0]["state"] == "complete" and "sftgo.cli eval" in state["runs"][0]["eval_command"]
    from sftgo.report import build_report

    md = build_report([sweep_dir], tmp_path / "rep")["md"].read_text()
    assert f"{h['loss_worst']:.4f} (1)" in md


def test_runs_keep_checkpoints_as_asked_and_prune_checkpoints_is_keep_none(tmp_path, tiny_model_dir, alpaca_file,
                                                                          capfd):
    """A complete run keeps final/ and eval/; of its checkpoint-*/ what --keep_checkpoints says: all of them when
    passed `all` (a train flag of the sweep; none by default: test_sweep_killed_continued_and_reported checks that on
    its sweep); the sweep-file key prune_checkpoints is keep_checkpoints none, applied to the complete runs of a
    finished sweep."""
    fake_eval = write_fake_eval(tmp_path)
    cache = tmp_path / "cache"

    def sweep(name, *extra):
        d = tmp_path / name
        cmd = sweep_cmd(d, tiny_model_dir, alpaca_file, cache, fake_eval, *extra)
        cmd[cmd.index("--max_steps") + 1] = "4"
        cmd[cmd.index("--save_steps") + 1] = "2"
        cmd[cmd.index("--seeds") + 1] = "1"
        out = run_here(capfd, cmd)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return d, out.stdout + out.stderr

    kept, _ = sweep("kept", "--keep_checkpoints", "all")
    runs = sorted(p for p in kept.iterdir() if (p / "summary.json").exists())
    assert [p.name for p in runs] == ["sft-go_tfidf_s1", "sft_s1"]
    for r in runs:
        assert (r / "final").is_dir() and (r / "eval" / "paper.json").exists()
        ckpts = sorted(p.name for p in r.glob("checkpoint-*"))
        assert ckpts == ["checkpoint-2", "checkpoint-4"], (r, ckpts)
    # The sweep-file key, on a finished sweep: complete runs are pruned when the sweep is run again.
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"prune_checkpoints: true\noutput_dir: {kept}\n")
    cmd = sweep_cmd(kept, tiny_model_dir, alpaca_file, cache, fake_eval)
    cmd[cmd.index("--max_steps") + 1] = "4"
    cmd[cmd.index("--save_steps") + 1] = "2"
    cmd[cmd.index("--seeds") + 1] = "1"
    cmd.insert(cmd.index("sweep") + 1, str(spec))
    out = run_here(capfd, cmd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not list(kept.glob("*/checkpoint-*")) and (kept / "sft_s1" / "final").is_dir()
    assert "sft_s1: removed checkpoint-2, checkpoint-4 (keep_checkpoints none" in out.stdout + out.stderr
