"""Data: read examples, render prompts, tokenize with response-only labels, collate with per-token columns.

Formats (detected per record):
- Alpaca: ``{"instruction", "input" (optional), "output"}``
- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` (multi-turn, as in LIMA)
- prompt/completion: ``{"prompt", "completion"}``
- LIMA (GAIR/lima): ``{"conversations": [user, assistant, user, ...]}`` (strings, alternating, user first)
- question/answer: ``{"question", "answer"}`` with a string answer (GSM8K's train/test JSONL as they are)

Optional fields on any of these formats (JSON / JSONL / CSV / Parquet files, Hub and ``save_to_disk`` datasets):

- ``weight``: the example's weight (a finite number >= 0, default 1; 0 = not trained on);
- ``loss_weight`` on a chat message (assistant messages only): that message's weight, multiplied by the example's;
- ``channel`` (or the field named by ``--channel_field``): a string naming the example's source, for per-channel
  loss curves.

A token's weight is ``weight x loss_weight`` of the assistant message it belongs to; tokens of weight 0 are not
supervised at all (label -100). ``null`` / a missing value means "not set".

Every record is normalized to ``{"messages": [...]}`` (plus ``weight``, ``loss_weights`` and ``channel`` when set). Rendering uses the tokenizer's chat template when it has one,
else an Alpaca-style template. Labels are the assistant tokens only (``-100`` elsewhere): the response text and the
end-of-turn marker that follows it (so the model learns to stop). Supervised tokens are found by character offsets
into the rendered text, so the tokens are exactly those the model sees at inference (no per-segment tokenization).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from .errors import UserError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

DEFAULT_DATASET = "builtin:default"
"""The small instruction dataset shipped inside the package (written for this project)."""

ALPACA_TEMPLATE_USER = "### Instruction:\n{content}\n\n### Response:\n"
ALPACA_TEMPLATE_SYSTEM = "{content}\n\n"


class DataError(UserError):
    """Bad input data; the message names the file, line or field and the fix."""


DEFAULT_CHANNEL = "default"
"""The channel of an example without a channel field in a dataset where other examples have one."""


class Examples(list):
    """A list of normalized examples that also remembers how many records were skipped and why, and whether the
    dataset sets weights (``weight`` / ``loss_weight``: then its batches carry a ``loss_weight`` column)."""

    num_empty: int = 0
    num_zero_weight: int = 0  # skipped: every assistant token has weight 0
    weighted: bool = False


# --------------------------------------------------------------------------------------------------------------- reading


def default_dataset_path() -> Path:
    return Path(__file__).parent / "resources" / "default_sft.jsonl"


def _read_records(path: Path) -> list[tuple[str, dict]]:
    """Return (location, record) pairs; the location ("file:line" or "file[index]") is used in error messages."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if suffix == ".json" or (suffix != ".jsonl" and stripped.startswith("[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno}); fix the file or use JSONL") from None
        if isinstance(data, dict):
            # Some dumps wrap the list: {"data": [...]} / {"train": [...]}.
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataError(f"{path}: expected a JSON list of examples (or an object holding exactly one list)")
            data = lists[0]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of examples, got {type(data).__name__}")
        return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno}); each line must be one JSON object") from None
        out.append((f"{path}:{lineno}", rec))
    return out


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    """CSV with a header row (Alpaca / prompt-completion / question-answer columns, plus ``weight`` and ``channel``).
    Every cell is a string: an empty cell is "not set", and ``weight`` is read as a number (a cell that is not one
    stays a string, which the weight check reports). Locations are ``file:line`` of the record's last line."""
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for rec in reader:
            rec = {k: v for k, v in rec.items() if k is not None and v not in (None, "")}
            if "weight" in rec:
                try:
                    rec["weight"] = float(rec["weight"])
                except ValueError:
                    pass
            out.append((f"{path}:{reader.line_num}", rec))
    return out


def _read_parquet(path: Path) -> list[tuple[str, dict]]:
    """Parquet rows as records (``file[row]``); nested chat messages come back as lists of dicts."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # not a parquet file, truncated, ...
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e)[:200]})") from None
    return [(f"{path}[{i}]", r) for i, r in enumerate(rows)]


def check_messages(msgs, where: str) -> list[dict]:
    """A ``messages`` field checked and copied as ``[{"role", "content"}, ...]``; errors name ``where``."""
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    clean = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: messages[{j}] needs the fields 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise DataError(f"{where}: messages[{j}].role is {m['role']!r}; use 'system', 'user' or 'assistant'")
        if not isinstance(m["content"], str):
            raise DataError(f"{where}: messages[{j}].content must be a string")
        clean.append({"role": m["role"], "content": m["content"]})
    return clean


def _weight_value(v, where: str, name: str) -> float:
    """A weight field's value: a finite number >= 0 (a bool or a string is not a number here)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)) or v < 0:
        raise DataError(f"{where}: {name} is {v!r}; it must be a finite number >= 0 (1 = the usual weight, "
                        f"0 = not trained on): fix the value or remove the field")
    return float(v)


