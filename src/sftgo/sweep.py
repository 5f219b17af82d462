"""`sftgo sweep`: a grid of settings x seeds, each run trained (and evaluated) in its own subprocess.

    sftgo sweep CONFIG.yaml --grid percentile=55,70,90 --grid lam=0.9 --seeds 1,2,3 \
        --baseline objective=sft --eval paper --heldout heldout.json --output_dir SWEEP

One run directory per grid point and seed with a readable name (``SWEEP/sft-go_tfidf_p70_lam0.9_s2``). Baseline
settings (``--baseline objective=sft``) run once per seed, not per grid point. ``SWEEP/sweep.json`` lists every run
and its state. Re-running the same command continues the sweep: complete runs are skipped, interrupted runs resume
from their last checkpoint, evaluations that did not finish are redone. Each training is a subprocess
(``python -m sftgo.cli train``, or ``--launcher "torchrun --nproc_per_node 8"`` / ``"accelerate launch ..."``), so one
crash does not stop the sweep; each evaluation is ``sftgo eval RUN --tasks ... [--heldout DATA]`` (or ``--eval_cmd``).

A sweep file (YAML) holds the same options: ``config`` (a train YAML, relative to the sweep file), ``set`` (settings
for every run), ``grid`` (key: [values]), ``variants`` (a list, each a mapping of settings or a train YAML, crossed with
the grid), ``baseline`` (mapping or train YAML), ``seeds``, ``eval``, ``heldout``, ``eval_args``, ``launcher``,
``select``, ``select_steps``, ``output_dir``. Command-line options override it.

``--select heldout_worst --select_steps K`` first trains every grid point (first seed) for K steps under the full
budget's schedule, evaluates held-out group losses, and continues only the point with the lowest held-out worst-group
loss (and the baseline) to the full budget over all seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from .errors import UserError

SWEEP_KEYS = {"config", "set", "grid", "variants", "baseline", "seeds", "eval", "heldout", "eval_args", "eval_cmd",
              "launcher", "select", "select_steps", "output_dir", "prune_checkpoints"}
SELECTORS = ("heldout_worst",)
ABBREV = {"percentile": "p", "lam": "lam", "lam_min": "lmin", "learning_rate": "lr", "keep_ratio": "kr",
          "num_train_epochs": "ep", "max_steps": "steps", "per_device_train_batch_size": "bs", "infosft_p": "P",
          "target_gamma": "g", "target_residual": "res", "model_name_or_path": "", "dataset": "", "num_groups": "k",
          "ref_model_name_or_path": "ref-"}


class SweepError(UserError):
    """A bad sweep specification or a sweep directory that does not match it; the message says what to change."""


# ------------------------------------------------------------------------------------------------ specification


@dataclass
class Spec:
    config: dict = field(default_factory=dict)  # the base train YAML's settings
    set: dict = field(default_factory=dict)  # settings for every run, over any YAML (the sweep file's `set`)
    grid: dict = field(default_factory=dict)  # key -> [values], crossed
    variants: list = field(default_factory=list)  # [settings dict], crossed with the grid
    baseline: dict | None = None
    seeds: list = field(default_factory=lambda: [1])
    eval: str | None = None
    heldout: str | None = None
    eval_args: list = field(default_factory=list)
    eval_cmd: str | None = None
    launcher: str | None = None
    select: str | None = None
    select_steps: int | None = None
    output_dir: str | None = None
    prune_checkpoints: bool = False  # delete a run's checkpoint-*/ once it is complete (final/ and its evaluation)
    train_args: list = field(default_factory=list)  # extra `sftgo train` flags for every run

    @property
    def base(self) -> dict:
        return {**self.config, **self.set}


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


def parse_value(text: str):
    """A grid value as YAML reads it: 90 -> int, 0.9 -> float, none -> None, tfidf -> str."""
    import yaml

    v = yaml.safe_load(text)
    if isinstance(v, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", v):
        v = float(v)  # YAML 1.1 reads 1e-5 as a string
    return v


def parse_grid(items: list[str], source="--grid") -> dict:
    grid = {}
    for it in items:
        if "=" not in it:
            raise SweepError(f"{source} {it!r}: expected key=v1,v2,...")
        k, vals = it.split("=", 1)
        k = k.strip().replace("-", "_")
        values = [parse_value(v) for v in vals.split(",") if v.strip() != ""]
        if not values:
            raise SweepError(f"{source} {it!r}: no values after '='")
        grid[k] = values
    return grid


def parse_settings(items: list[str], source: str) -> dict:
    out = {}
    for it in items:
        for tok in shlex.split(it):
            if "=" not in tok:
                raise SweepError(f"{source} {tok!r}: expected key=value")
            k, v = tok.split("=", 1)
            out[k.strip().replace("-", "_")] = parse_value(v)
    return out


def _load_train_yaml(path: Path, source: str) -> dict:
    from .config import load_yaml

    if not path.exists():
        raise SweepError(f"{source}: train config {path} does not exist")
    return load_yaml(path)


def is_sweep_file(data: dict) -> bool:
    return bool(set(data) & SWEEP_KEYS - {"output_dir", "eval"}) and not (set(data) - SWEEP_KEYS)


def _resolve(ref: str, base_dir: Path) -> Path:
    """A path in a sweep file: relative to the sweep file's folder, else to the working directory."""
    p = Path(ref)
    if p.is_absolute() or not (base_dir / p).exists():
        return p
    return base_dir / p


