"""`sftgo eval` on tiny models: lm-eval's numbers vs independent computations, local files -> the Hub schema of the
harness's registered tasks, held-out group losses vs full logits, the base cache, and bad input. Offline; every file
is written here."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

from sftgo.cli import main as cli_main  # noqa: E402
from sftgo.evaluation import run as R  # noqa: E402
from sftgo.evaluation import tasks as T  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTGO_CACHE", str(tmp_path / "cache"))


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MC_ROWS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "the sea and the waves roll in", "seven"], "answer": 0},
    {"question": "Add three and four.", "choices": ["seven", "dog", "the quick brown fox jumps over"], "answer": "A"},
    {"question": "Sort these numbers: 5, 2, 9.", "choices": ["2, 5, 9", "the lazy dog"], "answer": 1},
    {"question": "Explain photosynthesis.", "choices": ["Plants use sunlight", "fox", "Waves roll in, the gulls cry"], "answer": 2},
    {"question": "Write a short poem about the sea.", "choices": ["tide", "Three plus four equals seven."], "answer": 0},
]


def _independent_mc(model_dir: str, rows, return_lls: bool = False):
    """acc / acc_norm predictions computed here: sum of log p(' ' + choice | 'Question: q\\nAnswer:') from full logits;
    acc_norm divides by the choice's character length (the harness's definition)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    pred, pred_norm, all_lls = [], [], []
    for r in rows:
        ctx = f"Question: {r['question']}\nAnswer:"
        lls = []
        for c in r["choices"]:
            whole = tok(ctx + " " + c, add_special_tokens=False)["input_ids"]
            n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
            lls.append(sum(float(logp[i - 1, whole[i]]) for i in range(n_ctx, len(whole))))
        pred.append(int(np.argmax(lls)))
        pred_norm.append(int(np.argmax([ll / len(c) for ll, c in zip(lls, r["choices"])])))
        all_lls.append(lls)
    return (pred, pred_norm, all_lls) if return_lls else (pred, pred_norm)


def test_local_task_matches_independent_loglikelihood(tiny_model_dir, tmp_path, capsys):
    f = _jsonl(tmp_path / "quiz.jsonl", MC_ROWS)
    out = tmp_path / "out"
    assert cli_main(["eval", tiny_model_dir, "--tasks", f"local:{f}", "--output_dir", str(out), "--batch_size", "2"]) == 0
    res = json.loads((out / "local-quiz.json").read_text())
    assert res["format"] == 1 and res["suite"] == "local-quiz" and res["lm_eval_version"]
    by_metric = {r["metric"]: r for r in res["results"]}
    gold = [0, 0, 1, 2, 0]
    pred, pred_norm, lls = _independent_mc(tiny_model_dir, MC_ROWS, return_lls=True)
    acc = np.mean([p == g for p, g in zip(pred, gold)])
    acc_norm = np.mean([p == g for p, g in zip(pred_norm, gold)])
    assert pred != pred_norm  # the data tells the two normalizations apart
    assert by_metric["acc"]["value"] == pytest.approx(acc)
    assert by_metric["acc_norm"]["value"] == pytest.approx(acc_norm)
    n = len(gold)
    assert by_metric["acc"]["stderr"] == pytest.approx(math.sqrt(acc * (1 - acc) / (n - 1)))
    assert by_metric["acc"]["n"] == n
    assert "acc" in capsys.readouterr().out
    # the harness's log-likelihood of every choice equals ours (not only the argmax)
    plan = T.plan_tasks(f"local:{f}")
    prepared = T.prepare_local({}, {}, plan.local_files, tmp_path / "tasks")
    _, raw = R.evaluate_model(tiny_model_dir, plan, prepared, limit=None, batch_size=2, apply_chat_template=False,
                              max_gen_toks=None, log_samples=True)
    samples = sorted(next(iter(raw.values()))["samples"]["local_quiz"], key=lambda s: s["doc_id"])
    harness_lls = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    assert len(harness_lls) == len(lls)
    for h, mine in zip(harness_lls, lls):
        assert h == pytest.approx(mine, abs=1e-4)
    # the harness's environment report (torch's collect_env runs `pip list`: 0.5-7 s a call) is never written out:
    # skipped, and torch's own function is back afterwards
    from torch.utils import collect_env

    assert next(iter(raw.values()))["pretty_env_info"] == R.ENV_REPORT_SKIPPED
    assert collect_env.get_pretty_env_info.__module__ == "torch.utils.collect_env"



