"""``sftgo generate RUN... --prompts FILE``: every run's answers to the same prompts (the SFT-GO paper's Appendix I).

For each target (a run directory, whose ``final/`` model answers; a sweep directory, meaning each run in it; or a model
folder / Hub id) the prompts are rendered exactly as training rendered a conversation up to its assistant turn (the
tokenizer's chat template with ``add_generation_prompt``, else sftgo's Alpaca-style template) and answered greedily, or
sampled with ``--do_sample --seed S``. Results go to ``RUN_DIR/generations/<prompts stem>.jsonl``: a header line
(``"kind": "sftgo.generations"``, the model, its content fingerprint and the settings) and one line per prompt. A second
call with the same prompts, settings and weights reads that file instead of recomputing (``--overwrite`` forces it).
While it runs, finished answers go to ``<stem>.jsonl.partial``; a killed call continues from there.
``sftgo report`` shows the runs' answers side by side: prompts as rows, runs as columns.

Prompts file: JSONL or a JSON list, one prompt per row, each a string or an object with ``prompt``, ``instruction``
(+ optional ``input``), ``question`` or ``messages`` (a trailing assistant turn is kept as the row's ``reference`` and
not shown to the model), optional ``system`` and ``id``; any other file is plain text, one prompt per non-empty line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from .data import DataError, _read_records, check_messages, render
from .rundir import CONFIG, FINAL, GENERATIONS_DIR, read_generations
from .rundir import GENERATIONS_KIND as KIND

logger = logging.getLogger(__name__)

FORMAT = 1


# ----------------------------------------------------------------------------------------------------------- prompts


def _prompt_row(rec, where: str) -> dict:
    """One prompts-file row -> ``{"id", "messages", "reference"}``; ``where`` names the file and line in errors."""
    if isinstance(rec, str):
        if not rec.strip():
            raise DataError(f"{where}: empty prompt")
        return {"id": None, "messages": [{"role": "user", "content": rec}], "reference": None}
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a string or a JSON object with 'prompt', 'instruction', 'question' or "
                        f"'messages'; got {type(rec).__name__}")
    rid = rec.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise DataError(f"{where}: field 'id' must be a string or an integer")
    system = rec.get("system")
    if system is not None and not isinstance(system, str):
        raise DataError(f"{where}: field 'system' must be a string")
    reference = None
    if "messages" in rec:
        clean = check_messages(rec["messages"], where)
        if clean[-1]["role"] == "assistant":  # a chat record with its answer: the answer is the reference
            reference = clean.pop()["content"]
        if not clean or clean[-1]["role"] != "user":
            raise DataError(f"{where}: 'messages' must end with a user turn (optionally followed by one assistant "
                            "turn, kept as the reference answer)")
        messages = clean
    else:
        key = next((k for k in ("prompt", "instruction", "question") if k in rec), None)
        if key is None:
            raise DataError(f"{where}: no prompt field: expected 'prompt', 'instruction' (+ 'input'), 'question' or "
                            f"'messages'; found {sorted(rec)}")
        text = rec[key]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: field '{key}' must be a non-empty string")
        extra = rec.get("input") if key == "instruction" else None
        if extra is not None and not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' must be a string")
        if extra and extra.strip():
            text = f"{text}\n\n{extra}"  # as sftgo.data joins an Alpaca record's instruction and input
        messages = [{"role": "user", "content": text}]
        ref = rec.get("output", rec.get("completion", rec.get("answer")))
        reference = ref if isinstance(ref, str) else None
    if system:
        messages = [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]
    return {"id": rid, "messages": messages, "reference": reference}


def read_prompts(path: str | Path) -> list[dict]:
    """Read a prompts file (see the module docstring). Errors name the file and line (or list index)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"prompts file {path} does not exist")
    if p.is_dir():
        raise DataError(f"prompts file {path} is a folder; pass a .jsonl, .json or text file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if p.suffix.lower() in (".json", ".jsonl"):
        # sftgo's dataset reader: a JSON list (or JSONL, one value a line); errors name the file and line / index
        rows = [_prompt_row(rec, where) for where, rec in _read_records(p)]
    else:
        rows = [_prompt_row(line, f"{p}:{n}") for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not rows:
        raise DataError(f"{p}: no prompts (the file is empty)")
    return rows


def prompts_digest(prompts: list[dict]) -> str:
    """sha256 of what the model is asked (ids and messages): the same prompts in another file format match."""
    body = json.dumps([[r["id"], r["messages"]] for r in prompts], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def render_prompt(messages: list[dict], tokenizer) -> tuple[str, bool]:
    """The text the model continues, and whether to add the tokenizer's special tokens when encoding it.

    Rendered exactly as :func:`sftgo.data.render` renders a conversation up to an assistant turn, so the model answers
    in the format it was trained on: the chat template with the generation prompt (it writes BOS itself when the model
    wants one), or the Alpaca-style template (BOS from the tokenizer)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), False
    # The Alpaca-style template: the text before a (placeholder) answer, as sftgo.data.render lays it out.
    text, spans, _ = render(messages + [{"role": "assistant", "content": "A"}], tokenizer)
    return text[: spans[-1][0]], True


# -------------------------------------------------------------------------------------------------------- generation


def stop_ids(model, tokenizer) -> list[int]:
    """Token ids that end an answer: the model's generation config's EOS (one or several) and the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generate_answers(model, tokenizer, prompts: list[dict], *, max_new_tokens: int = 256, do_sample: bool = False,
                     seed: int = 0, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, batch_size: int = 1,
                     start: int = 0, on_row=None) -> list[dict]:
    """Answer ``prompts[start:]``; returns one dict per prompt (and calls ``on_row(row)`` as each is done).

    Greedy by default (``do_sample=False``: the argmax token each step, the same as ``model.generate(ids,
    do_sample=False)`` on the rendered prompt). Sampling is seeded per batch (``seed + index of its first prompt``), so
    a continued call draws what an uninterrupted one would. ``batch_size > 1`` left-pads prompts of different lengths,
    which can change the last bits of the logits (and so, rarely, a greedy choice) relative to one prompt at a time.
    """
    import torch
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    eos = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    # An explicit config, not the model's generation_config.json: a checkpoint's own sampling defaults (do_sample,
    # temperature, repetition penalty...) must not change what "greedy" means between runs.
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=eos, pad_token_id=pad,
                           **({"temperature": temperature, "top_p": top_p, "top_k": top_k} if do_sample else {}))
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # a decoder continues the prompt's last token: pad on the left
    rows = []
    try:
        model.eval()
        for b in range(start, len(prompts), batch_size):
            batch = prompts[b:b + batch_size]
            rendered = [render_prompt(r["messages"], tokenizer) for r in batch]
            enc = tokenizer([t for t, _ in rendered], add_special_tokens=rendered[0][1], return_tensors="pt",
                            padding=True).to(device)
            if do_sample:
                torch.manual_seed(seed + b)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**enc, generation_config=gen)
            dt = time.perf_counter() - t0
            width = enc["input_ids"].shape[1]
            for i, r in enumerate(batch):
                new = out[i, width:].tolist()
                # Everything after the first stop token is padding of a batch-mate still generating.
                cut = next((j + 1 for j, t in enumerate(new) if t in eos), len(new))
                new = new[:cut]
                finish = "eos" if new and new[-1] in eos else "length"
                row = {"index": b + i, "id": r["id"], "messages": r["messages"], "reference": r["reference"],
                       "prompt_text": rendered[i][0],
                       "answer": tokenizer.decode(new, skip_special_tokens=True).strip(),
                       "answer_token_ids": new, "n_tokens": len(new), "finish_reason": finish,
                       "seconds": round(dt / len(batch), 3)}
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    finally:
        tokenizer.padding_side = old_side
    return rows


# ----------------------------------------------------------------------------------------------------------- targets


def expand_targets(targets: list[str]) -> list[tuple[str, Path | None]]:
    """``(model path or Hub id, run directory or None)`` per target; a sweep directory (no config.yaml, run folders
    inside) stands for each of its runs."""
    from .models import ModelLoadError, resolve_model_path

    out = []
    for t in targets:
        p = Path(t).expanduser()
        if p.is_dir() and (p / CONFIG).exists() and not (p / "config.json").exists():
            runs = [p]
        elif p.is_dir() and not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            runs = sorted(c for c in p.iterdir() if c.is_dir() and (c / CONFIG).exists())
            if not runs:
                raise ModelLoadError(f"{t}: neither a run directory (config.yaml), a sweep directory (run folders "
                                     "inside) nor a model folder (config.json)")
        else:
            out.append((resolve_model_path(t), None))
            continue
        for r in runs:
            final = r / FINAL
            if not ((final / "config.json").exists() or (final / "adapter_config.json").exists()):
                if r != p:  # a sweep still running: answer with the runs that are done
                    print(f"skipping {r}: no final/ model yet (training not finished)")
                    continue
                raise ModelLoadError(f"run directory {r} has no final/ model (did training finish?); pass a "
                                     f"checkpoint folder such as {r}/checkpoint-N as a model path instead")
            out.append((str(final), r))
    return out


def output_path(model: str, run_dir: Path | None, stem: str, output_dir: str | None) -> Path:
    if output_dir:
        return Path(output_dir) / f"{stem}.jsonl"
    if run_dir is not None:
        return run_dir / GENERATIONS_DIR / f"{stem}.jsonl"
    p = Path(model)
    if p.is_dir():
        return p / GENERATIONS_DIR / f"{stem}.jsonl"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model.strip("/"))
    return Path("generations") / safe / f"{stem}.jsonl"


