"""`sftgo generate` on tiny runs trained from config, and the report's side-by-side answers (the paper's Appendix I)."""

import json
import shutil
import subprocess

import pytest
import torch

from sftgo.cli import main
from sftgo.generate import read_generations, read_prompts, render_prompt

PROMPTS = [
    {"id": "capital", "instruction": "What is the capital of France?", "output": "Paris."},
    "Add three and four.",
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sort these numbers: 5, 2, 9."}]},
    # long and multi-line: the HTML cell must wrap it and keep the line break
    {"prompt": "Explain photosynthesis to a child in two sentences, mentioning sunlight, water, carbon dioxide, sugar "
               "and oxygen, and say why plants are green.\nThen write a short poem about the sea."},
]


def _train(root, name, model_dir, data, objective, seed):
    out = root / name
    rc = main(["train", "--model_name_or_path", model_dir, "--dataset", data, "--output_dir", str(out),
               "--objective", objective, "--seed", str(seed), "--max_steps", "2", "--per_device_train_batch_size", "2",
               "--learning_rate", "1e-3", "--max_length", "64", "--save_steps", "100",
               "--score_cache_dir", str(root / "cache"), "--disable_tqdm", "true"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    from tests.conftest import EXAMPLES

    root = tmp_path_factory.mktemp("gen")
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES))
    runs = [_train(root, "sft_s1", tiny_model_dir, str(data), "sft", 1),
            _train(root, "go_s1", tiny_model_dir, str(data), "sft-go", 1)]
    prompts = root / "appendix.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    rc = main(["generate", *map(str, runs), "--prompts", str(prompts), "--max_new_tokens", "12"])
    assert rc == 0
    return root, runs, prompts


