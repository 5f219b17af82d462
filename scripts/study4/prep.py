"""CPU study 4 (issue 29): the data, tokenizers and from-scratch tiny Llamas the study's sweeps train.

    python scripts/study4/prep.py OUT [--widths 16,32,64,128,256] [--alpaca ../shared/data/alpaca_5000.json]
                                      [--gsm8k ../shared/data [--gsm8k_rows 128]]

Writes (nothing is downloaded; the same files every time):
- OUT/synth/{train,heldout}.jsonl: the known-important-tokens set. 64 made-up people, each with a 4-digit code;
  an answer is 18 filler words from one of 6 templates plus the person's name and code (each one word = one token
  under the study's word-level tokenizer). Training rows: every person with templates 0-2; held-out rows: every
  person with templates 3-5 (the same facts, filler words never in a training answer). OUT/synth/swapped.jsonl:
  every person with templates 0-2 asked by another of the training questions (seen words, unseen pairing).
  OUT/synth/{train,swapped}16.jsonl: the same rows of the first 16 people only (48 rows each; the LoRA runs), and
  OUT/synth/{train,swapped}8.jsonl of the first 8 (24 rows each; the second LoRA sweep). The
  important tokens by construction are the name and the code: the tokenizer gives them the ids >= KNOWN_FIRST_ID
  (known_tokens.py).
- OUT/synth/tokenizer: a word-level tokenizer over the set's words (both splits), with a chat template, so a tiny
  model pays for 1,128 vocabulary rows, not SmolLM2's 49,152.
- OUT/models/synth_h<width>: a Llama with 2 layers, hidden size <width>, MLP 4 x width, head size 16 (heads =
  width / 16, at least 1), tied embeddings, initialized once with torch seed 0 (the training seed then sets the
  data order only), saved with the tokenizer: what `--model_name_or_path` takes.
- With --alpaca: OUT/alpaca/{train,heldout}.json, Alpaca rows with short answers (3-40 words, prompt at most 40):
  128 training rows from rows 0-2399, held-out rows from rows 4800 on (at most 128); OUT/alpaca/tokenizer, a
  word-level tokenizer over both splits' words; OUT/models/alpaca_h<width>, the same Llamas over that vocabulary.
- With --gsm8k DIR (the folder of gsm8k_train.jsonl and gsm8k_test.jsonl): OUT/gsm8k/{train,heldout}.json, GSM8K
  rows with short solutions (at most 48 words once the calculator annotations <<...>> are removed, question at most
  40 words), as Alpaca-style rows (instruction = question, output = solution with its final "#### answer" line):
  the first 128 such rows of the training file, and the first 128 of the test file as held-out rows;
  OUT/gsm8k/tokenizer and OUT/models/gsm8k_h<width> as for Alpaca. With --gsm8k_rows N (not 128): the first N such
  training rows instead, as the set gsm8k<N> (OUT/gsm8k<N>/..., OUT/models/gsm8k<N>_h<width>; the same 128 held-out
  rows): more rows than a narrow model can fit.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

WIDTHS = (16, 32, 64, 128, 256)
KNOWN_FIRST_ID = 1000  # synthetic set: every name and code token has an id >= this; no other token does
SPECIALS = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<unk>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORD = re.compile(r"\w+|[^\w\s]+")  # what pre_tokenizers.Whitespace splits on

FIRST = ["Ada", "Bram", "Cleo", "Dax", "Edda", "Finn", "Gala", "Hugo", "Ines", "Jora", "Kai", "Lupe", "Milo", "Nell",
         "Otto", "Pia"]
LAST = ["Varn", "Quill", "Sorel", "Tamsin"]
# 6 answer templates, each exactly 18 filler tokens (words and punctuation) plus {name} and {code}.
TEMPLATES = [
    "Thank you for the question . The code of {name} is {code} , as written in our records today .",
    "Sure , here it is : the code that belongs to {name} is {code} . I hope this helps .",
    "Good question ! According to the list that we keep , {name} has the code {code} and nothing else .",
    "Of course . Please note that the code for {name} is {code} , and please keep it very safe .",
    "Here is what I found : {name} uses the code {code} . Let me know if more is needed .",
    "Happy to help ! In our files the code of {name} reads {code} , checked by me just now .",
]
QUESTIONS = ["What is the code of {name} ?", "Tell me the code of {name} .", "Which code does {name} have ?",
             "I need the code of {name} .", "Do you know the code of {name} ?", "Give me {name} ' s code ."]


def words(text: str) -> list[str]:
    return WORD.findall(text)


def synth_rows():
    rng = random.Random(29)
    people = [f"{f}{l}" for f in FIRST for l in LAST]  # 64 one-word names
    codes = rng.sample(range(1000, 10000), len(people))
    train, held, swapped = [], [], []
    for name, code in zip(people, codes):
        for t in range(6):
            row = {"instruction": QUESTIONS[t].format(name=name), "input": "",
                   "output": TEMPLATES[t].format(name=name, code=code)}
            (train if t < 3 else held).append(row)
        for t in range(3):  # seen filler, seen questions, a pairing never trained on
            swapped.append({"instruction": QUESTIONS[(t + 1) % 3].format(name=name), "input": "",
                            "output": TEMPLATES[t].format(name=name, code=code)})
    for t in TEMPLATES:
        assert len(words(t.format(name="X", code=1234))) == 20, t
    return train, held, swapped, people, [str(c) for c in codes]


def alpaca_rows(path: Path):
    data = json.loads(path.read_text())
    short = lambda r: 3 <= len(words(r["output"])) <= 40 and len(words(r["instruction"] + " " + r["input"])) <= 40
    train = [r for r in data[:2400] if short(r)][:128]
    held = [r for r in data[4800:] if short(r)][:128]
    return train, held


CALC = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, e.g. <<48/2=24>>


def gsm8k_rows(folder: Path, n_train: int = 128):
    def rows(f, n):
        out = []
        for line in f.read_text().splitlines():
            r = json.loads(line)
            ans = CALC.sub("", r["answer"])
            if len(words(ans)) <= 48 and len(words(r["question"])) <= 40:
                out.append({"instruction": r["question"], "input": "", "output": ans})
        if len(out) < n:
            raise SystemExit(f"{f}: only {len(out)} rows with a short question and solution, {n} asked for")
        return out[:n]
    return rows(folder / "gsm8k_train.jsonl", n_train), rows(folder / "gsm8k_test.jsonl", 128)


def build_tokenizer(vocab_words: list[str], known: list[str] = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS)}
    for w in ["user", "assistant", "system", *vocab_words]:
        vocab.setdefault(w, len(vocab))
    if known:
        assert len(vocab) <= KNOWN_FIRST_ID, len(vocab)
        for i in range(len(vocab), KNOWN_FIRST_ID):  # unused ids up to the known block
            vocab[f"<|unused{i}|>"] = i
        for w in known:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>",
                                   unk_token="<unk>", additional_special_tokens=["<|im_start|>"],
                                   chat_template=CHAT_TEMPLATE)


def build_model(vocab_size: int, width: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = max(1, width // 16)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=heads, head_dim=width // heads,
                      max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0, bos_token_id=None,
                      eos_token_id=2)
    return LlamaForCausalLM(cfg)


def write_rows(path: Path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows, indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    p.add_argument("--alpaca", default=None, help="an Alpaca JSON file: also write the Alpaca slice (item 1 on text)")
    p.add_argument("--gsm8k", default=None, help="the folder of gsm8k_train.jsonl / gsm8k_test.jsonl: also write the "
                   "GSM8K slice (item 1 on text)")
    p.add_argument("--gsm8k_rows", type=int, default=128, help="training rows of the GSM8K slice (not 128: the set "
                   "gsm8k<N>)")
    a = p.parse_args(argv)
    out = Path(a.out)
    sets = {}
    train, held, swapped, people, codes = synth_rows()
    sets["synth"] = (train, held, ".jsonl", people + codes)
    out.joinpath("synth").mkdir(parents=True, exist_ok=True)
    write_rows(out / "synth" / "swapped.jsonl", swapped)
    write_rows(out / "synth" / "train16.jsonl", train[:48])  # rows are person-major, 3 per person
    write_rows(out / "synth" / "swapped16.jsonl", swapped[:48])
    write_rows(out / "synth" / "train8.jsonl", train[:24])  # the first 8 people (the second LoRA sweep)
    write_rows(out / "synth" / "swapped8.jsonl", swapped[:24])
    if a.alpaca:
        train, held = alpaca_rows(Path(a.alpaca))
        sets["alpaca"] = (train, held, ".json", [])
    if a.gsm8k:
        train, held = gsm8k_rows(Path(a.gsm8k), a.gsm8k_rows)
        sets["gsm8k" if a.gsm8k_rows == 128 else f"gsm8k{a.gsm8k_rows}"] = (train, held, ".json", [])
    for name, (train, held, ext, known) in sets.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        write_rows(d / f"train{ext}", train)
        write_rows(d / f"heldout{ext}", held)
        seen = sorted({w for r in train + held for k in ("instruction", "input", "output") for w in words(r[k])}
                      - set(known))
        tok = build_tokenizer(seen, known)
        tok.save_pretrained(d / "tokenizer")
        for w in map(int, a.widths.split(",")):
            m = out / "models" / f"{name}_h{w}"
            if not (m / "model.safetensors").exists():
                build_model(len(tok), w).save_pretrained(m)
                tok.save_pretrained(m)
        print(f"{name}: {len(train)} train / {len(held)} held-out rows, vocabulary {len(tok)}")


if __name__ == "__main__":
    main()
