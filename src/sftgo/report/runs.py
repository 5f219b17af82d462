"""Reading run directories (``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``eval/*.json``) and grouping runs
that differ only in their seed. Plain Python: no torch, no trainer, no model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..rundir import (CHECKPOINT_PREFIX, CONFIG, EVAL_DIR, FINAL, GENERATIONS_DIR, METRICS, SUMMARY, SWEEP_STATE,
                      read_generations, read_metrics)

# Settings that do not define a method: runs that differ only in these are seeds of one configuration.
NON_METHOD_KEYS = {"seed", "data_seed", "output_dir", "run_name", "logging_dir", "resume_from_checkpoint",
                   "stop_after_steps", "save_steps", "save_total_limit", "logging_steps", "report_to",
                   "score_cache_dir", "dataloader_num_workers", "overwrite_output_dir", "group_threshold"}

# Method settings, and which objective reads each one (a label shows a setting only where the objective uses it):
# the objectives' own declarations (sftgo.objectives; importing it imports neither torch nor transformers).
from ..objectives import METHOD_SETTINGS, OBJECTIVES, settings_of  # noqa: E402
from ..objectives import SETTINGS_ADDED as OBJECTIVE_SETTINGS_ADDED, SHORT as OBJECTIVE_SHORT  # noqa: E402

METHOD_KEYS = set(METHOD_SETTINGS)
# Config fields newer than some runs, with their defaults: what every run did before the field existed (no token
# weighting, one channel, ...), so an old run groups with an identical new one. The objective settings' come from their
# declarations (``added=True``); the others are listed here. Checked against SFTGoConfig's defaults by a test (this
# module must not import the config: it pulls transformers and torch).
SETTINGS_ADDED = {**OBJECTIVE_SETTINGS_ADDED, "eval_split": None, "channel_field": None, "max_channels": 32}


def declared(objective, flag: str) -> bool:
    """A declaration flag of the objective a run used (False for a name this version does not know)."""
    obj = OBJECTIVES.get(str(objective))
    return bool(getattr(obj, flag, False)) if obj is not None else False


def plain_sft(config: dict) -> bool:
    """Whether a run's (method) config is the plain-SFT baseline: a baseline objective without a token weighting
    (``--objective sft --token_weight chord`` is a method compared with SFT, not SFT)."""
    return declared(config.get("objective"), "baseline") and str(config.get("token_weight") or "none") == "none"


SHORT = {**OBJECTIVE_SHORT, "learning_rate": "lr", "model_name_or_path": "model", "num_train_epochs": "epochs",
         "per_device_train_batch_size": "batch"}  # a setting's label in tables (the objective settings' declared)


@dataclass
class Run:
    path: Path
    config: dict
    summary: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    evals: dict[str, dict] = field(default_factory=dict)  # suite -> eval result (benchmarks)
    heldout: dict | None = None  # eval/heldout.json (the latest held-out set evaluated)
    heldout_sets: dict[str, dict] = field(default_factory=dict)  # eval/heldout-<stem>.json: every held-out set
    # generations/<prompts stem>.jsonl (sftgo generate): stem -> {"header": {...}, "rows": [...]}
    generations: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def method_config(self) -> dict:
        return {k: v for k, v in self.config.items() if k not in NON_METHOD_KEYS}

    @property
    def key(self) -> str:
        return json.dumps(self.method_config, sort_keys=True, default=str)

    @property
    def status(self) -> str:
        if self.summary is None:
            return "training not finished (no summary.json)"
        if self.summary.get("stopped_early"):
            return f"stopped early at step {self.summary.get('steps')}"
        return "trained" + (", evaluated" if self.evals or self.heldout else ", not evaluated")


def _read_json(path: Path, problems: list[str]):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        problems.append(f"{path}: unreadable ({e.__class__.__name__}: {e}); ignored")
        return None


def load_run(path: str | Path) -> Run:
    import yaml

    path = Path(path)
    cfg_file = path / CONFIG
    if not cfg_file.exists():
        raise FileNotFoundError(f"{cfg_file} not found: is {path} an sftgo run directory?")
    try:
        config = yaml.safe_load(cfg_file.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{cfg_file}: invalid YAML: {e}") from None
    if "objective" in config:
        # Fields added after the run was made: their defaults are what it did (SETTINGS_ADDED).
        for k, v in SETTINGS_ADDED.items():
            config.setdefault(k, v)
    run = Run(path=path, config=config)
    if (path / SUMMARY).exists():
        run.summary = _read_json(path / SUMMARY, run.problems)
    run.metrics = read_metrics(path / METRICS)
    eval_dir = path / EVAL_DIR
    if eval_dir.is_dir():
        for f in sorted(eval_dir.glob("*.json")):
            data = _read_json(f, run.problems)
            if not isinstance(data, dict):
                continue
            suite = data.get("suite") or f.stem
            if f.stem.startswith("heldout-"):
                run.heldout_sets[f.stem[len("heldout-"):]] = data
            elif suite == "heldout" or f.stem == "heldout":
                run.heldout = data
            elif "results" in data or "columns" in data:
                run.evals[suite] = data
    gen_dir = path / GENERATIONS_DIR
    if gen_dir.is_dir():
        for f in sorted(gen_dir.glob("*.jsonl")):  # complete files only: a call in progress writes *.jsonl.partial
            header, rows = read_generations(f)
            if header is None:
                run.problems.append(f"{f}: not an sftgo generations file (no header line); ignored")
                continue
            run.generations[f.stem] = {"header": header, "rows": rows}
    return run


def find_runs(paths) -> tuple[list[Run], list[dict]]:
    """Run directories named directly, or the runs inside sweep directories (one level down, plus what
    ``sweep.json`` lists). Returns (runs, sweep infos)."""
    runs, sweeps, seen = [], [], set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        if (p / CONFIG).exists():
            candidates = [p]
        elif p.is_dir():
            candidates = sorted(c for c in p.iterdir() if c.is_dir() and (c / CONFIG).exists())
            sweep_file = p / SWEEP_STATE
            if sweep_file.exists():
                problems: list[str] = []
                info = _read_json(sweep_file, problems)
                if isinstance(info, dict):
                    info["_path"] = str(p)
                    sweeps.append(info)
            if not candidates and not sweeps:
                raise FileNotFoundError(f"{p}: neither a run directory (no config.yaml) nor a sweep directory "
                                        "(no sub-folder with a config.yaml)")
        else:
            raise FileNotFoundError(f"{p} is not a directory")
        for c in candidates:
            r = c.resolve()
            if r not in seen:
                seen.add(r)
                runs.append(load_run(c))
    return runs, sweeps


@dataclass
class Group:
    """Runs that differ only in their seed (and bookkeeping such as output_dir)."""

    config: dict
    runs: list[Run]
    label: str = ""

    @property
    def objective(self) -> str:
        return str(self.config.get("objective", ""))

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[str, Group] = {}
    for r in runs:
        g = groups.get(r.key)
        if g is None:
            g = groups[r.key] = Group(config=r.method_config, runs=[])
        g.runs.append(r)
    out = sorted(groups.values(), key=_group_order)
    for g in out:
        g.runs.sort(key=lambda r: (str(r.seed), r.name))
    label_groups(out)
    return out


def _group_order(g: "Group"):
    c = g.config
    obj = str(c.get("objective", ""))
    return (not plain_sft(c), obj, str(c.get("scorer", "")), str(c.get("lam_min", "")),
            float(c.get("percentile") or 0), json.dumps(c, sort_keys=True, default=str))


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str) and "/" in v:
        # A path or hub id: its last part, or its last two where the last is a run's model folder (runs/x/ref/final
        # -> ref/final, not "final"; org/model -> model).
        parts = v.rstrip("/").split("/")
        generic = parts[-1] == FINAL or parts[-1].startswith(CHECKPOINT_PREFIX)
        return "/".join(parts[-2:]) if generic and len(parts) > 1 else parts[-1]
    return str(v)


def varying_keys(configs: list[dict]) -> list[str]:
    keys = sorted(set().union(*configs)) if configs else []
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]


def method_label(config: dict, varying: list[str], exclude=()) -> str:
    obj = str(config.get("objective", "?"))
    used = settings_of(obj, config)  # with the settings of the run's --token_weight
    parts = [obj]
    if used and "scorer" in used and "scorer" not in exclude:  # grouped objectives: the scorer names the method
        parts.append(fmt_value(config.get("scorer")))
    for k in varying:
        if k in ("objective", "scorer") or k in exclude:
            continue
        if k in METHOD_KEYS and used is not None and k not in used:
            continue  # e.g. percentile on an sft row
        v = config.get(k)
        if v is None and k != "lam_min":
            continue  # a setting this run leaves unset (another run's reference model, say) says nothing about it
        if k == "lam_min" and used and "lam" in used:
            parts.append("static lam" if is_static_lam(config) else f"lam {fmt_value(config.get('lam'))}->{fmt_value(v)}")
            continue
        parts.append(f"{SHORT.get(k, k)}={fmt_value(v)}")
    return " ".join(parts)


def is_static_lam(config: dict) -> bool:
    lm = config.get("lam_min")
    return lm is None or float(lm) >= float(config.get("lam", 0.0))


def label_groups(groups: list[Group]) -> None:
    varying = varying_keys([g.config for g in groups])
    labels = [method_label(g.config, varying) for g in groups]
    for i, g in enumerate(groups):
        if labels.count(labels[i]) > 1:  # settings hidden as irrelevant still tell these apart: show them all
            shown = labels[i].split(" ")
            labels[i] = " ".join(shown + [p for p in (f"{SHORT.get(k, k)}={fmt_value(g.config.get(k))}" for k in varying
                                                      if k != "objective") if p not in shown])
        g.label = labels[i]


def baseline_group(groups: list[Group]) -> Group | None:
    """The plain-SFT configuration (the paper's baseline row), if exactly one kind of it is present."""
    sft = [g for g in groups if plain_sft(g.config)]
    return sft[0] if len(sft) >= 1 else None


# --------------------------------------------------------------------------------------------------- statistics


def mean_std(values) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (ddof = 1; None for a single value) of the finite values."""
    vals = [float(v) for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return None, None, 0
    m = sum(vals) / n
    if n == 1:
        return m, None, 1
    var = sum((v - m) ** 2 for v in vals) / (n - 1)
    return m, math.sqrt(var), n