# ----------------------------------------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    from .cliargs import ArgumentParser

    p = ArgumentParser(prog="sftgo generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="RUN_OR_MODEL",
                   help="run directories (their final/ model), sweep directories (each run), model folders or Hub ids")
    p.add_argument("--prompts", required=True, help="JSONL / JSON list / plain text (one prompt per line)")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding (seeded by --seed)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (implies --do_sample)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling only")
    p.add_argument("--top_p", type=float, default=1.0, help="sampling only")
    p.add_argument("--top_k", type=int, default=0, help="sampling only (0: off)")
    p.add_argument("--batch_size", type=int, default=1,
                   help="prompts per generate call (>1 left-pads, which can change greedy answers in the last bits)")
    p.add_argument("--model_dtype", default="auto", help="auto (fp32 on CPU), float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--output_dir", default=None, help="where <prompts stem>.jsonl goes (one target only; default "
                   "RUN_DIR/generations, MODEL_DIR/generations, or ./generations/<hub id>)")
    p.add_argument("--overwrite", action="store_true", help="recompute even when a file with these settings exists")
    return p


def _check_args(a) -> None:
    if a.seed is not None:
        a.do_sample = True
    if a.do_sample and a.seed is None:
        a.seed = 0
    if a.max_new_tokens < 1:
        raise DataError(f"--max_new_tokens {a.max_new_tokens}: must be at least 1")
    if a.batch_size < 1:
        raise DataError(f"--batch_size {a.batch_size}: must be at least 1")
    if a.do_sample and not (a.temperature > 0 and 0 < a.top_p <= 1 and a.top_k >= 0):
        raise DataError("sampling needs --temperature > 0, 0 < --top_p <= 1 and --top_k >= 0")