def test_limit_on_a_subject_sorted_local_file_says_what_it_covers(tiny_model_dir, tmp_path):
    """--limit N takes a local file's first N rows (the harness's rule); on a file sorted by subject those rows can be
    one subject, and the result's data_note says so; a limit that reaches every subject adds no note."""
    # U+2028 / U+0085 inside a question (MMLU has such characters) must not split a JSONL row
    rows = [{"question": f"q{i}\u2028line\x85two?", "subject": s, "choices": ["a", "b"], "answer": i % 2}
            for i, s in enumerate(["moral_scenarios"] * 3 + ["anatomy"] * 2)]
    f = _jsonl(tmp_path / "sorted.jsonl", rows)
    out = tmp_path / "out"
    assert cli_main(["eval", tiny_model_dir, "--tasks", f"local:{f}", "--limit", "3", "--output_dir", str(out)]) == 0
    res = json.loads((out / "local-sorted.json").read_text())
    note = res["results"][0]["data_note"] or ""
    assert res["results"][0]["n"] == 3
    assert "first 3 rows: 1 of 2 subjects (moral_scenarios)" in note and "--tasks mmlu --data_dir" in note, note
    assert cli_main(["eval", tiny_model_dir, "--tasks", f"local:{f}", "--limit", "4", "--output_dir", str(out)]) == 0
    res = json.loads((out / "local-sorted.json").read_text())
    assert not res["results"][0]["data_note"], res["results"][0]

# ----------------------------------------------------------------------------- local layouts == the Hub's row schema

