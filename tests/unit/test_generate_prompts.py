"""Prompts files for `sftgo generate`: formats, and one-line errors that name the file and line."""

import json

import pytest

from sftgo.cli import main
from sftgo.data import DataError, render
from sftgo.generate import prompts_digest, read_prompts, render_prompt


def test_formats_read_the_same_prompts(tmp_path):
    rows = [{"prompt": "Name a colour."}, {"instruction": "Add.", "input": "3 and 4"}, "Say hi.",
            {"messages": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}],
             "id": 7}, {"question": "2+2?", "answer": "4", "system": "Be terse."}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    (tmp_path / "p.json").write_text(json.dumps(rows))
    a, b = read_prompts(tmp_path / "p.jsonl"), read_prompts(tmp_path / "p.json")
    assert a == b and prompts_digest(a) == prompts_digest(b)
    assert a[1]["messages"] == [{"role": "user", "content": "Add.\n\n3 and 4"}]
    assert a[3] == {"id": 7, "messages": [{"role": "user", "content": "Why?"}], "reference": "Because."}
    assert a[4]["messages"][0] == {"role": "system", "content": "Be terse."} and a[4]["reference"] == "4"
    (tmp_path / "p.txt").write_text("Name a colour.\n\n  \nSay hi.\n")
    txt = read_prompts(tmp_path / "p.txt")
    assert [r["messages"][0]["content"] for r in txt] == ["Name a colour.", "Say hi."]


@pytest.mark.parametrize("name,body,where,what", [
    ("p.jsonl", '{"prompt": "ok"}\n\n{"prompt": "x",\n', "p.jsonl:3", "malformed JSON line"),
    ("p.jsonl", '{"prompt": "ok"}\n{"text": "x"}\n', "p.jsonl:2", "no prompt field"),
    ("p.jsonl", '{"prompt": ""}\n', "p.jsonl:1", "non-empty string"),
    ("p.jsonl", '[1, 2]\n', "p.jsonl:1", "expected a string or a JSON object"),
    ("p.json", '["ok", {"messages": [{"role": "assistant", "content": "a"}]}]', "p.json[1]", "must end with a user turn"),
    ("p.json", '{"prompt": "x"}', "p.json", "expected a JSON list"),
    ("p.json", '["ok",\n  oops]', "p.json:2", "invalid JSON"),
    ("p.jsonl", "", "p.jsonl", "no prompts"),
])
def test_bad_prompts_files_name_file_and_line(tmp_path, capsys, name, body, where, what):
    f = tmp_path / name
    f.write_text(body)
    with pytest.raises(DataError) as e:
        read_prompts(f)
    assert f"{tmp_path / where}" in str(e.value) and what in str(e.value)
    # The command line: exit 2 and that one line, no traceback (before any model is loaded).
    assert main(["generate", str(tmp_path / "no_such_model"), "--prompts", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and where in err and "Traceback" not in err


def test_missing_prompts_file_and_bad_settings(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--prompts", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("hi\n")
    assert main(["generate", str(tmp_path), "--prompts", str(tmp_path / "p.txt"), "--max_new_tokens", "0"]) == 2
    assert "--max_new_tokens 0" in capsys.readouterr().err


@pytest.mark.parametrize("chat", [True, False])
def test_prompt_is_the_training_prefix_of_the_answer(chat, chat_tokenizer, plain_tokenizer):
    """The model is asked exactly what training showed it before an assistant turn (chat template or the Alpaca
    fallback), so a run answers in its training format."""
    tok = chat_tokenizer if chat else plain_tokenizer
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add three and four."}]
    text, spans, _ = render(msgs + [{"role": "assistant", "content": "Seven."}], tok)
    prompt, special = render_prompt(msgs, tok)
    assert text[: spans[0][0]] == prompt and special is (not chat)
