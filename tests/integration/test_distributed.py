"""Work done once per job across real processes (2 x gloo on CPU): sftgo.distributed and the reference pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as tmp_mp


def _init(rank, world, init_file):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)


def _helpers_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    from sftgo.distributed import gather_shards, on_main

    _init(rank, world, init_file)
    calls = Path(out_dir) / f"calls{rank}.txt"

    def compute():
        with calls.open("a") as f:
            f.write("on_main\n")
        return {"value": 42}

    def shard(items):
        with calls.open("a") as f:
            f.write(f"shard {items}\n")
        return [x * 10 for x in items]

    res = {"on_main": on_main(compute), "gathered": gather_shards(shard, list(range(7)))}

    def fail():
        raise ValueError("bad input on process 0")

    try:
        on_main(fail)
    except ValueError as e:
        res["error"] = str(e)
    (Path(out_dir) / f"res{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def test_on_main_runs_once_and_gather_shards_splits_and_reassembles(tmp_path):
    tmp_mp.spawn(_helpers_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"res{r}.json").read_text()) for r in range(2)]
    calls = [(tmp_path / f"calls{r}.txt").read_text().splitlines() for r in range(2)]
    for r in res:
        assert r["on_main"] == {"value": 42} and r["gathered"] == [0, 10, 20, 30, 40, 50, 60]
        assert r["error"] == "bad input on process 0"  # raised in every process, nobody left waiting
    assert calls[0] == ["on_main", "shard [0, 2, 4, 6]"] and calls[1] == ["shard [1, 3, 5]"]


def _reference_worker(rank, world, init_file, model_dir, cache_dir, out_dir):
    import logging

    from sftgo.data import load_examples, tokenize_examples
    from sftgo.models import load_tokenizer
    from sftgo.pipeline import cached_reference
    from tests.conftest import EXAMPLES

    _init(rank, world, init_file)
    log = Path(out_dir) / f"log{rank}.txt"
    handler = logging.FileHandler(log)
    logging.getLogger("sftgo.scorers.reference").addHandler(handler)
    logging.getLogger("sftgo.scorers.reference").setLevel(logging.INFO)
    tok = load_tokenizer(model_dir)
    f = Path(out_dir) / "data.jsonl"
    if rank == 0:
        f.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES * 3))  # 12 examples
    import torch.distributed as dist

    dist.barrier()
    data = tokenize_examples(load_examples(str(f)), tok, 64)
    # with PriFT's lower mass: the same one pass gives both columns
    cols, state = cached_reference(model_dir, data, tok, ("ref_logp", "ref_lower_mass"), cache_dir=cache_dir,
                                   batch_size=2, device="cpu")
    out = cols["ref_logp"]
    np.savez(Path(out_dir) / f"out{rank}.npz", *out)
    np.savez(Path(out_dir) / f"lower{rank}.npz", *cols["ref_lower_mass"])
    (Path(out_dir) / f"state{rank}.txt").write_text(state)
    handler.close()


@pytest.mark.serial
def test_two_processes_share_one_reference_pass_and_the_cache_entry_of_one(tmp_path, tiny_model_dir):
    import re

    from sftgo.data import load_examples, tokenize_examples
    from sftgo.models import load_tokenizer
    from sftgo.pipeline import cached_token_logp

    cache = str(tmp_path / "cache")
    tmp_mp.spawn(_reference_worker, args=(2, str(tmp_path / "init"), tiny_model_dir, cache, str(tmp_path)),
                 nprocs=2, join=True)
    shares = [int(m) for r in range(2)
              for m in re.findall(r"reference log-probs: (\d+) examples", (tmp_path / f"log{r}.txt").read_text())]
    assert shares == [6, 6]  # 6 batches of 2, dealt out 3 and 3: the 12 examples scored once in total
    outs = [np.load(tmp_path / f"out{r}.npz") for r in range(2)]
    assert [(tmp_path / f"state{r}.txt").read_text() for r in range(2)] == ["miss", "miss"]
    tok = load_tokenizer(tiny_model_dir)
    data = tokenize_examples(load_examples(str(tmp_path / "data.jsonl")), tok, 64)
    # One process, the same cache: a hit (the key does not depend on the number of processes) ...
    hit, state = cached_token_logp(tiny_model_dir, data, tok, cache_dir=cache, batch_size=2, device="cpu")
    assert state == "hit"
    # ... equal to what one process computes itself, and to what each of the two processes got
    alone, state = cached_token_logp(tiny_model_dir, data, tok, cache_dir=str(tmp_path / "other"), batch_size=2)
    assert state == "miss" and len(alone) == 12
    for i, want in enumerate(alone):
        np.testing.assert_array_equal(hit[i], want)
        for o in outs:
            np.testing.assert_array_equal(o[f"arr_{i}"], want)
    from sftgo.pipeline import cached_reference

    lower, state = cached_reference(tiny_model_dir, data, tok, ("ref_lower_mass",), cache_dir=str(tmp_path / "low"),
                                    batch_size=2)
    assert state == "miss"
    for r in range(2):
        got = np.load(tmp_path / f"lower{r}.npz")
        for i, want in enumerate(lower["ref_lower_mass"]):
            np.testing.assert_array_equal(got[f"arr_{i}"], want)