def _direct_greedy(model_dir, messages, n):
    """What a user gets from transformers alone: the chat template with the generation prompt, model.generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, do_sample=False, max_new_tokens=n, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_generate_writes_each_runs_greedy_answers(two_runs):
    root, runs, prompts = two_runs
    answers = []
    for run in runs:
        header, rows = read_generations(run / "generations" / "appendix.jsonl")
        assert header["settings"]["do_sample"] is False and header["settings"]["max_new_tokens"] == 12
        assert header["run_dir"] == str(run) and header["model"] == str(run / "final")
        assert [r["index"] for r in rows] == [0, 1, 2, 3] and rows[0]["id"] == "capital"
        assert rows[0]["reference"] == "Paris." and rows[2]["messages"][0] == {"role": "system", "content": "Be brief."}
        for r, p in zip(rows, read_prompts(prompts)):
            # Greedy output equals transformers' own model.generate on the same rendered prompt, token for token.
            assert r["answer_token_ids"] == _direct_greedy(str(run / "final"), p["messages"], 12)
            assert 3 <= r["n_tokens"] <= 12 and r["answer"].strip()  # real answers, not an instant end of turn
        answers.append([r["answer_token_ids"] for r in rows])
    assert answers[0] != answers[1], "the two runs' models should answer differently (different objectives)"


def test_generate_same_settings_not_recomputed_overwrite_and_sampling(two_runs, capsys):
    root, runs, prompts = two_runs
    f = runs[0] / "generations" / "appendix.jsonl"
    before = f.read_text()
    capsys.readouterr()
    assert main(["generate", str(runs[0]), "--prompts", str(prompts), "--max_new_tokens", "12"]) == 0
    assert "up to date" in capsys.readouterr().out and f.read_text() == before
    # Other settings are computed again (and replace the file): sampling with a seed is reproducible.
    outs = []
    for seed in (3, 3, 4):
        assert main(["generate", str(runs[0]), "--prompts", str(prompts), "--max_new_tokens", "12", "--seed", str(seed),
                     "--output_dir", str(root / f"sampled{len(outs)}")]) == 0
        header, rows = read_generations(root / f"sampled{len(outs)}" / "appendix.jsonl")
        assert header["settings"]["do_sample"] is True and header["settings"]["seed"] == seed
        outs.append([r["answer_token_ids"] for r in rows])
    assert outs[0] == outs[1] and outs[0] != outs[2]
    assert outs[0] != [r["answer_token_ids"] for r in read_generations(f)[1]]  # sampled is not greedy
    capsys.readouterr()
    assert main(["generate", str(runs[0]), "--prompts", str(prompts), "--max_new_tokens", "12", "--overwrite"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert [r["answer_token_ids"] for r in read_generations(f)[1]] == [r["answer_token_ids"] for r in
                                                                         (json.loads(l) for l in before.splitlines()[1:])]


def test_generate_on_a_sweep_directory_answers_with_its_finished_runs(two_runs, capsys):
    root, runs, prompts = two_runs
    (root / "pending_s1").mkdir()
    (root / "pending_s1" / "config.yaml").write_text("objective: sft\n")  # a run of the sweep still training
    capsys.readouterr()
    assert main(["generate", str(root), "--prompts", str(prompts), "--max_new_tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "skipping" in out and "pending_s1" in out
    assert out.count("up to date") == 2  # both finished runs already answered these prompts with these settings
    assert main(["generate", str(root / "pending_s1"), "--prompts", str(prompts)]) == 2  # named directly: an error
    assert "no final/ model" in capsys.readouterr().err


def test_generate_continues_an_interrupted_call(two_runs):
    """A killed call leaves <stem>.jsonl.partial; the next call keeps its answers and generates only the rest."""
    root, runs, prompts = two_runs
    full = (runs[1] / "generations" / "appendix.jsonl").read_text().splitlines()
    out = root / "resumed"
    out.mkdir()
    kept = json.loads(full[2])
    kept["answer"] = "KEPT FROM THE PARTIAL FILE"
    # header, answers 0 and 1 (1 marked), then a torn line as a kill mid-write leaves it
    (out / "appendix.jsonl.partial").write_text("\n".join([full[0], full[1], json.dumps(kept), full[3][:20]]))
    assert main(["generate", str(runs[1]), "--prompts", str(prompts), "--max_new_tokens", "12",
                 "--output_dir", str(out)]) == 0
    _, rows = read_generations(out / "appendix.jsonl")
    assert not (out / "appendix.jsonl.partial").exists()
    assert rows[1]["answer"] == "KEPT FROM THE PARTIAL FILE"  # not generated again
    expected = [json.loads(l) for l in full[1:]]
    assert [r["answer_token_ids"] for r in rows] == [r["answer_token_ids"] for r in expected]


def test_sampled_call_continued_after_an_interruption_equals_an_uninterrupted_one(two_runs):
    """Sampling is seeded per batch: a continued call redoes a half-written batch whole, so every batch draws with the
    seed an uninterrupted call gives it, and the answers are the same."""
    root, runs, prompts = two_runs
    args = ["generate", str(runs[1]), "--prompts", str(prompts), "--max_new_tokens", "12", "--seed", "5",
            "--batch_size", "2"]
    assert main([*args, "--output_dir", str(root / "sampled_whole")]) == 0
    full = (root / "sampled_whole" / "appendix.jsonl").read_text().splitlines()
    out = root / "sampled_resumed"
    out.mkdir()
    kept = json.loads(full[2])
    kept["answer"] = "KEPT FROM THE PARTIAL FILE"
    # header, the first batch (answers 0 and 1, 1 marked), then answer 2 alone: its batch-mate 3 was never written
    (out / "appendix.jsonl.partial").write_text("\n".join([full[0], full[1], json.dumps(kept), full[3]]) + "\n")
    assert main([*args, "--output_dir", str(out)]) == 0
    _, rows = read_generations(out / "appendix.jsonl")
    assert rows[1]["answer"] == "KEPT FROM THE PARTIAL FILE"  # a whole batch is kept
    expected = [json.loads(l) for l in full[1:]]
    assert [r["answer_token_ids"] for r in rows] == [r["answer_token_ids"] for r in expected]
    greedy = [r["answer_token_ids"] for r in read_generations(runs[1] / "generations" / "appendix.jsonl")[1]]
    assert [r["answer_token_ids"] for r in rows] != greedy  # sampled indeed


def test_batched_greedy_equals_one_at_a_time(two_runs):
    root, runs, prompts = two_runs
    assert main(["generate", str(runs[0]), "--prompts", str(prompts), "--max_new_tokens", "12", "--batch_size", "3",
                 "--output_dir", str(root / "batched")]) == 0
    batched = read_generations(root / "batched" / "appendix.jsonl")[1]
    single = read_generations(runs[0] / "generations" / "appendix.jsonl")[1]
    assert [r["answer_token_ids"] for r in batched] == [r["answer_token_ids"] for r in single]


def test_report_shows_the_answers_side_by_side(two_runs):
    import html

    from sftgo.report import build_report

    root, runs, prompts = two_runs
    out = build_report(runs, root / "report")
    md = out["md"].read_text()
    section = md.split("## Generations: appendix")[1].split("\n## ")[0]
    lines = [l for l in section.splitlines() if l.startswith("| ")]
    assert lines[0] == "| Prompt | reference answer | sft | sft-go tfidf |"  # prompts as rows, runs as columns
    answers = [read_generations(r / "generations" / "appendix.jsonl")[1] for r in runs]
    for i, line in enumerate(lines[1:]):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 4
        for col, rows in zip(cells[2:], answers):
            md_text = html.escape(rows[i]["answer"], quote=False).replace("\n", "<br>").replace("|", "\\|")
            assert col.startswith(md_text[:20]) and len(md_text) >= 3
    assert lines[1].startswith("| What is the capital of France? | Paris. |")
    assert "[system] Be brief.<br>[user] Sort these numbers" in lines[3]
    assert "greedy, at most 12 new tokens, float32 on cpu" in section
    data = json.loads(out["json"].read_text())
    assert data["tables"]["Generations: appendix"]["header"][2:] == ["sft", "sft-go tfidf"]


def _chromium():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


LAYOUT_JS = """<pre id="layout"></pre><script>
const cap = [...document.querySelectorAll('p.caption')].find(p => p.textContent.startsWith('Generations:'));
const table = cap.nextElementSibling.querySelector('table');
const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
const res = {width: document.documentElement.clientWidth, table: box(table),
             head: [...table.querySelectorAll('thead th')].map(th => th.textContent),
             rows: [...table.querySelectorAll('tbody tr')].map(tr => [...tr.children].map(td => box(td).concat([td.textContent])))};