def settings_of(a, digest: str, fingerprint: str) -> dict:
    """What determines the answers; a file whose settings equal these is reused."""
    s = {"prompts_sha256": digest, "model_fingerprint": fingerprint, "max_new_tokens": a.max_new_tokens,
         "do_sample": a.do_sample, "batch_size": a.batch_size, "model_dtype": a.model_dtype}
    if a.do_sample:
        s.update(seed=a.seed, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k)
    return s


def generate_one(model_path: str, run_dir: Path | None, prompts: list[dict], a, out: Path) -> Path:
    import torch
    import transformers

    from . import __version__
    from .models import load_model, load_tokenizer, model_fingerprint

    settings = settings_of(a, prompts_digest(prompts), model_fingerprint(model_path))
    if out.exists() and not a.overwrite:
        header, rows = read_generations(out)
        if header and header.get("settings") == settings and len(rows) == len(prompts):
            print(f"{out}: up to date (same prompts, model and settings; --overwrite recomputes)")
            return out
    partial = out.with_name(out.name + ".partial")
    done: list[dict] = []
    if partial.exists() and not a.overwrite:
        header, rows = read_generations(partial)
        if header and header.get("settings") == settings:
            # Keep the answers in prompt order up to the first gap; a batch is redone whole.
            for r in rows:
                if r.get("index") != len(done) or r.get("messages") != prompts[len(done)]["messages"]:
                    break
                done.append(r)
            done = done[: len(done) - len(done) % a.batch_size] if len(done) < len(prompts) else done
            if done:
                logger.info("%s: continuing after %d of %d answers", partial, len(done), len(prompts))
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype=a.model_dtype, device=device).to(device)
    header = {"kind": KIND, "format": FORMAT, "model": model_path, "run_dir": str(run_dir) if run_dir else None,
              "prompts_file": str(a.prompts), "chat_template": bool(getattr(tokenizer, "chat_template", None)),
              "settings": settings, "device": device, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
              "sftgo_version": __version__, "transformers_version": transformers.__version__,
              "torch_version": torch.__version__,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    out.parent.mkdir(parents=True, exist_ok=True)
    # Rewrite the partial file with what is kept (a torn line or a half batch goes), then append as answers come.
    with partial.open("w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for r in done:
            f.write(json.dumps(r) + "\n")
    t0 = time.time()
    with partial.open("a", encoding="utf-8") as f:
        def on_row(row):
            f.write(json.dumps(row) + "\n")
            f.flush()

        generate_answers(model, tokenizer, prompts, max_new_tokens=a.max_new_tokens, do_sample=a.do_sample,
                         seed=a.seed or 0, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k,
                         batch_size=a.batch_size, start=len(done), on_row=on_row)
    os.replace(partial, out)  # complete: the file the report reads appears only now
    print(f"wrote {out} ({len(prompts)} answers, {time.time() - t0:.1f} s)")
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    _check_args(a)
    prompts = read_prompts(a.prompts)
    targets = expand_targets(a.targets)
    if a.output_dir and len(targets) > 1:
        raise DataError(f"--output_dir takes one target; {len(targets)} given (each run's answers go to "
                        "RUN_DIR/generations/ by default)")
    stem = Path(a.prompts).stem
    for model_path, run_dir in targets:
        generate_one(model_path, run_dir, prompts, a, output_path(model_path, run_dir, stem, a.output_dir))
    return 0
