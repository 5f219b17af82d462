"""Token Cleaning: sftgo's ``--scorer influence`` + ``--group_scope dataset`` against the authors' own code on the same
models and data; prints the per-token scores' max difference, both thresholds and kept counts, and how many tokens the
two selections disagree on.

The authors' code (UCSC-REAL/TokenCleaning, fixed-model cleaning: ``fixed_model_cleaning.sh``) runs as published:

* ``scripts/calculate_token_loss.py`` is executed whole as a script (``runpy``), once per model, with the arguments of
  their ``bash_src/calculate_loss.sh`` (``--reduce_loss sum --with_prompt_token False``, one process on the CPU); only
  the ``deepspeed`` import is stubbed (their script uses ``deepspeed.zero.GatheredParameters`` to read the embedding
  size, a no-op without ZeRO-3), and ``from_pretrained`` accepts their ``use_flash_attention_2=False`` (a keyword
  transformers 5 dropped; False is the default attention). It writes each model's per-token losses.
* ``scripts/generate_token_label.py``'s ``main`` (and the functions it calls) are read out of the file (``ast``) and
  called as ``fire`` would call them (``--select_token_level global --data_prop 0.6``); it writes the selected labels.

sftgo: :func:`sftgo.pipeline.compute_influence` (the reference's and the initial model's log p through the chunked head,
cached) on the authors' own tokenization of the same file (their ``encode_with_prompt_completion_format``), then
:func:`sftgo.pipeline.set_dataset_threshold` (``--objective rho1 --group_scope dataset --percentile 40``) and
:func:`sftgo.grouping.threshold_groups`.

    PYTHONPATH=src python dev/token_cleaning_peer_check.py --repo TokenCleaning --model BASE --ref REF \\
        --dataset /work/shared/data/alpaca_5000.json --examples 24 --workdir /tmp/tc

BASE and REF must be fp32 checkpoints (their script loads the dtype the config names; sftgo computes in fp32 on CPU).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import runpy
import sys
import types
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


def load_defs(path: str, names: set[str], namespace: dict) -> dict:
    """Execute only the top-level function definitions ``names`` of the Python file ``path`` in ``namespace``."""
    tree = ast.parse(open(path).read(), filename=path)
    found = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    missing = names - {n.name for n in found}
    if missing:
        raise SystemExit(f"{path}: no top-level {', '.join(sorted(missing))}; is this the right file?")
    exec(compile(ast.Module(body=found, type_ignores=[]), path, "exec"), namespace)  # noqa: S102 -- their code
    return namespace


def deepspeed_stub() -> types.ModuleType:
    """The one name their loss script takes from deepspeed: ``zero.GatheredParameters`` (a no-op without ZeRO-3)."""
    ds = types.ModuleType("deepspeed")
    ds.zero = SimpleNamespace(GatheredParameters=lambda *a, **k: contextlib.nullcontext())
    return ds


def their_losses(repo: Path, model: str, train_file: str, loss_dir: str, batch_size: int) -> None:
    import accelerate  # noqa: F401 -- imported (their availability checks done) before the stub is in place
    import peft  # noqa: F401
    import transformers  # noqa: F401

    argv, load = sys.argv, transformers.AutoModelForCausalLM.from_pretrained
    sys.modules.setdefault("deepspeed", deepspeed_stub())

    def from_pretrained(*args, use_flash_attention_2=False, **kwargs):  # transformers 5 dropped the keyword
        assert not use_flash_attention_2  # False: the default attention, which is what runs
        return load(*args, **kwargs)

    transformers.AutoModelForCausalLM.from_pretrained = from_pretrained
    sys.argv = ["calculate_token_loss.py", "--model_name_or_path", model, "--tokenizer_name", model,
                "--train_file", train_file, "--max_seq_length", "2048", "--per_device_train_batch_size",
                str(batch_size), "--num_train_epochs", "1", "--reduce_loss", "sum", "--with_prompt_token", "False",
                "--loss_path", loss_dir]
    try:
        runpy.run_path(str(repo / "scripts" / "calculate_token_loss.py"), run_name="__main__")
    finally:
        sys.argv, transformers.AutoModelForCausalLM.from_pretrained = argv, load


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True, help="a checkout of UCSC-REAL/TokenCleaning")
    p.add_argument("--model", required=True, help="the model to train (fp32 checkpoint folder)")
    p.add_argument("--ref", required=True, help="the reference model (fp32 checkpoint folder, another name)")
    p.add_argument("--dataset", required=True, help="Alpaca-style JSON list (instruction, input, output)")
    p.add_argument("--examples", type=int, default=24)
    p.add_argument("--data_prop", type=float, default=0.6, help="their kept fraction (sftgo: percentile 100 (1 - it))")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--workdir", required=True)
    a = p.parse_args()
    repo, work = Path(a.repo), Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)

    # The same records in their prompt / completion format.
    rows = json.loads(Path(a.dataset).read_text())[: a.examples]
    records = [{"prompt": (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")).strip() + "\n",
                "completion": r["output"]} for r in rows]
    train_file = str(work / "peer.json")
    Path(train_file).write_text(json.dumps(records))
    loss_dir = str(work / "loss") + "/"
    label_dir = str(work / "label") + "/"

    # --- theirs: per-token losses of both models, then the global top-k labels
    data_type = Path(train_file).name.split(".json")[0]
    for m in (a.model, a.ref):
        done = Path(f"{loss_dir}token_losses_{data_type}_{Path(m).name}.pt")
        if done.exists():  # their script's output from an earlier run of this check on the same file and model
            print(f"reusing {done}")
        else:
            their_losses(repo, m, train_file, loss_dir, a.batch_size)
    from datasets import load_dataset
    from transformers import AutoTokenizer

    ns = load_defs(str(repo / "scripts" / "generate_token_label.py"),
                   {"encode_with_prompt_completion_format", "encode_with_messages_format", "get_global_top_k_indices",
                    "get_sample_top_k_indices", "main"},
                   {"AutoTokenizer": AutoTokenizer, "load_dataset": load_dataset, "torch": torch, "partial": partial,
                    "np": np, "os": os})
    ns["main"](tokenizer_name_or_path=a.model, base_model_name_or_path=a.model, ref_model_name_or_path=a.ref,
               train_data=train_file, data_prop=a.data_prop, select_token_level="global", label_path=label_dir,
               loss_path=loss_dir)
    pre = torch.load(f"{loss_dir}token_losses_{data_type}_{Path(a.model).name}.pt")
    cur = torch.load(f"{loss_dir}token_losses_{data_type}_{Path(a.ref).name}.pt")
    selected = torch.load(f"{label_dir}token_labels_{data_type}.pt")

    # --- sftgo on their tokenization of the same file
    from sftgo.data import TokenizedData
    from sftgo.grouping import threshold_groups
    from sftgo.pipeline import compute_influence, set_dataset_threshold

    tok = AutoTokenizer.from_pretrained(a.model)
    enc = [ns["encode_with_prompt_completion_format"](r, tok, 2048, False) for r in records]
    ids = [e["input_ids"].tolist() for e in enc]
    labels = [e["labels"].tolist() for e in enc]
    data = TokenizedData(ids, labels, ["" for _ in ids], [np.zeros((len(x), 2), dtype=np.int64) for x in ids])
    cfg = SimpleNamespace(model_name_or_path=a.model, ref_model_name_or_path=a.ref, model_dtype="auto",
                          score_cache_dir=str(work / "sftgo_cache"), per_device_train_batch_size=a.batch_size,
                          device=None, disable_tqdm=True, objective="rho1", group_scope="dataset",
                          percentile=round(100 * (1 - a.data_prop), 10), group_threshold=None, scorer="influence")
    ours = data.columns["importance"] = compute_influence(cfg, data, tok)
    info = set_dataset_threshold(cfg, data)

    # --- compare, token by token, on the supervised (response) tokens
    theirs_score, theirs_kept, our_score, our_kept = [], [], [], []
    for i, lab in enumerate(labels):
        sup = [j for j, y in enumerate(lab) if y != -100]
        theirs_score += [pre[i][j] - cur[i][j] for j in sup]
        theirs_kept += [selected[i][j] != -100 for j in sup]
        our_score += ours[i].tolist()
        our_kept += threshold_groups(torch.from_numpy(ours[i]), cfg.group_threshold).tolist()
    ts, os_ = np.asarray(theirs_score, dtype=np.float64), np.asarray(our_score, dtype=np.float64)
    tk, ok = np.asarray(theirs_kept), np.asarray(our_kept)
    n = ts.size
    their_t = float(ts[tk].min())
    print(f"authors' code: {repo}  model {a.model}  reference {a.ref}  {len(records)} examples, {n} response tokens")
    print(f"{'':34s}{'authors':>14s}{'sftgo':>14s}")
    print(f"{'kept tokens':34s}{int(tk.sum()):>14d}{int(ok.sum()):>14d}")
    print(f"{'threshold (lowest kept score)':34s}{their_t:>14.6f}{info['threshold']:>14.6f}")
    print(f"max |score diff| (sftgo - authors): {np.abs(os_ - ts).max():.3e}   (mean |score| {np.abs(ts).mean():.3f})")
    print(f"tokens selected by one side only: {int((tk != ok).sum())} "
          f"(authors keep int({a.data_prop} n) = {int(n * a.data_prop)}; sftgo round-half-up = {info['kept']})")
    both = np.argsort(-ts, kind="stable")
    print(f"rank of the first disagreement in the authors' order: "
          f"{next((r for r, j in enumerate(both) if tk[j] != ok[j]), None)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