def _channel_value(v, where: str, name: str) -> str:
    """A channel field's value: a non-empty string (an integer id is taken as its decimal string)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        v = str(int(v))
    if not isinstance(v, str) or not v.strip():
        raise DataError(f"{where}: field {name!r} is {v!r}; a channel must be a non-empty string naming the example's "
                        f"source (e.g. \"math\"): fix the value or remove the field")
    return v.strip()


def _normalize(rec, where: str, channel_field: str = "channel") -> dict:
    """The record as ``{"messages": [...]}`` plus, when set, ``weight`` (float), ``loss_weights`` (one float or None
    per message) and ``channel`` (str)."""
    ex = _normalize_messages(rec, where)
    if rec.get("weight") is not None:
        ex["weight"] = _weight_value(rec["weight"], where, "field 'weight'")
    msgs = rec.get("messages")
    if isinstance(msgs, list) and any(isinstance(m, dict) and m.get("loss_weight") is not None for m in msgs):
        lw = []
        for j, m in enumerate(msgs):
            v = m.get("loss_weight")
            if v is not None and m["role"] != "assistant":
                raise DataError(f"{where}: messages[{j}].loss_weight is set on a {m['role']!r} message; only assistant "
                                f"messages are trained on: remove it or move it to an assistant message")
            lw.append(None if v is None else _weight_value(v, where, f"messages[{j}].loss_weight"))
        ex["loss_weights"] = lw
    if rec.get(channel_field) is not None:
        ex["channel"] = _channel_value(rec[channel_field], where, channel_field)
    return ex


def _is_weighted(examples) -> bool:
    """Whether the data sets weights (then its batches carry the ``loss_weight`` column, even if every weight is 1)."""
    return bool(getattr(examples, "weighted", False)) or any("weight" in ex or "loss_weights" in ex for ex in examples)


def _span_weights(ex: dict) -> list[float]:
    """The weight of each supervised span of ``ex`` (its non-empty assistant messages, in order, as ``render`` makes
    them): the example's ``weight`` x the message's ``loss_weight`` (each 1 when not set)."""
    w = ex.get("weight", 1.0)
    lws = ex.get("loss_weights") or [None] * len(ex["messages"])
    return [w * (1.0 if lw is None else lw) for m, lw in zip(ex["messages"], lws)
            if m["role"] == "assistant" and m["content"].strip()]


def _normalize_messages(rec, where: str) -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "messages" in rec:
        clean = check_messages(rec["messages"], where)
        if not any(m["role"] == "assistant" for m in clean):
            raise DataError(f"{where}: 'messages' has no assistant turn, so there is nothing to train on")
        return {"messages": clean}
    if "conversations" in rec:
        conv = rec["conversations"]
        if not isinstance(conv, list) or not conv or not all(isinstance(t, str) for t in conv):
            raise DataError(f"{where}: field 'conversations' must be a non-empty list of strings "
                            "(LIMA layout: user and assistant turns alternating, user first)")
        turns = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(conv)]
        return _normalize_messages({"messages": turns}, where)
    if "instruction" in rec or "output" in rec:
        for key in ("instruction", "output"):
            if key not in rec:
                raise DataError(f"{where}: missing field '{key}' (Alpaca records need 'instruction', optional 'input', and 'output')")
            if not isinstance(rec[key], str):
                raise DataError(f"{where}: field '{key}' must be a string")
        user = rec["instruction"]
        extra = rec.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' must be a string")
        if extra.strip():
            user = f"{user}\n\n{extra}"
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]}
    if "question" in rec and isinstance(rec.get("answer"), str):
        # GSM8K and similar question / answer files (the answer may carry a chain of thought and '#### <number>').
        for key in ("question", "answer"):
            if not isinstance(rec[key], str):
                raise DataError(f"{where}: field '{key}' must be a string")
        return {"messages": [{"role": "user", "content": rec["question"]}, {"role": "assistant", "content": rec["answer"]}]}
    if "prompt" in rec or "completion" in rec:
        for key in ("prompt", "completion"):
            if key not in rec:
                raise DataError(f"{where}: missing field '{key}' (prompt/completion records need both)")
            if not isinstance(rec[key], str):
                raise DataError(f"{where}: field '{key}' must be a string")
        return {"messages": [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": rec["completion"]}]}
    raise DataError(
        f"{where}: unrecognized record with fields {sorted(rec)}; expected 'messages' (chat), "
        f"'instruction'/'input'/'output' (Alpaca), 'prompt'/'completion', 'question'/'answer' (GSM8K) or "
        f"'conversations' (LIMA)"
    )


HELDOUT_SPLITS = ("validation", "valid", "val", "dev", "test")
"""Split names taken, in this order, as a dataset's held-out split when none is named (``--eval_split``)."""


def choose_split(dataset: str, splits: list[str], requested: str | None) -> str:
    """The split to read: ``requested`` when given (it must exist), else the held-out one (validation / test)."""
    have = ", ".join(splits) or "none"
    if requested:
        if requested not in splits:
            raise DataError(f"dataset {dataset!r} has no split {requested!r} (its splits: {have})")
        return requested
    for name in HELDOUT_SPLITS:
        if name in splits:
            return name
    raise DataError(f"dataset {dataset!r} has no validation or test split (its splits: {have}): name one with "
                    f"--eval_split, or pass a held-out .json/.jsonl file as --eval_dataset")