def load_spec(path: str | None, args) -> Spec:
    """Sweep file or train YAML (or nothing) + command-line options -> Spec."""
    from .config import check_keys, read_yaml_mapping

    spec = Spec()
    file_data: dict = {}
    if path:
        p = Path(path)
        data = read_yaml_mapping(p, SweepError)
        if is_sweep_file(data):
            file_data = data
            here = p.parent
            if data.get("config"):
                spec.config = _load_train_yaml(_resolve(data["config"], here), f"{path}: config")
            check_keys(data.get("set") or {}, f"{path}: set")
            spec.set = dict(data.get("set") or {})
            grid = data.get("grid") or {}
            if not isinstance(grid, dict):
                raise SweepError(f"{path}: grid must be a mapping of setting: [values]")
            spec.grid = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
            for i, v in enumerate(data.get("variants") or []):
                if isinstance(v, str):
                    spec.variants.append({"__config__": str(_resolve(v, here))})
                elif isinstance(v, dict):
                    check_keys(v, f"{path}: variants[{i}]")
                    spec.variants.append(dict(v))
                else:
                    raise SweepError(f"{path}: variants[{i}] must be a mapping of settings or a train YAML path")
            b = data.get("baseline")
            if isinstance(b, str):
                spec.baseline = {"__config__": str(_resolve(b, here))}
            elif isinstance(b, dict):
                check_keys(b, f"{path}: baseline")
                spec.baseline = dict(b)
            elif b is not None:
                raise SweepError(f"{path}: baseline must be a mapping of settings or a train YAML path")
            for k in ("eval", "heldout", "eval_cmd", "launcher", "select", "select_steps", "output_dir"):
                if data.get(k) is not None:
                    setattr(spec, k, data[k])
            if data.get("prune_checkpoints") is not None:
                if not isinstance(data["prune_checkpoints"], bool):
                    raise SweepError(f"{path}: prune_checkpoints must be true or false, got {data['prune_checkpoints']!r}")
                spec.prune_checkpoints = data["prune_checkpoints"]
            if data.get("seeds") is not None:
                seeds = data["seeds"] if isinstance(data["seeds"], list) else [data["seeds"]]
                try:
                    spec.seeds = [int(x) for x in seeds]
                except (TypeError, ValueError):
                    raise SweepError(f"{path}: seeds must be integers, got {seeds!r}") from None
            ea = data.get("eval_args")
            spec.eval_args = shlex.split(ea) if isinstance(ea, str) else list(ea or [])
        elif set(data) & (SWEEP_KEYS - {"output_dir", "eval"}):
            extra = sorted(set(data) - SWEEP_KEYS)
            raise SweepError(f"{path}: mixes sweep keys with train settings ({', '.join(extra[:3])}): put train "
                             "settings under `set:` or in the train YAML named by `config:`")
        else:
            check_keys(data, str(path))
            spec.config = dict(data)
    # Command line overrides the file.
    if args.grid:
        spec.grid.update(parse_grid(args.grid))
    if args.variant:
        spec.variants += [parse_settings([v], "--variant") for v in args.variant]
    if args.baseline:
        spec.baseline = parse_settings(args.baseline, "--baseline")
    if args.seeds:
        try:
            spec.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise SweepError(f"--seeds {args.seeds!r}: expected integers like 1,2,3") from None
    for k in ("eval", "heldout", "eval_cmd", "launcher", "select", "select_steps", "output_dir"):
        if getattr(args, k) is not None:
            setattr(spec, k, getattr(args, k))
    if args.eval_args is not None:
        spec.eval_args = shlex.split(args.eval_args)
    if args.prune_checkpoints:
        spec.prune_checkpoints = True
    spec.train_args = list(args.train_args)
    validate_spec(spec, file_data)
    return spec


