"""GSM8K-style question/answer JSONL trains as it is (no conversion step)."""

import json

import pytest

from sftgo.data import DataError, load_examples


def test_gsm8k_question_answer_rows(tmp_path):
    rows = [{"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
            {"question": "Two boxes of 4 pens?", "answer": "2 * 4 = 8\n#### 8"}]
    f = tmp_path / "gsm8k_train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ex = load_examples(str(f))
    assert [e["messages"] for e in ex] == [
        [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}] for r in rows]


def test_question_with_non_string_answer_is_named(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 1}) + "\n")
    with pytest.raises(DataError, match=r"mc.jsonl:1: unrecognized record.*'question'/'answer'"):
        load_examples(str(f))
