"""The plan of a sweep: every run (grid point x variant x seed, the baseline once per seed) and its name. Pure: reads
the spec (and any train YAML a variant names), touches no run directory."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..naming import point_of, run_name
from .spec import ABBREV, Spec, SweepError, _load_train_yaml

__all__ = ["RunPlan", "plan_runs", "selection_runs", "point_name", "run_name", "point_of"]


@dataclass
class RunPlan:
    name: str
    dir: Path
    seed: int
    settings: dict  # what this run sets beyond the shared base (grid point / variant / baseline), plus seed
    role: str  # "grid" | "baseline" | "select"
    point: str  # grid-point name (without the seed)
    full: dict = field(default_factory=dict)  # every setting of the point (base YAML / variant / grid / set)

    def config(self) -> dict:
        return {**self.full, "seed": self.seed, "output_dir": str(self.dir)}

def _variant_config(spec: Spec, variant: dict) -> dict:
    """Settings of one variant: a train-YAML variant replaces the base YAML; `set` applies over either."""
    if "__config__" in variant:
        cfg = _load_train_yaml(Path(variant["__config__"]), "variant")
        return {**cfg, **spec.set, **{k: v for k, v in variant.items() if k != "__config__"}}
    return {**spec.base, **variant}


def fmt_name_value(v) -> str:
    if isinstance(v, float):
        v = f"{v:g}"
    v = str(v)
    if "/" in v:
        v = v.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9.+=-]+", "-", v)


def point_name(cfg: dict, name_keys: list[str]) -> str:
    from ..objectives import METHOD_SETTINGS, settings_of

    obj = str(cfg.get("objective", "sft-go"))
    used = settings_of(obj, cfg)
    parts = [obj]
    if used and "scorer" in used:  # grouped objectives: the grouping function names the method
        parts.append(fmt_name_value(cfg.get("scorer", "tfidf")))
    for k in name_keys:
        if k in ("objective", "scorer"):
            continue
        if k in METHOD_SETTINGS and used is not None and k not in used:
            continue
        ab = ABBREV.get(k, k)
        if k == "lam_min" and cfg.get(k) is None:
            parts.append("static")
            continue
        if cfg.get(k) is None:  # not set for this point (e.g. a reference model next to tfidf runs): not in its name
            continue
        parts.append(f"{ab}{fmt_name_value(cfg.get(k))}" if ab else fmt_name_value(cfg.get(k)))
    return "_".join(parts)

def plan_runs(spec: Spec) -> tuple[list[RunPlan], list[dict]]:
    """All runs of the full sweep (seed-major order, baseline first), and the grid points [{name, settings}]."""
    out = Path(spec.output_dir)
    combos = [dict(zip(spec.grid, vals)) for vals in itertools.product(*spec.grid.values())] if spec.grid else [{}]
    variants = spec.variants or [{}]
    points, shown = [], []
    for v in variants:
        for c in combos:
            points.append({**_variant_config(spec, v), **c})
            label = {("config" if k == "__config__" else k): (Path(x).name if k == "__config__" else x)
                     for k, x in v.items()}
            shown.append({**label, **c})
    from ..objectives import METHOD_SETTINGS, settings_of

    def uses(c, k):  # a method setting only counts where the point's objective reads it
        used = settings_of(c.get("objective", "sft-go"), c)
        return k not in METHOD_SETTINGS or used is None or k in used

    ignore = {"seed", "output_dir", "run_name", "logging_dir"}
    varying = [k for k in sorted(set().union(*points)) if k not in ignore
               and len({json.dumps(c.get(k), sort_keys=True, default=str) for c in points if uses(c, k)}) > 1]
    name_keys = list(spec.grid) + [k for k in varying if k not in spec.grid]
    named = []
    for cfg, sh in zip(points, shown):
        named.append({"name": point_name(cfg, name_keys), "settings": sh, "config": cfg})
    base_point = None
    if spec.baseline is not None:
        cfg = _variant_config(spec, spec.baseline)
        own = [k for k in spec.baseline if k != "__config__"]
        base_point = {"name": point_name(cfg, [k for k in name_keys if k not in spec.grid] + own),
                      "settings": {("config" if k == "__config__" else k): (Path(x).name if k == "__config__" else x)
                                   for k, x in spec.baseline.items()}, "config": cfg}
    names = [p["name"] for p in named] + ([base_point["name"]] if base_point else [])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepError(f"two grid points would share the run name {dup[0]!r}: they differ in no setting of the grid")
    runs = []
    for seed in spec.seeds:
        if base_point:
            name = run_name(base_point["name"], seed)
            runs.append(RunPlan(name, out / name, seed,
                                base_point["settings"], "baseline", base_point["name"], base_point["config"]))
        for p in named:
            name = run_name(p["name"], seed)
            runs.append(RunPlan(name, out / name, seed, p["settings"], "grid", p["name"], p["config"]))
    return runs, named


def selection_runs(spec: Spec, points: list[dict]) -> list[RunPlan]:
    """The short runs of ``--select``: every grid point on the first seed, in ``SWEEP/select/``. Their names start with
    ``select/`` so that their records, configs and logs stay apart from the full-budget run of the same point."""
    out, seed0 = Path(spec.output_dir), spec.seeds[0]
    return [RunPlan(f"select/{run_name(p['name'], seed0)}", out / "select" / run_name(p["name"], seed0), seed0,
                    p["settings"], "select", p["name"], p["config"]) for p in points]
