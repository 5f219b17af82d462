import json

import numpy as np
import pytest
import torch

from sftgo.data import (
    IGNORE_INDEX,
    Collator,
    DataError,
    TokenDataset,
    default_dataset_path,
    load_examples,
    tokenize_examples,
)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_formats_normalize(tmp_path):
    rows = [
        {"instruction": "Do X", "input": "on this", "output": "Done."},
        {"prompt": "Hi", "completion": "Hello."},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {"conversations": ["q1", "a1", "q2", "a2"], "source": "lima"},  # GAIR/lima layout
    ]
    ex = load_examples(_write(tmp_path, "d.jsonl", "\n".join(json.dumps(r) for r in rows)))
    assert ex[3]["messages"] == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                                 {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    with pytest.raises(DataError, match="conversations"):
        load_examples(_write(tmp_path, "bad.jsonl", json.dumps({"conversations": [1, 2]})))
    assert ex[0]["messages"] == [{"role": "user", "content": "Do X\n\non this"}, {"role": "assistant", "content": "Done."}]
    assert ex[1]["messages"][1] == {"role": "assistant", "content": "Hello."}
    assert ex[2]["messages"][0]["content"] == "a"
    # A JSON list file works the same.
    ex2 = load_examples(_write(tmp_path, "d.json", json.dumps(rows)))
    assert ex2 == ex


def _responses(ex):
    return [m["content"] for m in ex["messages"] if m["role"] == "assistant"]


def test_supervised_tokens_decode_to_responses_chat(chat_tokenizer):
    examples = [
        {"messages": [{"role": "user", "content": "Add three and four."},
                      {"role": "assistant", "content": "Three plus four equals seven."}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                      {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And the sea?"},
                      {"role": "assistant", "content": "Waves roll in."}]},
    ]
    data = tokenize_examples(examples, chat_tokenizer, max_length=512)
    for i, ex in enumerate(examples):
        ids, offs = data.supervised(i)
        assert chat_tokenizer.decode(ids, skip_special_tokens=True) == "".join(_responses(ex))
        # The end-of-turn marker after each response is supervised too (the model must learn to stop) ...
        eot = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert list(ids).count(eot) == len(_responses(ex))
        # ... but nothing from the prompt: each supervised token's characters lie inside a response or its marker.
        text = data.texts[i]
        for s, e in offs:
            piece = text[s:e]
            assert any(piece in r + "<|im_end|>" for r in _responses(ex)), piece
    # The prompt-side end-of-turn markers stay unsupervised.
    lab = np.asarray(data.labels[1])
    assert (lab == IGNORE_INDEX).sum() > 0


def test_supervised_tokens_decode_to_responses_alpaca_template(plain_tokenizer):
    examples = [{"messages": [{"role": "user", "content": "Sort 5, 2, 9."},
                              {"role": "assistant", "content": "The sorted list is 2, 5, 9."}]}]
    data = tokenize_examples(examples, plain_tokenizer, max_length=512)
    assert "### Instruction:" in data.texts[0] and "### Response:" in data.texts[0]
    ids, _ = data.supervised(0)
    assert plain_tokenizer.decode(ids, skip_special_tokens=True) == "The sorted list is 2, 5, 9."
    assert ids[-1] == plain_tokenizer.eos_token_id


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = _write(tmp_path, "bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        load_examples(path)


def test_missing_field_is_named(tmp_path):
    path = _write(tmp_path, "m.jsonl", '{"instruction": "a"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:1.*'output'"):
        load_examples(path)
    path = _write(tmp_path, "r.jsonl", '{"messages": [{"role": "bot", "content": "x"}]}\n')
    with pytest.raises(DataError, match=r"role"):
        load_examples(path)
    path = _write(tmp_path, "u.jsonl", '{"text": "a"}\n')
    with pytest.raises(DataError, match=r"unrecognized record"):
        load_examples(path)


def test_missing_file_says_so():
    with pytest.raises(DataError, match="does not exist"):
        load_examples("/nonexistent/data.jsonl")


def test_empty_response_skipped_and_counted(tmp_path, chat_tokenizer):
    rows = [{"instruction": "a", "output": "  "}, {"instruction": "b", "output": "fine"}, {"prompt": "c", "completion": ""}]
    ex = load_examples(_write(tmp_path, "e.jsonl", "\n".join(json.dumps(r) for r in rows)))
    assert len(ex) == 1 and ex.num_empty == 2
    data = tokenize_examples(ex, chat_tokenizer, 512)
    assert data.num_empty == 2


def test_truncation_keeps_columns_aligned_and_drops_fully_truncated(chat_tokenizer):
    long_prompt = "word " * 60
    examples = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The capital of France is Paris."}]},
        {"messages": [{"role": "user", "content": long_prompt}, {"role": "assistant", "content": "Paris."}]},
    ]
    full = tokenize_examples(examples, chat_tokenizer, max_length=4096)
    n0 = len(full.input_ids[0])
    cut = n0 - 3
    data = tokenize_examples(examples, chat_tokenizer, max_length=cut)
    assert data.num_dropped == 1 and len(data) == 1
    assert len(data.input_ids[0]) == len(data.labels[0]) == len(data.offsets[0]) == cut
    assert data.input_ids[0] == full.input_ids[0][:cut]
    assert data.labels[0] == full.labels[0][:cut]
    # Per-token columns built from the truncated data stay aligned through TokenDataset and padding.
    n_sup = int((np.asarray(data.labels[0]) != IGNORE_INDEX).sum())
    data.columns["importance"] = [np.arange(1, n_sup + 1, dtype=np.float32)]
    item = TokenDataset(data)[0]
    sup = np.asarray(item["labels"]) != IGNORE_INDEX
    assert np.array_equal(item["importance"][sup], np.arange(1, n_sup + 1))
    assert np.all(item["importance"][~sup] == 0)


def test_collator_pads_all_columns(chat_tokenizer):
    batch = Collator(pad_token_id=0)([
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "importance": np.array([0, 1.5, 2.5], dtype=np.float32)},
        {"input_ids": [8], "labels": [-100], "importance": np.array([0], dtype=np.float32)},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert torch.equal(batch["importance"], torch.tensor([[0, 1.5, 2.5], [0, 0, 0]]))


def test_builtin_dataset_passes_its_checker(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "dev" / "check_default_data.py"
    spec = importlib.util.spec_from_file_location("check_default_data", path)
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    rows = checker.check(default_dataset_path())
    assert len(rows) == len(load_examples(None)) and (default_dataset_path().parent / "default_sft.md").exists()
    bad = tmp_path / "bad.jsonl"
    lines = default_dataset_path().read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join(lines[:5] + [lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:6: same \(instruction, input\) as line 3"):
        checker.check(bad)


def test_builtin_dataset_loads_and_is_varied():
    ex = load_examples(None)
    assert default_dataset_path().exists()
    assert len(ex) >= 200
    instructions = {e["messages"][0]["content"] for e in ex}
    assert len(instructions) == len(ex), "duplicate prompts in the bundled data"


def _saved_dict(tmp_path, **splits):
    """A DatasetDict saved to disk: the stand-in for a Hub dataset (same object, same split names)."""
    import datasets

    d = tmp_path / "ds"
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(d))
    return str(d)


def _ex(text):
    return {"instruction": f"Say {text}.", "input": "", "output": text}


def test_eval_split_defaults_to_validation_then_test_else_a_clear_error(tmp_path):
    from sftgo.data import DataError, load_examples

    train, val, test = [_ex("a"), _ex("b")], [_ex("v")], [_ex("t")]
    both = _saved_dict(tmp_path / "1", train=train, validation=val, test=test)
    assert load_examples(both, split=None)[0]["messages"][1]["content"] == "v"
    assert load_examples(both, split="test")[0]["messages"][1]["content"] == "t"
    assert len(load_examples(both)) == 2  # --dataset keeps reading "train" (--dataset_split)
    only_test = _saved_dict(tmp_path / "2", train=train, test=test)
    assert load_examples(only_test, split=None)[0]["messages"][1]["content"] == "t"
    only_train = _saved_dict(tmp_path / "3", train=train)
    with pytest.raises(DataError, match=r"no validation or test split \(its splits: train\).*--eval_split"):
        load_examples(only_train, split=None)
    with pytest.raises(DataError, match=r"no split 'dev' \(its splits: train, validation, test\)"):
        load_examples(both, split="dev")


@pytest.mark.parametrize("rec, message", [
    ({"instruction": "Say hi."}, "data.jsonl:3: missing field 'output' (Alpaca records need 'instruction', optional "
                                 "'input', and 'output')"),
    ({"instruction": "Say hi.", "output": 7}, "data.jsonl:3: field 'output' must be a string"),
    ({"question": ["2+2?"], "answer": "4"}, "data.jsonl:3: field 'question' must be a string"),
    ({"prompt": "Say hi."}, "data.jsonl:3: missing field 'completion' (prompt/completion records need both)"),
    ({"prompt": None, "completion": "hi"}, "data.jsonl:3: field 'prompt' must be a string"),
])
def test_a_bad_record_names_its_line_and_field(tmp_path, rec, message):
    path = tmp_path / "data.jsonl"
    good = {"instruction": "a", "output": "b"}
    path.write_text("\n".join(json.dumps(r) for r in (good, good, rec)) + "\n")
    with pytest.raises(DataError) as e:
        load_examples(str(path))
    assert message in str(e.value)