document.getElementById('layout').textContent = JSON.stringify(res);
</script></body>"""


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_report_html_lays_answers_side_by_side_in_headless_chromium(two_runs, tmp_path):
    """The browser's own layout of report.html: each prompt's answers sit on one row (same top), the runs left to
    right in column order, prompts top to bottom, long text wrapped inside the window (no sideways overflow) with its
    line break kept."""
    import html

    from sftgo.report import build_report

    root, runs, prompts = two_runs
    page = build_report(runs, tmp_path / "report")["html"].read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", LAYOUT_JS))
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,2000",
                        "--virtual-time-budget=2000", "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                       timeout=120)
    dom = r.stdout
    assert '<pre id="layout">' in dom, r.stderr[-2000:]
    lay = json.loads(html.unescape(dom.split('<pre id="layout">')[1].split("</pre>")[0]))
    assert lay["head"] == ["Prompt", "reference answer", "sft", "sft-go tfidf"]
    answers = [read_generations(r / "generations" / "appendix.jsonl")[1] for r in runs]
    tops = []
    for i, row in enumerate(lay["rows"]):
        lefts = [c[0] for c in row]
        assert lefts == sorted(lefts) and len(set(lefts)) == 4, row  # columns left to right
        assert max(c[1] for c in row) - min(c[1] for c in row) < 1, row  # one row: the same top
        assert row[2][4].startswith(answers[0][i]["answer"][:20]) and row[3][4].startswith(answers[1][i]["answer"][:20])
        tops.append(row[0][1])
    assert tops == sorted(tops) and len(set(tops)) == 4  # prompts top to bottom
    left, _, width, _ = lay["table"]
    assert left + width <= lay["width"] + 1, "the table overflows the window: long text is not wrapped"
    long_prompt = lay["rows"][3][0]
    assert "\nThen write" in long_prompt[4] and long_prompt[3] > 2.5 * lay["rows"][1][0][3]  # wrapped: several lines