def _is_saved_dataset(p: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk`` (a DatasetDict or a single Dataset)."""
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


def load_examples(path_or_id: str | None = None, *, split: str | None = "train", limit: int | None = None,
                  channel_field: str | None = None, strict_channel: bool = True, flag: str = "--dataset") -> Examples:
    """Read and normalize examples from a local JSON/JSONL/CSV/Parquet file, the built-in default, a Hub dataset id or a
    folder written by ``datasets``' ``save_to_disk``. ``split`` picks a split of the last two; ``None`` picks the
    held-out one (validation, else test: :func:`choose_split`) and is an error when there is none.

    Examples whose assistant turns are all empty are skipped and counted in ``Examples.num_empty``; examples whose
    every non-empty assistant turn has weight 0 (``weight`` 0, or ``loss_weight`` 0 on each) in
    ``Examples.num_zero_weight``. ``channel_field`` names the field holding each example's channel (``None``: the
    field ``channel`` if any example has one; a name given explicitly must exist in some example). In a dataset where
    some examples have a channel, those without one get :data:`DEFAULT_CHANNEL`. ``strict_channel=False`` (held-out
    data) lets a dataset without the field be read with no channels.
    """
    if path_or_id in (None, "", DEFAULT_DATASET):
        path_or_id = str(default_dataset_path())
    p = Path(path_or_id).expanduser()
    if p.is_dir() and _is_saved_dataset(p):
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[choose_split(path_or_id, list(ds), split)]
        records = [(f"{path_or_id}[{i}]", dict(r)) for i, r in enumerate(ds)]
    elif p.exists():
        if p.is_dir():
            raise DataError(f"dataset {path_or_id!r} is a folder; pass a .json, .jsonl, .csv or .parquet file (or a "
                        f"save_to_disk folder)")
        records = _read_records(p)
    elif path_or_id.endswith((".json", ".jsonl")) or path_or_id.startswith((".", "/", "~")):
        raise DataError(f"dataset file {path_or_id!r} does not exist; pass an existing .json/.jsonl/.csv/.parquet file "
                        f"or a Hub dataset id")
    else:
        import datasets

        from .hub import require_hub

        require_hub(path_or_id, flag, "dataset", error=DataError)
        try:
            if split is None:  # the held-out split: from the dataset's split names (metadata only)
                split = choose_split(path_or_id, list(datasets.get_dataset_split_names(path_or_id)), None)
            ds = datasets.load_dataset(path_or_id, split=split)
        except DataError:
            raise
        except Exception as e:  # offline / unknown id / no such split: one line instead of a network traceback
            msg = (str(e).strip().splitlines() or [""])[0][:200]
            raise DataError(f"could not load the Hub dataset {path_or_id!r} ({type(e).__name__}: {msg}); without Hub "
                            f"access pass a local .json/.jsonl file, e.g. {flag} ./alpaca_data.json") from None
        records = [(f"{path_or_id}[{i}]", dict(r)) for i, r in enumerate(ds)]
    out = Examples()
    field_name = channel_field or "channel"
    for where, rec in records:
        ex = _normalize(rec, where, field_name)
        out.weighted = out.weighted or "weight" in ex or "loss_weights" in ex
        if all(not m["content"].strip() for m in ex["messages"] if m["role"] == "assistant"):
            out.num_empty += 1
            continue
        if not any(_span_weights(ex)):  # nothing left to supervise: dropped like an empty example
            out.num_zero_weight += 1
            continue
        out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    if out.num_empty:
        logger.warning("%s: skipped %d example(s) with an empty response", path_or_id, out.num_empty)
    if out.num_zero_weight:
        logger.warning("%s: skipped %d example(s) whose weight is 0 (weight 0, or loss_weight 0 on every assistant "
                       "message)", path_or_id, out.num_zero_weight)
    if not out:
        raise DataError(f"{path_or_id}: no usable examples ({out.num_empty} had empty responses, "
                        f"{out.num_zero_weight} weight 0)")
    with_channel = sum("channel" in ex for ex in out)
    if channel_field and strict_channel and not with_channel:
        raise DataError(f"{path_or_id}: no example has the channel field {channel_field!r} (--channel_field); name a "
                        f"field the records have, or leave --channel_field unset")
    if 0 < with_channel < len(out):
        logger.warning("%s: %d example(s) have no %r field: they form the channel %r", path_or_id,
                       len(out) - with_channel, field_name, DEFAULT_CHANNEL)
        for ex in out:
            ex.setdefault("channel", DEFAULT_CHANNEL)
    return out


# ------------------------------------------------------------------------------------------------------------ rendering


def render(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]], bool]:
    """Render a conversation to text. Returns (text, supervised character spans, uses_chat_template).

    A supervised span covers one assistant turn's content plus the end-of-turn marker the template puts right after it
    (trailing whitespace excluded). Empty assistant turns get no span.
    """
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or not m["content"].strip():
                continue
            prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
            upto = full if i == len(messages) - 1 else tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            content = m["content"]
            start = upto.find(content, len(prefix))
            if start < 0:  # some templates strip the content
                content = content.strip()
                start = upto.find(content, len(prefix))
            if start < 0 or not full.startswith(upto[:start]):
                raise DataError(
                    "the tokenizer's chat template does not render assistant turns as a stable prefix of the conversation; "
                    "set a simpler template (tokenizer.chat_template) or use a model whose template does"
                )
            end = len(upto.rstrip())
            spans.append((start, end))
        return full, spans, True
    # Alpaca-style fallback: "### Instruction: ... ### Response: <answer><eos>"
    eos = tokenizer.eos_token or ""
    text, spans = "", []
    for m in messages:
        if m["role"] == "system":
            text += ALPACA_TEMPLATE_SYSTEM.format(content=m["content"])
        elif m["role"] == "user":
            text += ALPACA_TEMPLATE_USER.format(content=m["content"])
        else:
            start = len(text)
            text += m["content"] + eos
            if m["content"].strip():
                spans.append((start, len(text)))
            text += "\n\n"
    return text.rstrip("\n"), spans, False


@dataclass
class TokenizedData:
    """Tokenized examples. Per-token columns (``labels``, ``offsets``, and any the scorers add) stay aligned with
    ``input_ids``: they are all cut by the same truncation.

    ``columns["loss_weight"]`` (only when the examples set ``weight`` / ``loss_weight``): each supervised token's data
    weight (> 0; weight-0 tokens are not supervised). ``channels``: each example's channel name (None when the data
    has none); :func:`set_channel_column` turns them into the ``channel`` column of ids."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    texts: list[str]
    offsets: list[np.ndarray]  # [L, 2] character span of each token in its text
    num_dropped: int = 0  # examples whose response was entirely truncated away
    num_empty: int = 0  # examples skipped because their response was empty
    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)  # extra per-supervised-token float columns
    num_zero_weight: int = 0  # examples skipped because every assistant token had weight 0
    channels: list[str] | None = None  # the channel of each example (None: the data has no channels)

    def __len__(self) -> int:
        return len(self.input_ids)

    def supervised(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids [n], character offsets [n, 2]) of example i's supervised tokens, in order."""
        lab = np.asarray(self.labels[i])
        sel = lab != IGNORE_INDEX
        return lab[sel], self.offsets[i][sel]

    def supervised_ids(self) -> list[list[int]]:
        return [[t for t in lab if t != IGNORE_INDEX] for lab in self.labels]

    def fingerprint(self) -> str:
        """sha256 of the token ids and labels (the identity of the data for the score caches). Hashes flat int64
        arrays: ~15x faster than canonical JSON of nested lists on thousands of examples."""
        import hashlib

        h = hashlib.sha256()
        for rows in (self.input_ids, self.labels):
            lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
            flat = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
            h.update(lengths.tobytes())
            h.update(flat.tobytes())
        return h.hexdigest()

    def supervised_lengths(self) -> list[int]:
        """Number of supervised tokens of each example (the length of its score arrays)."""
        return [sum(1 for t in lab if t != IGNORE_INDEX) for lab in self.labels]

    def num_supervised(self) -> int:
        return sum(self.supervised_lengths())


