"""Reading examples: local JSON / JSONL / CSV / Parquet files, the built-in dataset, Hub datasets and ``save_to_disk``
folders, each record checked and normalized to ``{"messages": [...]}`` (plus ``weight``, ``loss_weights`` and
``channel`` when set); bad input is a :class:`DataError` naming the file, line or field. The formats are listed in
:mod:`sftgo.data`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import numbers
from pathlib import Path

import numpy as np
from ..errors import UserError

logger = logging.getLogger(__package__)  # "sftgo.data", as before the package

DEFAULT_DATASET = "builtin:default"
"""The small instruction dataset shipped inside the package (written for this project)."""


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
    return Path(__file__).parent.parent / "resources" / "default_sft.jsonl"


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


def _string_fields(rec: dict, keys, where: str, missing: str | None = None) -> None:
    """DataError unless each of ``keys`` is a string field of ``rec``; ``missing``: the hint for an absent one (None:
    the caller already knows they are present)."""
    for key in keys:
        if missing is not None and key not in rec:
            raise DataError(f"{where}: missing field '{key}' ({missing})")
        if not isinstance(rec[key], str):
            raise DataError(f"{where}: field '{key}' must be a string")


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
        _string_fields(rec, ("instruction", "output"), where,
                       missing="Alpaca records need 'instruction', optional 'input', and 'output'")
        user = rec["instruction"]
        extra = rec.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' must be a string")
        if extra.strip():
            user = f"{user}\n\n{extra}"
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]}
    if "question" in rec and isinstance(rec.get("answer"), str):
        # GSM8K and similar question / answer files (the answer may carry a chain of thought and '#### <number>').
        _string_fields(rec, ("question", "answer"), where)
        return {"messages": [{"role": "user", "content": rec["question"]}, {"role": "assistant", "content": rec["answer"]}]}
    if "prompt" in rec or "completion" in rec:
        _string_fields(rec, ("prompt", "completion"), where, missing="prompt/completion records need both")
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

        from ..hub import require_hub

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

