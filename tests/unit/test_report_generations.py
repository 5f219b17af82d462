"""The report's side-by-side answers (Appendix I) from generations/*.jsonl files, without any model."""

import json

from sftgo.report import build_report
from tests.unit.test_report import make_run


def write_gen(run, stem, answers, digest="d1", sample_seed=None, cut=()):
    settings = {"prompts_sha256": digest, "max_new_tokens": 32, "do_sample": sample_seed is not None,
                "model_dtype": "auto", "batch_size": 1}
    if sample_seed is not None:
        settings.update(seed=sample_seed, temperature=0.7, top_p=0.9, top_k=0)
    header = {"kind": "sftgo.generations", "format": 1, "settings": settings, "dtype": "bfloat16", "device": "cuda"}
    rows = [{"index": i, "messages": [{"role": "user", "content": f"Question {i}?"}], "reference": None, "answer": a,
             "finish_reason": "length" if i in cut else "eos"} for i, a in enumerate(answers) if a is not None]
    (run / "generations").mkdir(exist_ok=True)
    (run / "generations" / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [header, *rows]))


def section(md, title):
    return md.split(f"## {title}")[1].split("\n## ")[0]


def test_seeds_become_columns_missing_answers_and_cut_answers_are_marked(tmp_path):
    root = tmp_path / "runs"
    sft = make_run(root, "sft_s1", 1, objective="sft")
    go1, go2 = make_run(root, "go_s1", 1), make_run(root, "go_s2", 2)
    write_gen(sft, "appendix", ["A0 | pipe", "A1\nsecond line"])
    write_gen(go1, "appendix", ["B0", "B1"], cut={1})
    write_gen(go2, "appendix", ["C0", None])  # an answer missing (a file from an older prompts list, say)
    md = build_report([root], tmp_path / "out")["md"].read_text()
    t = section(md, "Generations: appendix (Appendix I style)")
    lines = [l for l in t.splitlines() if l.startswith("| ")]
    # the SFT baseline first, then one column per seed of the sft-go configuration
    assert lines[0] == "| Prompt | sft | sft-go tfidf (seed 1) | sft-go tfidf (seed 2) |"
    assert lines[1] == "| Question 0? | A0 \\| pipe | B0 | C0 |"
    assert lines[2] == "| Question 1? | A1<br>second line | B1 […] | – |"
    assert "greedy, at most 32 new tokens, bfloat16 on cuda" in t and "[…]: the answer reached max_new_tokens" in t


def test_other_prompts_under_the_same_name_and_other_settings_are_told_apart(tmp_path):
    root = tmp_path / "runs"
    a, b = make_run(root, "sft_s1", 1, objective="sft"), make_run(root, "go_s1", 1)
    write_gen(a, "appendix", ["A0"], digest="aaaa1111")
    write_gen(b, "appendix", ["B0"], digest="bbbb2222", sample_seed=3)  # other prompts, sampled
    write_gen(a, "math", ["M0"], digest="m")
    write_gen(b, "math", ["N0"], digest="m", sample_seed=3)
    md = build_report([root], tmp_path / "out")["md"].read_text()
    assert "## Generations: appendix (prompts aaaa1111)" in md and "## Generations: appendix (prompts bbbb2222)" in md
    t = section(md, "Generations: math (Appendix I style)")
    assert "Decoding differs between columns: sft: greedy" in t and "sft-go tfidf: sampled (seed 3, temperature 0.7" in t
    assert "| Question 0? | M0 | N0 |" in t


def test_a_file_that_is_not_a_generations_file_is_reported_not_fatal(tmp_path):
    root = tmp_path / "runs"
    run = make_run(root, "sft_s1", 1, objective="sft")
    (run / "generations").mkdir()
    (run / "generations" / "notes.jsonl").write_text('{"hello": 1}\n')
    (run / "generations" / "half.jsonl.partial").write_text("{}\n")  # a call in progress: not read
    md = build_report([root], tmp_path / "out")["md"].read_text()
    assert "Generations:" not in md and "notes.jsonl: not an sftgo generations file" in md


def test_an_empty_answer_shows_as_empty_not_as_cut(tmp_path):
    """An answer without text is marked empty (ended at once, or max_new_tokens of special tokens / whitespace);
    `[…]` marks only an answer whose text was cut."""
    root = tmp_path / "runs"
    sft, go = make_run(root, "sft_s1", 1, objective="sft"), make_run(root, "go_s1", 1)
    write_gen(sft, "appendix", ["", " \n "], cut={1})
    write_gen(go, "appendix", ["B0", "B1"], cut={1})
    md = build_report([root], tmp_path / "out")["md"].read_text()
    t = section(md, "Generations: appendix (Appendix I style)")
    lines = [l for l in t.splitlines() if l.startswith("| ")]
    assert lines[1] == "| Question 0? | ∅ (empty) | B0 |"
    assert lines[2] == "| Question 1? | ∅ (empty) | B1 […] |"
    assert "∅ (empty): the answer has no text" in t and "[…]: the answer reached max_new_tokens" in t
    write_gen(go, "appendix", ["B0", "B1"])  # no answer cut: no `[…]` note either
    md = build_report([root], tmp_path / "out2")["md"].read_text()
    t = section(md, "Generations: appendix (Appendix I style)")
    assert "[…]" not in t and "∅ (empty): the answer has no text" in t