def tokenize_examples(examples: list[dict], tokenizer, max_length: int = 512) -> TokenizedData:
    """Render, tokenize and label examples. Right-truncates to ``max_length``; drops (and counts) examples with no
    supervised token left. Weighted examples (``weight`` / ``loss_weights``, see :func:`load_examples`) also give the
    ``loss_weight`` column; weight-0 tokens get label -100."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("sftgo needs a fast tokenizer (character offsets locate the response tokens); load one with use_fast=True")
    if max_length < 2:
        raise DataError(f"max_length={max_length}: must be at least 2")
    out = TokenizedData([], [], [], [], num_empty=getattr(examples, "num_empty", 0),
                        num_zero_weight=getattr(examples, "num_zero_weight", 0))
    weighted = _is_weighted(examples)
    has_channels = any("channel" in ex for ex in examples)
    weights, channels = [], []
    rendered = [render(ex["messages"], tokenizer) for ex in examples]
    chat = bool(rendered) and rendered[0][2]
    # One batched call: the fast tokenizer encodes in parallel in Rust (~5x faster than one call per example).
    # Chat templates write BOS themselves when the model wants one; the Alpaca template relies on the tokenizer.
    enc = tokenizer([r[0] for r in rendered], add_special_tokens=not chat, return_offsets_mapping=True)
    for ex, (text, spans, _), ids, offs in zip(examples, rendered, enc["input_ids"], enc["offset_mapping"]):
        ids = np.asarray(ids, dtype=np.int64)
        offs = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
        sup = np.zeros(len(ids), dtype=bool)
        tok_w = None
        if spans:
            sp = np.asarray(spans, dtype=np.int64)  # [S, 2]
            s, e = offs[:, :1], offs[:, 1:]
            # A token is supervised when its (non-empty) character span overlaps a response span.
            hit = (e > s) & (s < sp[None, :, 1]) & (e > sp[None, :, 0])  # [L, S]
            sup = hit.any(axis=1)
            if weighted:
                span_w = np.asarray(_span_weights(ex), dtype=np.float64)  # one weight per span (= per assistant turn)
                if span_w.shape[0] != sp.shape[0]:
                    raise RuntimeError(f"{span_w.shape[0]} span weights for {sp.shape[0]} response spans")
                # A token belongs to one turn (template text separates turns); the max only matters if it did not.
                tok_w = np.where(hit, span_w[None, :], 0.0).max(axis=1)
                sup &= tok_w > 0  # weight 0: not supervised at all (absent from counts, groups, top-k and metrics)
        labels = np.where(sup, ids, IGNORE_INDEX)[:max_length]
        kept = labels != IGNORE_INDEX
        if not kept.any():
            out.num_dropped += 1
            continue
        out.input_ids.append(ids[:max_length].tolist())
        out.labels.append(labels.tolist())
        out.texts.append(text)
        out.offsets.append(offs[:max_length])
        if weighted:  # cut with the tokens, then one value per supervised token (TokenizedData.columns' layout)
            weights.append(tok_w[:max_length][kept].astype(np.float32))
        if has_channels:
            channels.append(ex.get("channel", DEFAULT_CHANNEL))
    if out.num_dropped:
        logger.warning("dropped %d example(s) whose response was entirely truncated at max_length=%d", out.num_dropped, max_length)
    if not out.input_ids:
        raise DataError(f"every example's response was truncated away at max_length={max_length}; raise --max_length")
    if weighted:
        out.columns["loss_weight"] = weights
    if has_channels:
        out.channels = channels
    return out


# ------------------------------------------------------------------------------------------------- tokenized-data cache

TOKENIZED_FORMAT_VERSION = 2  # 2: weights (the loss_weight array, weight-0 tokens unsupervised) and channels
"""Bump when ``render``/``tokenize_examples`` change what they produce: old cache entries then no longer match."""


def tokenized_cache_dir(score_cache_dir: str | Path | None = None) -> Path:
    """The one place that decides where tokenized data is cached: ``<score_cache_dir>/tokenized`` when a score cache
    folder is given (``--cache_dir`` / ``score_cache_dir``), else ``$SFTGO_CACHE/tokenized`` (``~/.cache/sftgo/tokenized``),
    next to the default score cache."""
    from .cache import default_cache_dir

    if score_cache_dir:
        return Path(score_cache_dir).expanduser() / "tokenized"
    return default_cache_dir().parent / "tokenized"


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 identifying everything about a fast tokenizer that ``render`` + ``tokenize_examples`` depend on.

    Hashes the whole serialized Rust tokenizer (``backend_tokenizer.to_str()``: vocab, merges, normalizer,
    pre-tokenizer, post-processor, added tokens), the chat template, the special tokens and the class name, plus the
    ``tokenizers``/``transformers`` versions (a new release may tokenize or render differently). The name or path is
    deliberately left out: the same files under two names share entries, and a changed folder under one name does not.
    Cost: ~40 ms for SmolLM2's 49K vocab (1.5 MB JSON), about 1/10 of tokenizing 1,000 examples; hashing the
    ``tokenizer.json`` file instead would be cheaper but would miss changes made after loading (added tokens, pad).
    """
    import hashlib

    import tokenizers
    import transformers

    from .cache import fingerprint

    backend = tokenizer.backend_tokenizer.to_str()
    return fingerprint({
        "backend": hashlib.sha256(backend.encode("utf-8")).hexdigest(),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special_tokens": {k: (v if isinstance(v, (str, list)) else str(v)) for k, v in tokenizer.special_tokens_map.items()},
        "class": type(tokenizer).__name__,
        "versions": [tokenizers.__version__, transformers.__version__],
    })