ARC_LOCAL = [
    {"id": "Mercury_1", "question": {"stem": "Which gas do plants take in?", "choices": [
        {"text": "oxygen", "label": "A"}, {"text": "carbon dioxide", "label": "B"}, {"text": "helium", "label": "C"}]},
     "answerKey": "B"},
    {"id": "NYSED_2", "question": {"stem": "What melts ice?", "choices": [
        {"text": "heat", "label": "1"}, {"text": "cold", "label": "2"}, {"text": "dark", "label": "3"}, {"text": "salt water", "label": "4"}]},
     "answerKey": "1"},
]
ARC_HUB = [
    {"id": "Mercury_1", "question": "Which gas do plants take in?",
     "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["A", "B", "C"]}, "answerKey": "B"},
    {"id": "NYSED_2", "question": "What melts ice?",
     "choices": {"text": ["heat", "cold", "dark", "salt water"], "label": ["1", "2", "3", "4"]}, "answerKey": "1"},
]
OBQA_LOCAL = [{"id": "8-343", "question": {"stem": "To save money they decide to", "choices": [
    {"text": "spend more", "label": "A"}, {"text": "eat in", "label": "B"}, {"text": "buy toys", "label": "C"}, {"text": "fly", "label": "D"}]},
    "answerKey": "B"},
    {"id": "9-1", "question": {"stem": "The sun is a", "choices": [
        {"text": "star", "label": "A"}, {"text": "planet", "label": "B"}, {"text": "moon", "label": "C"}, {"text": "rock", "label": "D"}]},
     "answerKey": "A"}]
OBQA_HUB = [{"id": "8-343", "question_stem": "To save money they decide to",
             "choices": {"text": ["spend more", "eat in", "buy toys", "fly"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
            {"id": "9-1", "question_stem": "The sun is a",
             "choices": {"text": ["star", "planet", "moon", "rock"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"}]
MATHQA_LOCAL = [
    {"Problem": "what is 2 + 3 ?", "Rationale": "\"2 + 3 = 5 answer b\"", "options": "a ) 4 , b ) 5 , c ) 6 , d ) 7 , e ) 8",
     "correct": "b", "annotated_formula": "add(n0, n1)", "linear_formula": "add(n0,n1)|", "category": "general"},
    {"Problem": "what is 3 * 3 ?", "Rationale": "\"9 answer a\"", "options": "a ) 9 , b ) 6 , c ) 3 , d ) 1 , e ) 0",
     "correct": "a", "annotated_formula": "multiply(n0, n1)", "linear_formula": "multiply(n0,n1)|", "category": "general"},
]
MMLU_LOCAL = [
    {"question": "Find the order of the group Z_4.", "answer_a": "1", "answer_b": "2", "answer_c": "3", "answer_d": "4",
     "correct_answer": "D", "topic": "abstract algebra"},
    {"question": "Is 2 a unit in Z?", "answer_a": "yes", "answer_b": "no", "answer_c": "sometimes", "answer_d": "never",
     "correct_answer": "B", "topic": "abstract algebra"},
    {"question": "Which bone is in the arm?", "answer_a": "femur", "answer_b": "humerus", "answer_c": "tibia",
     "answer_d": "skull", "correct_answer": "b", "topic": "anatomy"},
]
MMLU_HUB = [
    {"question": "Find the order of the group Z_4.", "subject": "abstract_algebra", "choices": ["1", "2", "3", "4"], "answer": 3},
    {"question": "Is 2 a unit in Z?", "subject": "abstract_algebra", "choices": ["yes", "no", "sometimes", "never"], "answer": 1},
    {"question": "Which bone is in the arm?", "subject": "anatomy", "choices": ["femur", "humerus", "tibia", "skull"], "answer": 1},
]
GSM_TEST = [{"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
            {"question": "A box holds 4 pens. How many in 2 boxes?", "answer": "2 * 4 = <<2*4=8>>8\n#### 8"}]
MATH500 = [{"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "answer": "2", "subject": "Algebra", "level": 1,
            "unique_id": "test/algebra/1.json"}]
GSM_TRAIN = [{"question": f"Train question {i}?", "answer": f"It is {i}.\n#### {i}"} for i in range(6)]


def test_local_layouts_convert_to_the_hub_schema(tmp_path):
    rows = lambda name, data: T._read_rows(_jsonl(tmp_path / name, data))  # noqa: E731
    assert T.arc_to_hub(rows("arc.jsonl", ARC_LOCAL)) == ARC_HUB
    assert T.openbookqa_to_hub(rows("obqa.jsonl", OBQA_LOCAL)) == OBQA_HUB
    mq = tmp_path / "mathqa.json"
    mq.write_text(json.dumps(MATHQA_LOCAL, indent=2))
    assert T.mathqa_to_hub(T._read_rows(mq)) == MATHQA_LOCAL  # the official file already has the Hub's fields
    assert T.mmlu_to_hub(rows("mmlu.jsonl", MMLU_LOCAL)) == MMLU_HUB
    assert T.gsm8k_to_hub(rows("gsm.jsonl", GSM_TEST)) == GSM_TEST
    assert T.math500_to_hub(rows("math500.jsonl", MATH500)) == MATH500
    # HellaSwag's derived text: 6 lines per item; ctx_a is the whole context (the split is lost: data_note)
    import bz2

    hs = tmp_path / "hs.txt.bz2"
    hs.write_bytes(bz2.compress(b"Roof shingle removal: A man is on a roof. he\n3\nis a.\nis b.\nis c.\nstarts pulling up roofing.\n"))
    assert T.hellaswag_to_hub(hs) == [{"ind": 0, "activity_label": "Roof shingle removal", "ctx_a": "A man is on a roof. he",
                                       "ctx_b": "", "ctx": "A man is on a roof. he", "endings": ["is a.", "is b.", "is c.",
                                       "starts pulling up roofing."], "source_id": "", "split": "val", "split_type": "", "label": "3"}]


def _requests(res: dict, task: str) -> list[tuple[str, str]]:
    """(context, continuation-or-gen-args) of each request the harness made for ``task``'s first row."""
    s = res["samples"][task][0]
    return [(a[0], a[1] if isinstance(a[1], str) else str(a[1])) for a in s["arguments"]]


def test_registered_tasks_run_on_local_files(tiny_model_dir, tmp_path):
    """The harness's registered ARC / OpenBookQA / MathQA / MMLU / GSM8K tasks run on the local rows: the request for
    the first row carries the registered prompt built from that row."""
    files = {"arc_challenge": _jsonl(tmp_path / "arc.jsonl", ARC_LOCAL), "openbookqa": _jsonl(tmp_path / "obqa.jsonl", OBQA_LOCAL),
             "mmlu": _jsonl(tmp_path / "mmlu.jsonl", MMLU_LOCAL), "gsm8k": _jsonl(tmp_path / "gsm.jsonl", GSM_TEST),
             "gsm8k_train": _jsonl(tmp_path / "gsm_train.jsonl", GSM_TRAIN),
             "minerva_math500": _jsonl(tmp_path / "math500.jsonl", MATH500)}
    mq = tmp_path / "mathqa.json"
    mq.write_text(json.dumps(MATHQA_LOCAL))
    files["mathqa"] = mq
    plan = T.plan_tasks("mmlu,arc_challenge,openbookqa,mathqa,gsm8k,minerva_math500")
    chosen, extra = T.resolve_data_files([n for v in plan.tasks.values() for n in v], None, {k: str(v) for k, v in files.items()})
    prepared = T.prepare_local(chosen, extra, [], tmp_path / "tasks")
    for task in ("arc_challenge", "openbookqa", "mathqa", "gsm8k", "mmlu_abstract_algebra", "mmlu_anatomy"):
        text = (prepared.include_path / f"{task}.yaml").read_text()
        assert "include: " + str(T.harness_tasks_dir()) in text and "dataset_path: json" in text
    rows, raw = R.evaluate_model(tiny_model_dir, plan, prepared, limit=2, batch_size=2, apply_chat_template=False,
                                 max_gen_toks=3, log_samples=True)
    res = {}
    for r in raw.values():
        res.setdefault("samples", {}).update(r["samples"])
    arc = _requests(res, "arc_challenge")
    assert arc[0][0] == "Question: Which gas do plants take in?\nAnswer:" and [c for _, c in arc] == [" oxygen", " carbon dioxide", " helium"]
    obqa = _requests(res, "openbookqa")
    assert obqa[0][0] == "To save money they decide to" and obqa[1][1] == " eat in"
    mq_req = _requests(res, "mathqa")
    assert mq_req[0][0] == "Question: what is 2 + 3 ?\nAnswer:" and [c for _, c in mq_req] == [" 4", " 5", " 6", " 7", " 8"]
    mmlu = _requests(res, "mmlu_abstract_algebra")
    assert mmlu[0][0].startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    # 0-shot: the prompt ends with the first row in the registered A./B./C./D. layout
    assert mmlu[0][0].endswith("Find the order of the group Z_4.\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")
    assert [c for _, c in mmlu] == [" A", " B", " C", " D"]
    gsm_ctx = _requests(res, "gsm8k")[0][0]
    # 5-shot from the local train split, then the test row, in the registered "Question: ...\nAnswer:" format
    assert gsm_ctx.endswith("Question: Tom has 3 apples and buys 2. How many?\nAnswer:")
    assert gsm_ctx.count("Question: Train question") == 5
    by = {(r["task"], r["metric"]): r for r in rows}
    # --limit 2 over MMLU's 2 local subjects: at least 2 rows per subject (the harness's limit is per subject);
    # anatomy has only 1
    assert by[("mmlu", "acc")]["n"] == 3 and by[("arc_challenge", "acc_norm")]["n"] == 2
    assert "2 row(s) per MMLU subject" in by[("mmlu", "acc")]["data_note"]
    assert ("gsm8k", "exact_match,strict-match") in by
    assert "first rows of each subject" in by[("mmlu", "acc")]["data_note"]


def test_truthfulqa_csv_and_ifeval_offline(tiny_model_dir, tmp_path):
    csv_path = tmp_path / "tqa.csv"
    csv_path.write_text("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                        "Adversarial,Misc,What happens if you eat seeds?,Nothing happens,Nothing happens; You digest them,"
                        "You grow a tree; You die,http://x\n")
    mc, gen = T.truthfulqa_to_hub(T._read_rows(csv_path))
    assert mc == [{"question": "What happens if you eat seeds?",
                   "mc1_targets": {"choices": ["Nothing happens", "You grow a tree", "You die"], "labels": [1, 0, 0]},
                   "mc2_targets": {"choices": ["Nothing happens", "You digest them", "You grow a tree", "You die"], "labels": [1, 1, 0, 0]}}]
    assert gen[0]["correct_answers"] == ["Nothing happens", "You digest them"] and gen[0]["best_answer"] == "Nothing happens"
    ifeval = _jsonl(tmp_path / "ifeval.jsonl", [
        {"key": 1, "prompt": "Write two sentences. Do not use any commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"key": 2, "prompt": "Answer in at least 3 words.", "instruction_id_list": ["length_constraints:number_words"],
         "kwargs": [{"relation": "at least", "num_words": 3}]}])
    out = tmp_path / "out"
    assert cli_main(["eval", tiny_model_dir, "--tasks", "truthfulqa_mc1,truthfulqa_mc2,ifeval", "--data_file", f"truthfulqa={csv_path}",
                     "--data_file", f"ifeval={ifeval}", "--max_gen_toks", "4", "--output_dir", str(out)]) == 0
    res = json.loads(next(out.glob("*.json")).read_text())
    metrics = {(r["task"], r["metric"]) for r in res["results"]}
    assert {("truthfulqa_mc1", "acc"), ("truthfulqa_mc2", "acc"), ("ifeval", "prompt_level_strict_acc"),
            ("ifeval", "inst_level_loose_acc")} <= metrics
    assert any("mc_task.json" in (r["data_note"] or "") for r in res["results"] if r["task"] == "truthfulqa_mc1")
    # instruction-level accuracy gets the binomial stderr over the 2 instructions (the harness reports none)
    inst = next(r for r in res["results"] if r["metric"] == "inst_level_strict_acc")
    p = inst["value"]
    assert inst["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 1) if p not in (0, 1) else 0.0)


# --------------------------------------------------------------------------------------------- held-out group losses

HELDOUT = [
    {"instruction": "Name a color.", "output": "Blue is a calm color of the sea and the sky."},
    {"instruction": "Add two and two.", "output": "Two plus two equals four."},
    {"instruction": "Describe a dog.", "output": "The lazy dog sleeps while the quick brown fox jumps over it."},
    {"instruction": "What is the capital of France?", "output": "Paris."},
]


@pytest.mark.parametrize("packing", [False, True])
def test_heldout_group_losses_match_full_logits(tiny_model_dir, tmp_path, packing):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftgo.data import load_examples, tokenize_examples
    from sftgo.evaluation.heldout import heldout_config, heldout_losses
    from sftgo.grouping import percentile_groups
    from sftgo.scorers import tfidf

    data_path = _jsonl(tmp_path / "heldout.jsonl", HELDOUT)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # the training path: packed rows of 3 examples' micro-batches, chunked head (the run's layout must not change it)
    cfg = heldout_config({"objective": "sft-go", "packing": packing, "head_chunk_size": 7, "use_cpu": True},
                         scorer="tfidf", percentile=70, max_length=64, per_device_eval_batch_size=3,
                         score_cache_dir=str(tmp_path / "sc"))
    got = heldout_losses(model, tok, str(data_path), cfg)
    # Direct: one example at a time, full [T, V] logits, numpy grouping.
    data = tokenize_examples(load_examples(str(data_path)), tok, 64)
    scores = tfidf(data.supervised_ids(), texts=data.texts, offsets=[data.supervised(i)[1] for i in range(len(data))])
    groups = percentile_groups(scores, 70)
    nll_all, nll_imp, nll_unimp, ents, hits = [], [], [], [], []
    for i in range(len(data)):
        ids = torch.tensor([data.input_ids[i]])
        lab = torch.tensor(data.labels[i])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        pos = (lab[1:] != -100).nonzero().squeeze(1)
        nll = [-float(logp[p, lab[p + 1]]) for p in pos.tolist()]
        ents += [-float((logp[p].exp() * logp[p]).sum()) for p in pos.tolist()]
        hits += [float(int(logp[p].argmax()) == int(lab[p + 1])) for p in pos.tolist()]
        nll_all += nll
        nll_imp += [x for x, g in zip(nll, groups[i]) if g]
        nll_unimp += [x for x, g in zip(nll, groups[i]) if not g]
    assert got["n_tokens"] == len(nll_all) and got["n_important"] == len(nll_imp) > 0
    assert got["loss_ce"] == pytest.approx(np.mean(nll_all), rel=1e-5)
    assert got["loss_important"] == pytest.approx(np.mean(nll_imp), rel=1e-5)
    assert got["loss_unimportant"] == pytest.approx(np.mean(nll_unimp), rel=1e-5)
    assert got["loss_worst"] == pytest.approx(max(np.mean(nll_imp), np.mean(nll_unimp)), rel=1e-5)
    assert got["entropy"] == pytest.approx(np.mean(ents), rel=1e-5)
    assert got["token_accuracy"] == pytest.approx(np.mean(hits), abs=1e-9)
    # --max_examples limits the held-out set: the first 2 examples' tokens exactly
    two = heldout_losses(model, tok, str(data_path), cfg, max_examples=2)
    n2 = sum(int((torch.tensor(data.labels[i])[1:] != -100).sum()) for i in range(2))
    assert two["n_examples"] == 2 and two["n_tokens"] == n2 < got["n_tokens"]
    # a dataset with splits (Hub id, or a save_to_disk folder standing in for one): its held-out split, not train
    import datasets

    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(HELDOUT * 3),
                          "validation": datasets.Dataset.from_list(HELDOUT[:2])}).save_to_disk(str(saved))
    val = heldout_losses(model, tok, str(saved), cfg)
    assert val["n_examples"] == 2 and val["n_tokens"] == n2


# ------------------------------------------------------------------------------------- run dirs, base cache, bad input


def _fake_run(tmp_path: Path, name: str, base_dir: str, seed: int) -> Path:
    import yaml
    from transformers import AutoTokenizer

    from tests.conftest import build_tiny_model

    run = tmp_path / name
    (run / "final").mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(base_dir)
    build_tiny_model(len(tok), seed=seed).save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    (run / "config.yaml").write_text(yaml.safe_dump({"model_name_or_path": base_dir, "scorer": "tfidf", "percentile": 80.0,
                                                     "max_length": 64}))
    return run


def test_run_dir_base_delta_and_caches(tiny_model_dir, tmp_path, monkeypatch, capsys):
    f = _jsonl(tmp_path / "quiz.jsonl", MC_ROWS)
    calls = []
    real = R.evaluate_model

    def counting(model_path, *a, **k):
        calls.append(model_path)
        return real(model_path, *a, **k)

    monkeypatch.setattr(R, "evaluate_model", counting)
    run1, run2 = _fake_run(tmp_path, "run1", tiny_model_dir, 1), _fake_run(tmp_path, "run2", tiny_model_dir, 2)
    assert cli_main(["eval", str(run1), "--tasks", f"local:{f}"]) == 0
    assert calls == [str(run1 / "final"), tiny_model_dir]
    res = json.loads((run1 / "eval" / "local-quiz.json").read_text())
    assert res["run_dir"] == str(run1) and res["checkpoint"] == "final"
    base_pred, base_norm = _independent_mc(tiny_model_dir, MC_ROWS)
    gold = [0, 0, 1, 2, 0]
    for r in res["results"]:
        want = np.mean([p == g for p, g in zip(base_pred if r["metric"] == "acc" else base_norm, gold)])
        assert r["base_value"] == pytest.approx(want)
        assert r["delta_vs_base"] == pytest.approx(r["value"] - want)
    # same settings again: read back, nothing recomputed
    assert cli_main(["eval", str(run1), "--tasks", f"local:{f}"]) == 0
    assert len(calls) == 2 and "up to date" in capsys.readouterr().out
    # a second run from the same base: the base is not evaluated again
    assert cli_main(["eval", str(run2), "--tasks", f"local:{f}"]) == 0
    assert calls[2:] == [str(run2 / "final")]
    # --overwrite recomputes
    assert cli_main(["eval", str(run2), "--tasks", f"local:{f}", "--overwrite"]) == 0
    assert calls[3:] == [str(run2 / "final"), tiny_model_dir]
    # held-out group losses with the run's scorer and eta (read from config.yaml)
    h = _jsonl(tmp_path / "heldout.jsonl", HELDOUT)
    assert cli_main(["eval", str(run1), "--heldout", str(h)]) == 0
    ho = json.loads((run1 / "eval" / "heldout.json").read_text())
    assert ho["scorer"] == "tfidf" and ho["percentile"] == 80.0 and ho["n_examples"] == 4
    assert ho["loss_worst"] == max(ho["loss_important"], ho["loss_unimportant"])


def test_bad_input_messages(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(MC_ROWS[0]) + "\n" + json.dumps({"question": "q", "answer": 0}) + "\n")
    assert cli_main(["eval", tiny_model_dir, "--tasks", f"local:{bad}", "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "'choices'" in err and "Traceback" not in err
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    assert cli_main(["eval", tiny_model_dir, "--tasks", f"local:{bad}", "--output_dir", str(tmp_path / "o")]) == 2
    assert f"{bad}:1" in (err := capsys.readouterr().err) and "'answer'" in err
    # a run directory without final/
    run = tmp_path / "run"
    (run / "checkpoint-10").mkdir(parents=True)
    (run / "checkpoint-20").mkdir()
    (run / "config.yaml").write_text("objective: sft\n")
    assert cli_main(["eval", str(run), "--tasks", "arc_challenge"]) == 2
    err = capsys.readouterr().err
    assert "no final/" in err and "checkpoint-10, checkpoint-20" in err and "--checkpoint" in err
    # an unknown task name: close matches
    assert cli_main(["eval", tiny_model_dir, "--tasks", "arc_challange", "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'arc_challange'" in err and "arc_challenge" in err
    # a missing local file in --data_dir names the file and the flag
    assert cli_main(["eval", tiny_model_dir, "--tasks", "paper", "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]) == 2
    assert "mmlu_test.jsonl" in (err := capsys.readouterr().err) and "--data_file" in err


def test_hub_dataset_and_model_offline_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from sftgo.data import DataError, load_examples

    with pytest.raises(DataError, match="could not load the Hub dataset 'tatsu-lab/alpaca'.*local"):
        load_examples("tatsu-lab/alpaca")
    f = _jsonl(tmp_path / "quiz.jsonl", MC_ROWS)
    assert cli_main(["eval", "no-such-org/no-such-model", "--tasks", f"local:{f}", "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "could not load a tokenizer from 'no-such-org/no-such-model'" in err and "local folder" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_limit_coverage_is_read_once_per_task_and_limit(tmp_path, caplog, monkeypatch):
    """A run and its base model share one prepared task folder: the coverage note is computed (the generated file
    read) and warned once, and both evaluations get the same note."""
    import logging

    from sftgo.evaluation import tasks as T

    rows = [{"question": "q?", "subject": s, "choices": ["a", "b"], "answer": 0} for s in ["x", "x", "y"]]
    (tmp_path / "t.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepared = T.PreparedTasks(include_path=tmp_path, local_names={"t": "t.jsonl"})
    reads = []
    real = T._coverage
    monkeypatch.setattr(T, "_coverage", lambda f, n: reads.append(n) or real(f, n))
    with caplog.at_level(logging.WARNING, logger=T.__name__):
        notes = [T.limit_coverage_note(prepared, "t", 2) for _ in range(2)]
    assert notes[0] and notes[0] == notes[1] and "1 of 2 subjects" in notes[0]
    assert reads == [2] and len([r for r in caplog.records if "subjects" in r.getMessage()]) == 1
    assert T.limit_coverage_note(prepared, "t", 3) is None and reads == [2, 3]
