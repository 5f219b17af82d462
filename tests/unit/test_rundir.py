"""Run-directory names are the on-disk format (old runs must load): spelled once, in sftgo.rundir, and importable
where they were public before."""

import json

from sftgo import rundir


def test_names_are_the_on_disk_format():
    assert (rundir.CONFIG, rundir.METRICS, rundir.SUMMARY, rundir.FINAL, rundir.EVAL_DIR, rundir.HELDOUT,
            rundir.GENERATIONS_DIR, rundir.GENERATIONS_KIND) == (
        "config.yaml", "metrics.jsonl", "summary.json", "final", "eval", "heldout.json", "generations",
        "sftgo.generations")
    assert (rundir.LOSS_GROUPS_PNG, rundir.LOSS_CHANNELS_PNG) == ("loss_groups.png", "loss_channels.png")
    assert (rundir.COMPLETE_MARKER, rundir.TRAINER_STATE, rundir.STATE_FILE, rundir.COUNTERS_FILE) == (
        "sftgo_complete.json", "trainer_state.json", "sftgo_state.json", "sftgo_counters.json")
    assert (rundir.SWEEP_STATE, rundir.EVAL_RECORD, rundir.SELECTION_HELDOUT) == (
        "sweep.json", "evaluated.json", "selection_heldout.json")
    assert rundir.checkpoint_name(40) == "checkpoint-40"
    assert rundir.CHECKPOINT_RE.match("checkpoint-40").group(1) == "40"
    assert not rundir.CHECKPOINT_RE.match(".deleting-checkpoint-40")


def test_old_import_paths_still_work():
    from sftgo.checkpoints import COMPLETE_MARKER, TRAINER_STATE, checkpoint_folders, is_complete
    from sftgo.evaluation.run import model_fingerprint
    from sftgo.generate import KIND, read_generations
    from sftgo.models import DEFAULT_MODEL, model_fingerprint as fingerprint
    from sftgo.report.runs import read_metrics
    from sftgo.trainer import COUNTERS_FILE, STATE_FILE

    assert (COMPLETE_MARKER, TRAINER_STATE, STATE_FILE, COUNTERS_FILE, KIND) == (
        rundir.COMPLETE_MARKER, rundir.TRAINER_STATE, rundir.STATE_FILE, rundir.COUNTERS_FILE, rundir.GENERATIONS_KIND)
    assert (checkpoint_folders, is_complete, read_generations, read_metrics) == (
        rundir.checkpoint_folders, rundir.is_complete, rundir.read_generations, rundir.read_metrics)
    assert model_fingerprint is fingerprint and DEFAULT_MODEL == "smollm2-135m-instruct"


def test_readers(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-10").mkdir(parents=True)
    (run / "checkpoint-9").mkdir()
    (run / "checkpoint-10" / rundir.COMPLETE_MARKER).write_text("{}")
    assert [s for s, _ in rundir.checkpoint_folders(run)] == [9, 10]
    assert [rundir.is_complete(p) for _, p in rundir.checkpoint_folders(run)] == [False, True]
    (run / "config.yaml").write_text("objective: sft\nlam: 0.5\n")
    assert rundir.read_run_config(run) == {"objective": "sft", "lam": 0.5}
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n[1]\n" + '{"step": 2')  # a list, a torn line
    assert rundir.read_metrics(run / "metrics.jsonl") == [{"step": 1}]
    assert rundir.read_metrics(run / "missing.jsonl") == []
    gen = run / "generations" / "p.jsonl"
    gen.parent.mkdir()
    gen.write_text(json.dumps({"kind": "sftgo.generations"}) + "\n" + json.dumps({"id": 1}) + "\n")
    assert rundir.read_generations(gen) == ({"kind": "sftgo.generations"}, [{"id": 1}])
    assert rundir.read_generations(run / "metrics.jsonl") == (None, [])