def _tokenized_checksum(arrays: dict[str, np.ndarray], texts: list[str], num_dropped: int,
                        channels: list[str] | None = None) -> str:
    """sha256 over every array (name, dtype, shape, bytes), the texts, num_dropped and the channels: what a cache hit
    returns."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(json.dumps([texts, int(num_dropped), channels], ensure_ascii=True).encode("utf-8"))
    return h.hexdigest()


_INT_ARRAYS = ("input_ids", "labels", "offsets", "lengths")


def _load_tokenized(npz_path: Path, json_path: Path, key: dict, examples) -> TokenizedData | None:
    """The cached entry as TokenizedData, or None (with a warning saying why) when missing, stale or corrupted."""
    if not npz_path.exists() and not json_path.exists():
        return None
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        logger.warning("tokenized cache: unreadable sidecar %s (%s); rebuilding", json_path, e)
        return None
    if meta.get("key") != key:
        logger.warning("tokenized cache: stale entry %s (key or format differs from the request); rebuilding", json_path)
        return None
    weighted = bool(key.get("weighted"))
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _INT_ARRAYS + (("loss_weight",) if weighted else ())}
    except Exception as e:  # truncated zip, missing member, pickled object array, ...
        logger.warning("tokenized cache: corrupted entry %s (%s: %s); rebuilding", npz_path, type(e).__name__, e)
        return None
    texts, num_dropped, channels = meta.get("texts"), meta.get("num_dropped"), meta.get("channels")
    ids, labels, offs, lengths = arrays["input_ids"], arrays["labels"], arrays["offsets"], arrays["lengths"]
    shapes_ok = (
        isinstance(texts, list) and all(isinstance(t, str) for t in texts) and isinstance(num_dropped, int)
        and (channels is None or (isinstance(channels, list) and len(channels) == len(texts)
                                  and all(isinstance(c, str) for c in channels)))
        and ids.ndim == 1 and labels.shape == ids.shape and offs.shape == (ids.size, 2) and lengths.ndim == 1
        and all(arrays[k].dtype == np.int64 for k in _INT_ARRAYS)
        and (not weighted or (arrays["loss_weight"].dtype == np.float32 and arrays["loss_weight"].shape == ids.shape))
        and lengths.size == len(texts) and lengths.size > 0 and (lengths > 0).all() and int(lengths.sum()) == ids.size
    )
    if not shapes_ok:
        logger.warning("tokenized cache: inconsistent arrays/lengths in %s; rebuilding", npz_path)
        return None
    if _tokenized_checksum(arrays, texts, num_dropped, channels) != meta.get("checksum"):
        logger.warning("tokenized cache: checksum mismatch for %s; rebuilding", npz_path)
        return None
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    # One tolist() of the flat arrays then list slicing: ~10x faster than N small tolist() calls.
    ids_l, lab_l = ids.tolist(), labels.tolist()
    out = TokenizedData(
        input_ids=[ids_l[a:b] for a, b in zip(starts, ends)],
        labels=[lab_l[a:b] for a, b in zip(starts, ends)],
        texts=texts,
        offsets=[offs[a:b] for a, b in zip(starts, ends)],
        num_dropped=num_dropped,
        num_empty=getattr(examples, "num_empty", 0),
        num_zero_weight=getattr(examples, "num_zero_weight", 0),
        channels=channels,
    )
    if weighted:  # stored full length (0 off the supervised tokens); the column holds the supervised tokens' values
        w, sup = arrays["loss_weight"], labels != IGNORE_INDEX
        out.columns["loss_weight"] = [w[a:b][sup[a:b]] for a, b in zip(starts, ends)]
    return out


def tokenize_cached(examples: list[dict], tokenizer, max_length: int = 512, cache_dir: str | Path | None = None) -> TokenizedData:
    """``tokenize_examples`` through an on-disk cache: a second run on the same examples, tokenizer and max_length
    skips chat-template rendering and tokenization (~0.5 s per 1,000 examples for SmolLM2).

    Key: sha256 of (the examples' messages, weights and channels as canonical JSON, :func:`tokenizer_fingerprint`,
    max_length, whether the data is weighted, format version). Entry under ``cache_dir`` (default
    :func:`tokenized_cache_dir`)::

        <key>.npz    input_ids, labels: int64 [M] (all examples concatenated); offsets: int64 [M, 2]; lengths: int64 [N];
                     loss_weight: float32 [M] (weighted data only; 0 off the supervised tokens)
        <key>.json   {"key", "checksum" (arrays + texts + num_dropped + channels), "texts" [N], "num_dropped",
                      "channels" [N] or null, ...}

    No pickle (``allow_pickle=False``); both files written atomically, the sidecar last. A stale, truncated or
    corrupted entry (key, checksum or lengths disagree) is logged and rebuilt, never used. ``num_empty`` and
    ``num_zero_weight`` are taken from ``examples`` on every call (they are decided by ``load_examples``, not by
    tokenization). Returns data equal, field by field, to ``tokenize_examples(examples, tokenizer, max_length)``.
    """
    from .cache import _atomic_write, fingerprint

    if not getattr(tokenizer, "is_fast", False) or max_length < 2:
        return tokenize_examples(examples, tokenizer, max_length)  # raises the usual clear DataError
    try:
        # What reaches tokenization: the messages, and the weights and channel when set. One json.dumps of the whole
        # list: ~3x faster than fingerprint()'s canonical walk (15 ms per 1,000 examples), and the records are plain
        # JSON after load_examples anyway.
        examples_json = json.dumps([{k: ex[k] for k in ("messages", "weight", "loss_weights", "channel") if k in ex}
                                    for ex in examples], sort_keys=True, ensure_ascii=True)
    except (TypeError, KeyError, ValueError):  # not normalized records: let tokenize_examples judge them, uncached
        return tokenize_examples(examples, tokenizer, max_length)
    weighted = _is_weighted(examples)
    key = {
        "format": TOKENIZED_FORMAT_VERSION,
        "examples": fingerprint(examples_json.encode("ascii")),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": int(max_length),
        "weighted": weighted,
    }
    digest = fingerprint(key)
    root = Path(cache_dir).expanduser() if cache_dir is not None else tokenized_cache_dir()
    npz_path, json_path = root / f"{digest}.npz", root / f"{digest}.json"

    hit = _load_tokenized(npz_path, json_path, key, examples)
    if hit is not None:
        logger.info("tokenized cache hit: %s", npz_path)
        if hit.num_dropped:  # same warning as a fresh tokenization, so a cached run says the same thing
            logger.warning("dropped %d example(s) whose response was entirely truncated at max_length=%d", hit.num_dropped, max_length)
        return hit

    data = tokenize_examples(examples, tokenizer, max_length)
    lengths = np.fromiter((len(x) for x in data.input_ids), dtype=np.int64, count=len(data))
    total = int(lengths.sum())
    arrays = {
        "input_ids": np.fromiter((t for x in data.input_ids for t in x), dtype=np.int64, count=total),
        "labels": np.fromiter((t for x in data.labels for t in x), dtype=np.int64, count=total),
        "offsets": np.concatenate(data.offsets).astype(np.int64, copy=False).reshape(-1, 2),
        "lengths": lengths,
    }
    if weighted:
        w = np.zeros(total, dtype=np.float32)
        w[arrays["labels"] != IGNORE_INDEX] = np.concatenate(data.columns["loss_weight"])
        arrays["loss_weight"] = w
    meta = {
        "key": key,
        "checksum": _tokenized_checksum(arrays, data.texts, data.num_dropped, data.channels),
        "num_sequences": len(data),
        "num_tokens": total,
        "num_dropped": int(data.num_dropped),
        "texts": data.texts,
        "channels": data.channels,
    }
    try:
        root.mkdir(parents=True, exist_ok=True)
        _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
        _atomic_write(json_path, lambda f: f.write(json.dumps(meta, ensure_ascii=True).encode("ascii")))
        logger.info("tokenized cache write: %s", npz_path)
    except OSError as e:  # a read-only or full disk must not stop training: the data is already in memory
        logger.warning("tokenized cache: could not write %s (%s); continuing without caching", npz_path, e)
    return data


# ------------------------------------------------------------------------------------------------------------- channels

OTHER_CHANNEL = "other"
"""Where channels beyond ``--max_channels`` (the smallest by supervised tokens) are merged."""


def channel_tokens(data: TokenizedData) -> dict[str, int]:
    """Supervised tokens per channel of ``data`` (empty when it has no channels)."""
    counts: dict[str, int] = {}
    for name, n in zip(data.channels or [], data.supervised_lengths()):
        counts[name] = counts.get(name, 0) + n
    return counts


def channel_vocabulary(counts: dict[str, int], max_channels: int = 32, base: list[str] | None = None,
                       what: str = "the training data") -> list[str]:
    """The channel names, in id order: built once from the training data (``counts``: supervised tokens per channel)
    and identical on every process (it depends on the data alone) and for train and eval.

    Channels are ordered by supervised tokens, descending, ties by name. With more than ``max_channels``, the largest
    ``max_channels - 1`` keep their own id and the rest are merged into ``other`` (a warning says how many). ``base``
    (the training vocabulary, for held-out data): its ids stay as they are; channels only the held-out data has are
    appended in the same order while there is room under ``max_channels``, the rest merged into ``other``.
    """
    base = list(base or [])
    order = sorted((c for c in counts if c not in base), key=lambda c: (-counts[c], c))
    room = max_channels - len(base)
    if len(order) <= room:
        return base + order
    keep = [c for c in order if c != OTHER_CHANNEL][:max(room - (OTHER_CHANNEL not in base), 0)]
    merged = [c for c in order if c not in keep]  # a channel really called 'other' counts among them
    logger.warning("%s brings the channels to %d, more than --max_channels %d: %d channel(s) with the fewest supervised "
                   "tokens (%d tokens in all) are merged into %r", what, len(base) + len(order), max_channels,
                   len(merged), sum(counts[c] for c in merged), OTHER_CHANNEL)
    return base + keep + ([] if OTHER_CHANNEL in base else [OTHER_CHANNEL])


def set_channel_column(data: TokenizedData, names: list[str]) -> None:
    """``data.columns["channel"]``: each supervised token's channel id in ``names`` (a name not in it: ``other``)."""
    ids = {c: float(i) for i, c in enumerate(names)}
    other = ids.get(OTHER_CHANNEL)
    col = []
    for name, n in zip(data.channels, data.supervised_lengths()):
        i = ids.get(name, other)
        if i is None:
            raise ValueError(f"channel {name!r} is not in the vocabulary {names} (which has no {OTHER_CHANNEL!r})")
        col.append(np.full(n, i, dtype=np.float32))
    data.columns["channel"] = col