def validate_spec(spec: Spec, file_data: dict | None = None) -> None:
    from .config import check_keys

    check_keys(spec.grid, "--grid")
    flags = [a[2:].split("=", 1)[0].replace("-", "_") for a in spec.train_args if a.startswith("--")]
    check_keys(flags, "sweep train flags")
    if any(a for a in spec.train_args if not a.startswith("--")) and not flags:
        raise SweepError(f"unexpected arguments {spec.train_args}: train settings go as --key value")
    per_run = set(spec.grid) | set(spec.baseline or {}) | {k for v in spec.variants for k in v}
    clash = set(flags) & (per_run | {"seed", "output_dir", "resume_from_checkpoint", "stop_after_steps"})
    if clash:
        k = sorted(clash)[0]
        raise SweepError(f"--{k} is set by the sweep for each run: "
                         + ("use --seeds" if k == "seed" else "use --output_dir for the sweep" if k == "output_dir"
                            else "the sweep resumes by itself" if k == "resume_from_checkpoint"
                            else "use --select_steps" if k == "stop_after_steps"
                            else "a flag would override it in every run, baseline included"))
    if not spec.output_dir:
        raise SweepError("no output directory: pass --output_dir SWEEP (or output_dir: in the sweep file)")
    if not spec.seeds:
        raise SweepError("no seeds: pass --seeds 1,2,3")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise SweepError(f"--seeds {spec.seeds}: repeated seed")
    if spec.select is not None:
        if spec.select not in SELECTORS:
            raise SweepError(f"--select {spec.select!r}: one of {', '.join(SELECTORS)}")
        if not spec.select_steps or int(spec.select_steps) < 1:
            raise SweepError("--select heldout_worst needs --select_steps K (the short budget per grid point)")
        if not spec.heldout and not spec.eval_cmd:
            raise SweepError("--select heldout_worst ranks by held-out worst-group loss: pass --heldout DATA")
    if spec.eval_cmd and "{run_dir}" not in spec.eval_cmd:
        raise SweepError("--eval_cmd must contain {run_dir} (where the run directory goes)")


# ------------------------------------------------------------------------------------------------------ planning


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
    from .report.runs import METHOD_KEYS, OBJECTIVE_KEYS

    obj = str(cfg.get("objective", "sft-go"))
    used = OBJECTIVE_KEYS.get(obj)
    parts = [obj]
    if obj in ("sft-go", "sft-go-dro"):
        parts.append(fmt_name_value(cfg.get("scorer", "tfidf")))
    for k in name_keys:
        if k in ("objective", "scorer"):
            continue
        if k in METHOD_KEYS and used is not None and k not in used:
            continue
        ab = ABBREV.get(k, k)
        if k == "lam_min" and cfg.get(k) is None:
            parts.append("static")
            continue
        if cfg.get(k) is None:  # not set for this point (e.g. a reference model next to tfidf runs): not in its name
            continue
        parts.append(f"{ab}{fmt_name_value(cfg.get(k))}" if ab else fmt_name_value(cfg.get(k)))
    return "_".join(parts)


def run_name(point: str, seed) -> str:
    """A sweep run's directory name: its grid point's name and its seed (``sft-go_tfidf_p70_s2``)."""
    return f"{point}_s{seed}"


