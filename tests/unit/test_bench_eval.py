"""benchmarks/bench_eval.py plans one harness command-line call per (shot count, limit) of an sftgo result file; each
result row must be compared with the call that ran its own shot count (MMLU runs 0-shot and 5-shot)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_eval.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_eval", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mmlu_zero_and_five_shot_rows_get_their_own_cli_calls():
    res = {"settings": {"tasks": {"0": ["mmlu"], "5": ["mmlu"], "None": ["arc_challenge", "ifeval"]}},
           "results": [{"task": "mmlu", "fewshot": 0, "limit": 2, "metric": "acc"},
                       {"task": "mmlu", "fewshot": 5, "limit": 2, "metric": "acc"},
                       {"task": "arc_challenge", "fewshot": 0, "limit": 50, "metric": "acc"},
                       {"task": "ifeval", "fewshot": 0, "limit": 50, "metric": "prompt_level_strict_acc"},
                       {"task": "other", "fewshot": 0, "limit": 50, "metric": "acc"}]}
    calls, setting_of = _bench().harness_calls(res)
    assert calls == {(0, 2): ["mmlu"], (5, 2): ["mmlu"], (None, 50): ["arc_challenge", "ifeval"]}
    assert setting_of == {0: 0, 1: 5, 2: None, 3: None}