def add_channels(train: TokenizedData | None, eval_data: TokenizedData | None = None, max_channels: int = 32) -> list[str]:
    """Give ``train`` and ``eval_data`` (either may be None or have no channels) their ``channel`` column, from one
    vocabulary: the training data's (:func:`channel_vocabulary`), extended by channels only the held-out data has.
    Returns the names in id order ([] when neither has channels)."""
    names: list[str] = []
    if train is not None and train.channels is not None:
        names = channel_vocabulary(channel_tokens(train), max_channels)
        set_channel_column(train, names)
    if eval_data is not None and eval_data.channels is not None:
        names = channel_vocabulary(channel_tokens(eval_data), max_channels, base=names, what="the held-out data")
        set_channel_column(eval_data, names)
    return names


# ------------------------------------------------------------------------------------------------------------- batching


class TokenDataset:
    """A map-style dataset over ``TokenizedData``. Item i holds input_ids, labels and every extra per-token column
    expanded to full length (0 at unsupervised positions), so truncation/padding keep them aligned with the tokens."""

    def __init__(self, data: TokenizedData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.data.input_ids[i], "labels": self.data.labels[i]}
        lab = np.asarray(self.data.labels[i])
        sup = lab != IGNORE_INDEX
        for name, col in self.data.columns.items():
            full = np.zeros(len(lab), dtype=np.float32)
            full[sup] = col[i]
            item[name] = full
        return item


