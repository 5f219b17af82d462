"""`sftgo eval` beside lm-evaluation-harness's own command line, on the same generated tasks, in one run.

1. `sftgo eval TARGET --tasks SPEC ...` (a subprocess, timed from start to exit; base-model evaluation off).
2. From its result file: the task folder it generated (`settings.task_dir`) and each harness call it made
   (few-shot count, task names, limit). For each call: `lm_eval run --model hf --model_args pretrained=MODEL
   --device cpu --include_path TASK_DIR --tasks ... --limit ...` (subprocesses, timed together).
3. Prints the time ratio sftgo / harness (goal <= 1.05) and, per task metric and per reported column, whether the
   two give identical numbers.

    python benchmarks/bench_eval.py runs/demo --tasks local:../shared/data/mmlu_test.jsonl --limit 200
    python benchmarks/bench_eval.py runs/demo --tasks paper --data_dir ../shared/data --limit 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def nltk_env() -> dict:
    """IFEval's checkers need NLTK punkt_tab: point the harness's CLI at the copy sftgo uses (the llama-index-core
    wheel's nltk_cache, see sftgo.evaluation.run.ensure_punkt) so both sides run offline."""
    import importlib.util

    spec = importlib.util.find_spec("llama_index")
    for loc in (spec.submodule_search_locations if spec else []) or []:
        d = Path(loc) / "core" / "_static" / "nltk_cache"
        if d.is_dir():
            return {"NLTK_DATA": str(d)}
    return {}


def timed(cmd: list[str], log: Path) -> float:
    t0 = time.time()
    with open(log, "w") as f:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **nltk_env()}
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        sys.exit(f"command failed ({rc}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return time.time() - t0


def harness_calls(res: dict) -> tuple[dict, dict]:
    """The harness calls an sftgo result file made -> ({(fewshot setting, limit): [task, ...]}, {result row index:
    its call's fewshot setting}). ``settings.tasks`` maps a shot count ("None": each task's own) to task names; one
    task can sit under two counts (MMLU 0-shot and 5-shot), so a row belongs to the count equal to its own."""
    calls: dict[tuple, list[str]] = {}
    setting_of: dict[int, int | None] = {}
    for k, names in res["settings"]["tasks"].items():
        fs = None if k == "None" else int(k)
        for i, r in enumerate(res["results"]):
            if r["task"] in names and (fs is None or r["fewshot"] == fs):
                setting_of[i] = fs
                calls.setdefault((fs, r["limit"]), [])
                if r["task"] not in calls[(fs, r["limit"])]:
                    calls[(fs, r["limit"])].append(r["task"])
    return calls, setting_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target")
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--max_gen_toks", type=int, default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--reuse_sftgo", action="store_true", help="keep the sftgo result and time already in --workdir")
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_eval_"))
    work.mkdir(parents=True, exist_ok=True)
    extra = (["--limit", str(a.limit)] if a.limit else []) + (["--data_dir", a.data_dir] if a.data_dir else [])
    extra += ["--max_gen_toks", str(a.max_gen_toks)] if a.max_gen_toks else []
    sftgo_cmd = [str(BIN / "sftgo"), "eval", a.target, "--tasks", a.tasks, "--batch_size", str(a.batch_size),
                 "--no_base", "--overwrite", "--output_dir", str(work / "sftgo"), *extra]
    tfile = work / "sftgo_time_s.txt"
    if a.reuse_sftgo and tfile.exists():
        t_sftgo = float(tfile.read_text())
    else:
        t_sftgo = timed(sftgo_cmd, work / "sftgo.log")
        tfile.write_text(str(t_sftgo))
    res = json.loads(next((work / "sftgo").glob("*.json")).read_text())
    task_dir, model = res["settings"]["task_dir"], res["model"]
    calls, setting_of = harness_calls(res)
    t_cli, cli_results = 0.0, {}
    for i, ((fs, lim), names) in enumerate(sorted(calls.items(), key=str)):
        out = work / f"cli_{i}"
        cmd = [str(BIN / "lm_eval"), "run", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
               "--device", "cpu", "--batch_size", str(a.batch_size), "--tasks", ",".join(names), "--output_path", str(out)]
        cmd += ["--include_path", task_dir] if task_dir else []
        cmd += ["--limit", str(lim)] if lim is not None else []
        cmd += ["--num_fewshot", str(fs)] if fs is not None else []
        cmd += ["--gen_kwargs", f"max_gen_toks={a.max_gen_toks}"] if a.max_gen_toks else []
        t_cli += timed(cmd, work / f"cli_{i}.log")
        for f in out.rglob("results_*.json"):
            doc = json.loads(f.read_text())
            shots = {t: n for t, n in doc.get("n-shot", {}).items() if fs is not None and n != fs}
            if shots:  # the comparison is only worth something if the CLI ran the shot count sftgo ran
                sys.exit(f"lm_eval ran other shot counts than --num_fewshot {fs}: {shots}")
            cr = doc["results"]
            for t in names:
                cli_results[(t, fs)] = cr.get(t, {})
    print(f"workdir {work}")
    print(f"wall time: sftgo eval {t_sftgo:.1f} s, lm_eval CLI {t_cli:.1f} s ({len(calls)} call(s)); ratio {t_sftgo / t_cli:.3f}")
    same_all = True
    for i, r in enumerate(res["results"]):
        if i not in setting_of or r["metric"].startswith("mean("):  # averaged columns: compared via their parts
            continue
        key = r["metric"] if "," in r["metric"] else r["metric"] + ",none"
        other = cli_results.get((r["task"], setting_of[i]), {}).get(key)
        same = other is not None and float(other) == r["value"]
        same_all &= same
        print(f"  {r['task']:22s} {key:34s} fewshot={r['fewshot']!s:4s} sftgo {r['value']:.6f}  lm_eval "
              f"{other if other is None else f'{float(other):.6f}'}  {'identical' if same else 'DIFFERENT'}"
              + (f"  [{r['column']}]" if r.get("column") else ""))
    for c, v in res.get("columns", {}).items():
        se = res.get("columns_stderr", {}).get(c)
        print(f"  column {c:11s} {v:.4f}" + (f" ± {se:.4f}" if se is not None else ""))
    print("all metrics identical" if same_all else "SOME METRICS DIFFER")


if __name__ == "__main__":
    main()