def point_of(name: str) -> str:
    """The inverse of :func:`run_name`: the grid point a run directory belongs to."""
    return re.sub(r"_s\d+$", "", name)


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
    from .report.runs import METHOD_KEYS, OBJECTIVE_KEYS

    def uses(c, k):  # a method setting only counts where the point's objective reads it
        used = OBJECTIVE_KEYS.get(str(c.get("objective", "sft-go")))
        return k not in METHOD_KEYS or used is None or k in used

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


# ------------------------------------------------------------------------------------------------------- running


def _fmt_dur(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _set_pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """Linux: the training child gets SIGTERM if the sweep process dies (even by SIGKILL), so no orphan keeps
    writing into a run directory that a continued sweep resumes."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Sweep:
    def __init__(self, spec: Spec, log=print):
        self.spec = spec
        self.out = Path(spec.output_dir)
        self.log = log
        self.state_file = self.out / "sweep.json"
        self.state = {"format": 1, "runs": {}, "selection": None}
        self.t0 = time.time()
        self.durations: list[float] = []
        self.child: subprocess.Popen | None = None
        self.command = ""
        self.on_child = None  # called with the child's pid (recorded in sweep.json)

    # ---------------------------------------------------------------- state file
    def load_state(self):
        if self.state_file.exists():
            try:
                old = json.loads(self.state_file.read_text())
                self.state["runs"] = {r["name"]: r for r in old.get("runs", [])}
                self.state["selection"] = old.get("selection")
            except (json.JSONDecodeError, KeyError, TypeError):
                self.log(f"sweep: {self.state_file} unreadable; rebuilding it from the run directories")

    def save_state(self, order: list[RunPlan]):
        names = [r.name for r in order]
        runs = [self.state["runs"][n] for n in names if n in self.state["runs"]]
        runs += [r for n, r in self.state["runs"].items() if n not in names]
        doc = {"format": 1, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": self.command,
               "seeds": self.spec.seeds, "grid": self.spec.grid, "eval": self.spec.eval, "heldout": self.spec.heldout,
               "select": self.spec.select, "select_steps": self.spec.select_steps,
               "selection": self.state["selection"], "runs": runs}
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str))
        os.replace(tmp, self.state_file)

    def entry(self, r: RunPlan) -> dict:
        e = self.state["runs"].setdefault(r.name, {"name": r.name})
        e.update({"dir": os.path.relpath(r.dir, self.out), "seed": r.seed, "role": r.role, "point": r.point,
                  "settings": r.settings})
        e.setdefault("state", "pending")
        return e

    # ---------------------------------------------------------------- run status from the run directory
    def check_matches(self, r: RunPlan, cfg: dict):
        """A run directory must hold the run this sweep would train there."""
        import yaml

        f = r.dir / "config.yaml"
        if not f.exists():
            return
        have = yaml.safe_load(f.read_text()) or {}
        for k, v in {**r.settings, "seed": r.seed}.items():
            if k in ("stop_after_steps",):
                continue
            if k in have and json.dumps(have[k], default=str) != json.dumps(cfg.get(k), default=str):
                raise SweepError(f"{r.dir} holds a run with {k}={have[k]!r}, but this sweep puts {k}={cfg.get(k)!r} "
                                 "there: use another --output_dir or remove that directory")

    @staticmethod
    def trained(d: Path) -> bool:
        s = d / "summary.json"
        if not s.exists():
            return False
        try:
            return not json.loads(s.read_text()).get("stopped_early")
        except json.JSONDecodeError:
            return False

    @staticmethod
    def has_checkpoint(d: Path) -> bool:
        """A complete checkpoint to resume from (a run killed while saving leaves an incomplete one, which the
        resumed run skips: sftgo.checkpoints)."""
        from .checkpoints import last_complete_checkpoint

        return last_complete_checkpoint(d) is not None

    def eval_signature(self) -> str | None:
        if not (self.spec.eval or self.spec.heldout or self.spec.eval_cmd):
            return None
        return json.dumps([self.spec.eval, self.spec.heldout, self.spec.eval_args, self.spec.eval_cmd])

    def evaluated(self, r: RunPlan, e: dict) -> bool:
        sig = self.eval_signature()
        if sig is None:
            return True
        s = r.dir / "summary.json"
        return e.get("eval_signature") == sig and s.exists() and e.get("eval_of") == s.stat().st_mtime

    # ---------------------------------------------------------------- subprocesses
    def _python_m(self) -> list[str]:
        if self.spec.launcher:
            return [*shlex.split(self.spec.launcher), "-m", "sftgo.cli"]
        return [sys.executable, "-m", "sftgo.cli"]

    def train_command(self, r: RunPlan, cfg_path: Path, resume: bool) -> list[str]:
        cmd = [*self._python_m(), "train", str(cfg_path), *self.spec.train_args]
        if resume:
            cmd += ["--resume_from_checkpoint", "last"]
        return cmd

    def eval_command(self, r: RunPlan, heldout_only=False) -> list[str]:
        s = self.spec
        if s.eval_cmd:
            subst = {"{run_dir}": str(r.dir), "{tasks}": "" if heldout_only else (s.eval or ""),
                     "{heldout}": s.heldout or ""}
            out = []
            for a in shlex.split(s.eval_cmd):
                for k, v in subst.items():
                    a = a.replace(k, v)
                out.append(a)
            return out
        cmd = [sys.executable, "-m", "sftgo.cli", "eval", str(r.dir)]
        if s.eval and not heldout_only:
            cmd += ["--tasks", s.eval]
        if s.heldout:
            cmd += ["--heldout", s.heldout]
        return cmd + list(s.eval_args)

    def run_child(self, cmd: list[str], log_path: Path) -> int:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as logf:
            logf.write(f"\n$ {shlex.join(cmd)}\n")
            logf.flush()
            env = dict(os.environ)
            env.setdefault("PYTHONUNBUFFERED", "1")
            self.child = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                          preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None)
            if self.on_child:
                self.on_child(self.child.pid)
            try:
                return self.child.wait()
            finally:
                if self.child.poll() is None:  # we are being interrupted: take the child down with us
                    self.child.terminate()
                    try:
                        self.child.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        self.child.kill()
                        self.child.wait()
                self.child = None

    def _tail(self, path: Path, n=15) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # ---------------------------------------------------------------- one run
    def train(self, r: RunPlan, order, stop_after: int | None = None) -> bool:
        e = self.entry(r)
        cfg = r.config()
        if stop_after:
            cfg["stop_after_steps"] = int(stop_after)
        else:
            cfg.pop("stop_after_steps", None)
        self.check_matches(r, cfg)
        cfg_path = self.out / "configs" / f"{r.name}.yaml"
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        import yaml

        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        resume = self.has_checkpoint(r.dir)
        e.update(state="training", started=time.strftime("%Y-%m-%dT%H:%M:%S"), resumed=resume)
        e["attempts"] = e.get("attempts", 0) + 1
        self.save_state(order)
        t = time.time()
        cmd = self.train_command(r, cfg_path, resume)
        e["train_command"] = shlex.join(cmd)

        def record_pid(pid):
            e["pid"] = pid
            self.save_state(order)

        self.on_child = record_pid
        try:
            rc = self.run_child(cmd, self.out / "logs" / f"{r.name}.train.log")
        except KeyboardInterrupt:
            e["state"] = "interrupted"
            self.save_state(order)
            raise
        finally:
            self.on_child = None
        e["train_rc"] = rc
        e["train_time_s"] = round(time.time() - t, 1)
        ok = rc == 0 and (r.dir / "summary.json").exists()
        e["state"] = "trained" if ok else "failed"
        self.save_state(order)
        if not ok:
            self.log(f"sweep: {r.name}: training failed (exit {rc}); log {self.out / 'logs' / (r.name + '.train.log')}:"
                     f"\n{self._tail(self.out / 'logs' / (r.name + '.train.log'))}")
        return ok

    def evaluate(self, r: RunPlan, order, heldout_only=False) -> bool:
        e = self.entry(r)
        e["state"] = "evaluating"
        self.save_state(order)
        t = time.time()
        cmd = self.eval_command(r, heldout_only)
        e["eval_command"] = shlex.join(cmd)
        rc = self.run_child(cmd, self.out / "logs" / f"{r.name}.eval.log")
        e["eval_rc"] = rc
        e["eval_time_s"] = round(time.time() - t, 1)
        if rc == 0:
            if not heldout_only:
                e["eval_signature"] = self.eval_signature()
                e["eval_of"] = (r.dir / "summary.json").stat().st_mtime
            e["state"] = "complete" if not heldout_only else "selection-evaluated"
        else:
            e["state"] = "eval-failed"
            self.log(f"sweep: {r.name}: evaluation failed (exit {rc}); log {self.out / 'logs' / (r.name + '.eval.log')}:"
                     f"\n{self._tail(self.out / 'logs' / (r.name + '.eval.log'))}")
        self.save_state(order)
        return rc == 0

    def progress(self, i: int, n: int, r: RunPlan, what: str, left: int):
        el = time.time() - self.t0
        rem = (sum(self.durations) / len(self.durations) * left) if self.durations else None
        self.log(f"[{i}/{n}] {r.name}: {what} | elapsed {_fmt_dur(el)}, remaining ~{_fmt_dur(rem)}"
                 + ("" if self.durations else " (estimate after the first run)"))

    def process(self, runs: list[RunPlan], order: list[RunPlan], n_total: int, offset: int = 0,
                stop_after: int | None = None, heldout_only=False) -> list[str]:
        """Train (or resume) and evaluate each run that is not complete; returns the names that failed."""
        failed = []
        todo = [r for r in runs if not self._complete(r, stop_after, heldout_only)]
        for i, r in enumerate(runs, start=1 + offset):
            e = self.entry(r)
            if self._complete(r, stop_after, heldout_only):
                if e.get("state") not in ("complete", "selection-evaluated"):
                    e["state"] = "complete" if not stop_after else "selection-evaluated"
                self.log(f"[{i}/{n_total}] {r.name}: complete, skipped")
                self.prune(r, stop_after)
                continue
            left = len(todo) - 1
            todo = todo[1:]
            t = time.time()
            trained = self.trained(r.dir) if not stop_after else (r.dir / "summary.json").exists()
            if not trained:
                how = "resuming from its last checkpoint" if self.has_checkpoint(r.dir) else "training"
                if stop_after:
                    how += f" (selection budget: {stop_after} steps)"
                self.progress(i, n_total, r, how, left)
                if not self.train(r, order, stop_after):
                    failed.append(r.name)
                    self.durations.append(time.time() - t)
                    continue
            if self.eval_signature() is not None:
                self.progress(i, n_total, r, "evaluating", left)
                if not self.evaluate(r, order, heldout_only):
                    failed.append(r.name)
            else:
                e["state"] = "complete"
                self.save_state(order)
            if r.name not in failed:
                self.prune(r, stop_after)
            self.durations.append(time.time() - t)
        return failed

    def prune(self, r: RunPlan, stop_after=None) -> None:
        """``prune_checkpoints``: a complete run keeps final/ (and its eval/) and drops its checkpoint-*/ folders
        (each holds the optimizer state: about 12 bytes per parameter). Selection runs keep theirs: the chosen one
        resumes from it."""
        if not self.spec.prune_checkpoints or stop_after or r.role == "select" or not self.trained(r.dir) \
                or not (r.dir / "final").is_dir():
            return
        import shutil

        gone = sorted(d.name for d in r.dir.glob("checkpoint-*") if d.is_dir())
        for name in gone:
            shutil.rmtree(r.dir / name, ignore_errors=True)
        if gone:
            self.log(f"  {r.name}: removed {', '.join(gone)} (prune_checkpoints; final/ stays)")

    def _complete(self, r: RunPlan, stop_after=None, heldout_only=False) -> bool:
        e = self.entry(r)
        if stop_after:
            return (r.dir / "summary.json").exists() and e.get("state") == "selection-evaluated" \
                and (r.dir / "eval" / "heldout.json").exists()
        if not self.trained(r.dir):
            return False
        if self.eval_signature() is None:
            return True
        return self.evaluated(r, e)

    # ---------------------------------------------------------------- the sweep
    def run(self, dry_run=False) -> int:
        runs, points = plan_runs(self.spec)
        self.out.mkdir(parents=True, exist_ok=True)
        self.load_state()
        with self.lock():
            if self.spec.select and len(points) > 1:
                return self._run_select(runs, points, dry_run)
            for r in runs:
                self.entry(r)
            if dry_run:
                return self._print_plan(runs)
            self.save_state(runs)
            n = len(runs)
            done = sum(self._complete(r) for r in runs)
            self.log(f"sweep: {n} runs in {self.out} ({done} complete, {n - done} to do)")
            failed = self.process(runs, runs, n)
            return self._finish(runs, failed)

    def _print_plan(self, runs):
        for r in runs:
            state = "complete" if self._complete(r) else ("resume" if self.has_checkpoint(r.dir) else "train")
            settings = " ".join(f"{k}={v}" for k, v in r.settings.items())
            self.log(f"{r.name}\t{state}\t{settings}")
        return 0

    def _finish(self, runs, failed) -> int:
        self.save_state(runs)
        took = _fmt_dur(time.time() - self.t0)
        if failed:
            self.log(f"sweep: {len(failed)} of {len(runs)} runs failed ({', '.join(failed)}); run the same command "
                     f"again to retry them (took {took})")
            return 1
        self.log(f"sweep: all {len(runs)} runs complete in {self.out} (took {took}); "
                 f"`sftgo report {self.out} --output_dir {self.out / 'report'}` makes the tables")
        return 0

    def _run_select(self, runs, points, dry_run) -> int:
        s = self.spec
        seed0 = s.seeds[0]
        # "select/<run>": the short run's record in sweep.json, its config and logs stay apart from the full-budget
        # run of the same name (the chosen point's, or another sweep's sharing this folder).
        sel_runs = [RunPlan(f"select/{run_name(p['name'], seed0)}", self.out / "select" / run_name(p["name"], seed0), seed0,
                            p["settings"], "select", p["name"], p["config"]) for p in points]
        chosen = (self.state.get("selection") or {}).get("chosen")
        if chosen not in {p["name"] for p in points}:
            chosen = None  # no selection yet, or one made for another grid: select again
        if dry_run:
            for r in sel_runs:
                self.log(f"{r.name}\tselect ({s.select_steps} steps)\t" + " ".join(f"{k}={v}" for k, v in r.settings.items()))
            self.log("then the chosen point and the baseline over all seeds: "
                     + ", ".join(r.name for r in runs if r.role == "baseline" or r.point == chosen) if chosen else
                     "then the chosen point and the baseline over all seeds")
            return 0
        n_sel = len(sel_runs)
        if chosen is None:
            self.log(f"sweep: selection phase: {n_sel} grid points x {s.select_steps} steps (seed {seed0}), "
                     "ranked by held-out worst-group loss")
            failed = self.process(sel_runs, sel_runs, n_sel, stop_after=int(s.select_steps), heldout_only=True)
            scores = []
            for r in sel_runs:
                f = r.dir / "eval" / "heldout.json"
                v = None
                if f.exists():
                    try:
                        v = json.loads(f.read_text()).get("loss_worst")
                    except json.JSONDecodeError:
                        v = None
                scores.append({"name": r.point, "run": r.name, "loss_worst": v})
            ok = [p for p in scores if isinstance(p["loss_worst"], (int, float))]
            if not ok:
                self.save_state(sel_runs)
                raise SweepError("selection: no grid point produced eval/heldout.json with loss_worst; see "
                                 f"{self.out / 'logs'} ({', '.join(failed) or 'no failures recorded'})")
            best = min(ok, key=lambda p: p["loss_worst"])
            chosen = best["name"]
            self.state["selection"] = {"criterion": s.select, "steps": int(s.select_steps), "seed": seed0,
                                       "points": scores, "chosen": chosen}
            self.log("sweep: selection: " + ", ".join(f"{p['name']}={p['loss_worst']}" for p in scores)
                     + f" -> {chosen}")
            # The chosen point's short run continues to the full budget in the sweep directory.
            src = self.out / "select" / run_name(chosen, seed0)
            dst = self.out / run_name(chosen, seed0)
            if src.exists() and not dst.exists():
                if (src / "eval" / "heldout.json").exists():
                    os.replace(src / "eval" / "heldout.json", src / "selection_heldout.json")
                os.replace(src, dst)
            self.save_state(sel_runs)
        final = [r for r in runs if r.role == "baseline" or r.point == chosen]
        for r in final:
            self.entry(r)
        self.save_state(final)
        n = len(final)
        self.log(f"sweep: full budget: {n} runs ({chosen} and the baseline over seeds {s.seeds})")
        failed = self.process(final, final, n)
        return self._finish(final, failed)

    @contextlib.contextmanager
    def lock(self):
        import fcntl

        fd = os.open(self.out / ".sweep.lock", os.O_CREAT | os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SweepError(f"another sweep is running in {self.out}; wait for it or stop it first") from None
            yield
        finally:
            os.close(fd)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sftgo sweep", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 2)[0] + "\n\nOther --flags are passed to every `sftgo train`.",
        epilog="Re-run the same command to continue an interrupted sweep.")
    p.add_argument("config", nargs="?", help="train YAML (shared settings) or a sweep file")
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="a setting and its values; repeat for a product")
    p.add_argument("--variant", action="append", metavar="'K=V K2=V2'",
                   help="a bundle of settings (e.g. 'scorer=llmlingua2 percentile=70'); variants are crossed with the grid")
    p.add_argument("--seeds", help="comma-separated seeds (default 1)")
    p.add_argument("--baseline", nargs="+", metavar="KEY=VALUE", help="settings of a baseline run once per seed (e.g. objective=sft)")
    p.add_argument("--eval", metavar="TASKS", help="evaluate each run: `sftgo eval RUN --tasks TASKS`")
    p.add_argument("--heldout", metavar="DATA", help="held-out data for group losses: `sftgo eval RUN --heldout DATA`")
    p.add_argument("--eval_args", help="extra arguments for `sftgo eval`, quoted (e.g. \"--data_dir ../shared/data --limit 50\")")
    p.add_argument("--eval_cmd", help="your own evaluation command instead of `sftgo eval`; {run_dir}, {tasks} and "
                   "{heldout} are substituted; it writes RUN/eval/<suite>.json")
    p.add_argument("--launcher", help="prefix for multi-GPU training, e.g. \"torchrun --nproc_per_node 8\" or "
                   "\"accelerate launch --config_file F\" (the sweep appends `-m sftgo.cli train ...`)")
    p.add_argument("--select", choices=SELECTORS, help="choose one grid point by held-out worst-group loss after "
                   "--select_steps, then train only it (and the baseline) to the full budget over all seeds")
    p.add_argument("--select_steps", type=int, help="short budget (optimizer steps) per grid point for --select")
    p.add_argument("--output_dir", help="sweep directory (run directories, sweep.json, logs/, configs/)")
    p.add_argument("--prune_checkpoints", action="store_true", default=None,
                   help="delete each run's checkpoint-*/ once it is complete (final/ and its evaluation stay)")
    p.add_argument("--dry_run", action="store_true", help="print the runs and their state; train nothing")
    return p


def split_argv(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Sweep options vs. `sftgo train` flags (each --flag with the values that follow it). argparse's
    parse_known_args would take an unknown flag's value for the positional CONFIG. A single-value sweep option takes
    the next token whatever it looks like (``--eval_args "--limit 50"``)."""
    single = {o for a in parser._actions if a.nargs is None and a.option_strings for o in a.option_strings}
    known = {o for a in parser._actions for o in a.option_strings}
    mine, train, target = [], [], None
    it = iter(argv)
    for tok in it:
        name = tok.split("=", 1)[0]
        if tok.startswith("-") and not _is_number(tok):
            if name in single and "=" not in tok:
                val = next(it, None)
                mine.append(tok if val is None else f"{tok}={val}")
                target = None
                continue
            target = mine if name in known else train
            target.append(tok)
        elif target is None:
            mine.append(tok)  # the positional CONFIG
        else:
            target.append(tok)
    return mine, train


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    parser = build_parser()
    mine, train = split_argv(parser, argv)
    args = parser.parse_args(mine)
    args.train_args = train
    spec = load_spec(args.config, args)
    sweep = Sweep(spec)
    sweep.command = shlex.join(["sftgo", "sweep", *argv])

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        return sweep.run(dry_run=args.dry_run)
    except KeyboardInterrupt:
        print(f"sweep: interrupted; run the same command again to continue (state in {sweep.state_file})",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