BATCH_LAYOUTS = ("padded", "packed", "padding_free")
"""How a micro-batch's examples are laid out in the model's input (``Collator.layout``)."""

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
                    "max_length_k")
"""The batch entries that go to the model's forward (when present). Everything else in a batch is a per-token column
for the loss (``labels``, ``example_index``, ``importance``, ``ref_logp``, ...)."""


def model_inputs(batch: dict) -> dict:
    """The model's forward kwargs for a training or scoring pass over a collated batch: input ids plus whatever tells
    attention where examples are (``attention_mask`` for padded rows; ``position_ids`` and, for flash-attention,
    ``cu_seq_lens_*`` / ``max_length_*`` for packed and padding-free rows), and ``use_cache=False``.

    ``use_cache=False`` is not only a saving: with a KV cache (the default in eval mode) transformers skips the
    packed-sequence detection and lets packed examples attend to each other (tests/unit/test_packing.py)."""
    return {**{k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}, "use_cache": False}


def pack_rows(lengths: list[int], capacity: int | None) -> list[list[int]]:
    """Assign items to rows of at most ``capacity`` tokens (``None`` = one row). Returns the item indices of each row,
    in input order within a row. An item longer than ``capacity`` gets a row of its own.

    First-fit decreasing gives the number of rows R; the items are then spread over R rows, longest first, each to the
    least-loaded row it fits in, so the rows come out about equally long: the batch is padded to its longest row, and
    first-fit alone tends to leave one full row next to a short one (bundled data, batches of 8 at max_length 512:
    1.35x the real token count with first-fit, 1.01x spread). If the spread does not fit, the first-fit rows are kept."""
    if capacity is None:
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda j: (-lengths[j], j))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        for r, f in enumerate(free):
            if lengths[i] <= f:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    spread: list[list[int]] = [[] for _ in rows]
    load = [0] * len(rows)
    for i in order:
        fits = [r for r in range(len(rows)) if load[r] + lengths[i] <= capacity or not spread[r]]
        if not fits:
            break
        r = min(fits, key=lambda k: (load[k], k))
        spread[r].append(i)
        load[r] += lengths[i]
    else:
        if max(load) <= max(capacity - f for f in free):
            rows = spread
    return [sorted(r) for r in rows]


