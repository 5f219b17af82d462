"""Several processes on one empty cache: the default model's conversion, the tokenized / score caches and the eval
task folders are each written to a unique temporary name and renamed into place, so processes started together all
succeed; and a multi-process run does its reference pass once (each process scores a share), counted from its log."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _prepare_tasks(local_files, cache_dir, barrier, results):
    from sftgo.evaluation import tasks as T  # imported before the barrier: both processes then write at once

    barrier.wait()
    try:
        prepared = T.prepare_local({}, {}, [Path(f) for f in local_files], Path(cache_dir))
        results.put(("ok", str(prepared.include_path), sorted(prepared.local_names)))
    except BaseException as e:  # reported to the test, which shows it
        results.put(("error", f"{type(e).__name__}: {e}", []))


@pytest.mark.serial
def test_two_processes_prepare_the_same_eval_task_folder_at_once(tmp_path):
    pytest.importorskip("lm_eval")

    row = {"question": "Add three and four.", "choices": ["seven", "dog"], "answer": 0}
    files = []
    for i in range(40):  # many files: the two writers overlap for a while
        f = tmp_path / f"quiz{i}.jsonl"
        f.write_text(json.dumps({**row, "question": f"{row['question']} ({i})"}) + "\n")
        files.append(str(f))
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_tasks, args=(files, str(tmp_path / "tasks"), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [g[0] for g in got] == ["ok", "ok"], got
    assert got[0][1] == got[1][1] and len(got[0][2]) == 40
    folder = Path(got[0][1])
    assert len(list(folder.glob("local_quiz*.yaml"))) == 40 and (folder / "sftgo_tasks.json").exists()
    assert [p.name for p in (tmp_path / "tasks").iterdir()] == [folder.name]  # no temporary folder left behind


# Runs `sftgo train`, and makes the default model's conversion a real race: a process that converted it waits to
# publish its folder until the other converting process is also there (PUBLISH_BARRIER, one file per process), so
# both convert the (tiny, quickly converted) model at once and publish at once.
PUBLISH_AT_ONCE = """
import os, sys, time
from pathlib import Path

import sftgo.cache as cache

barrier, publish = Path(os.environ["PUBLISH_BARRIER"]), cache.publish_dir


def publish_dir(tmp, target, *args, **kw):
    if Path(target).name == "SmolLM2-135M-Instruct":
        barrier.mkdir(exist_ok=True)
        (barrier / str(os.getpid())).touch()
        t_end = time.time() + 300
        while len(list(barrier.iterdir())) < 2 and time.time() < t_end:
            time.sleep(0.05)
    return publish(tmp, target, *args, **kw)


cache.publish_dir = publish_dir
from sftgo.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.serial
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf not installed")
def test_default_model_on_an_empty_cache_torchrun_and_a_second_train_at_once(tmp_path, chat_tokenizer):
    """Started together on one empty SFTGO_CACHE: a 2-process torchrun job (--scorer reference) and a separate
    `sftgo train` process. Both convert the default model, tokenize the same data into the same cache entry and write
    score caches; all succeed. The torchrun job's reference pass scores each example once in total.
    The default model's package here is a stand-in holding the tiny Llama as its GGUF (tiny_gguf.py): the same
    conversion and publication, without ~20 s of CPU per process for the real model's (test_smollm2.py); as that
    conversion is quick, the two processes that convert (the job's process 0 and the other) are held until both have
    converted, then publish at once (PUBLISH_AT_ONCE)."""
    from tests.integration.tiny_gguf import write_tiny_smollm2_package

    pkg = write_tiny_smollm2_package(tmp_path / "pkg", chat_tokenizer)
    launcher = tmp_path / "train.py"
    launcher.write_text(PUBLISH_AT_ONCE)
    barrier = tmp_path / "barrier"
    env = {**os.environ, "SFTGO_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(pkg), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PUBLISH_BARRIER": str(barrier)}
    # max_length 256: the tiny tokenizer's tokens are shorter than SmolLM2's; all 8 examples fit whole
    common = ["--max_examples", "8", "--max_length", "256", "--max_steps", "1", "--per_device_train_batch_size", "2",
              "--save_steps", "100", "--disable_tqdm", "true", "--use_cpu", "true", "--logging_steps", "1"]
    torchrun = Path(sys.executable).parent / "torchrun"
    job = subprocess.Popen(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), str(launcher), "train",
         *common, "--ddp_backend", "gloo", "--objective", "sft-go", "--scorer", "reference",
         "--ref_model_name_or_path", "initial", "--output_dir", str(tmp_path / "ddp")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    other = subprocess.Popen(
        [sys.executable, str(launcher), "train", *common, "--objective", "sft-go", "--scorer", "tfidf",
         "--output_dir", str(tmp_path / "single")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log_other, _ = other.communicate(timeout=900)
    finally:
        log_job, _ = job.communicate(timeout=900)
    assert other.returncode == 0, log_other[-4000:]
    assert job.returncode == 0, log_job[-4000:]
    assert (tmp_path / "ddp" / "summary.json").exists() and (tmp_path / "single" / "summary.json").exists()
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir()] == ["SmolLM2-135M-Instruct"]  # no temporary folder left behind
    assert len(list(barrier.iterdir())) == 2  # both converted it, at once
    assert "Converting SmolLM2-135M-Instruct.Q4_1.gguf" in log_other and "Converting" in log_job  # the stand-in:
    assert json.loads((models / "SmolLM2-135M-Instruct" / "config.json").read_text())["hidden_size"] == 32
    # The reference pass: one log line per process that scored a share; together they cover the data once.
    n = int(re.search(r"INFO sftgo\.pipeline: (\d+) examples \(", log_job).group(1))
    shares = [int(x) for x in re.findall(r"reference log-probs: (\d+) examples", log_job)]
    assert len(shares) == 2 and sum(shares) == n == 8, (shares, n)