@dataclass
class Collator:
    """Lays out a list of items (one per example) as a micro-batch; every per-token column stays aligned with its
    tokens and an ``example_index`` column ([R, W] long: the item's position in ``items``, -1 on padding) says which
    example each token belongs to, so per-example quantities (SFT-GO's percentile groups) stay per *example*.

    ``layout``:
    - ``"padded"``: one example per row, right-padded (input_ids with pad_token_id, labels -100, float columns 0) and
      an ``attention_mask``.
    - ``"packed"``: several examples per row, at most ``max_length`` tokens per row (first-fit decreasing), rows
      right-padded to the longest row. No attention mask: ``position_ids`` restart at 0 for every example (and for the
      padding tail, which thereby forms a block of its own).
    - ``"padding_free"``: all examples in one row ``[1, total]``, no padding, ``position_ids`` restarting per example.

    Why position ids and no mask: with ``attention_mask=None`` transformers' mask builder (``masking_utils``:
    ``find_packed_sequence_indices``) turns restarting position ids into a block-diagonal causal mask for the eager,
    sdpa and flex implementations, on any device; a 2-D attention mask would switch that detection off. Flash-attention
    only infers boundaries from position ids for a single row, so with ``flash_attn_kwargs=True`` (set when the model
    uses ``flash_attention_*``) the collator also returns ``cu_seq_lens_q/k`` (int32 cumulative lengths over the
    flattened rows, padding tails included as their own blocks) and ``max_length_q/k``, which the varlen kernel uses
    for any number of rows.

    The first token of every example gets label -100 in the packed layouts: in a padded row it is never a target
    (position t predicts token t + 1), and in a packed row the previous example's last position would otherwise be
    trained to predict it.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    layout: str = "padded"
    max_length: int | None = None  # row capacity for layout="packed"
    flash_attn_kwargs: bool = False

    def __post_init__(self):
        if self.layout not in BATCH_LAYOUTS:
            raise ValueError(f"Collator.layout={self.layout!r} is not one of {', '.join(BATCH_LAYOUTS)}")
        if self.layout == "packed" and not self.max_length:
            raise ValueError("Collator(layout='packed') needs max_length (the tokens per packed row)")

    def __call__(self, items: list[dict]) -> dict:
        import torch

        lengths = [len(it["input_ids"]) for it in items]
        if self.layout == "padded":
            rows = [[i] for i in range(len(items))]
        else:
            rows = pack_rows(lengths, self.max_length if self.layout == "packed" else None)
        n = max(sum(lengths[i] for i in row) for row in rows)
        if self.pad_to_multiple_of and self.layout != "padding_free":
            n = -(-n // self.pad_to_multiple_of) * self.pad_to_multiple_of
        b = len(rows)
        batch = {
            "input_ids": torch.full((b, n), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((b, n), IGNORE_INDEX, dtype=torch.long),
            "example_index": torch.full((b, n), -1, dtype=torch.long),
        }
        packed = self.layout != "padded"
        if packed:
            batch["position_ids"] = torch.zeros((b, n), dtype=torch.long)
        else:
            batch["attention_mask"] = torch.zeros((b, n), dtype=torch.long)
        extra = [k for k in items[0] if k not in ("input_ids", "labels")]
        for k in extra:
            batch[k] = torch.zeros((b, n), dtype=torch.float32)
        seg_lengths = []  # lengths of the attention blocks, row by row (flash-attention's cu_seqlens)
        for r, row in enumerate(rows):
            pos = 0
            for i in row:
                it, L = items[i], lengths[i]
                sl = slice(pos, pos + L)
                batch["input_ids"][r, sl] = torch.as_tensor(it["input_ids"])
                batch["labels"][r, sl] = torch.as_tensor(it["labels"])
                batch["example_index"][r, sl] = i
                for k in extra:
                    batch[k][r, sl] = torch.as_tensor(it[k])
                if packed:
                    batch["labels"][r, pos] = IGNORE_INDEX
                    batch["position_ids"][r, sl] = torch.arange(L)
                else:
                    batch["attention_mask"][r, sl] = 1
                seg_lengths.append(L)
                pos += L
            if pos < n:
                if packed:
                    batch["position_ids"][r, pos:] = torch.arange(n - pos)
                seg_lengths.append(n - pos)
        if packed and self.flash_attn_kwargs:
            cu = torch.zeros(len(seg_lengths) + 1, dtype=torch.int32)
            cu[1:] = torch.cumsum(torch.as_tensor(seg_lengths, dtype=torch.int32), 0)
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu
            batch["max_length_q"] = batch["max_length_k"] = max(seg_lengths)
        return batch
