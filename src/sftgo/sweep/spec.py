"""The sweep's specification: a sweep file and / or command-line options -> :class:`Spec`, validated (a bad key or
value is one line naming it and the fix)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SweepError
from .executors import EXECUTORS

SWEEP_KEYS = {"config", "set", "grid", "variants", "baseline", "seeds", "eval", "heldout", "eval_args", "eval_cmd",
              "launcher", "select", "select_steps", "output_dir", "prune_checkpoints", "executor", "slots",
              "gpus_per_run", "slurm", "extends"}
MERGED_KEYS = ("set", "grid", "slurm")  # mappings that `extends:` merges key by key; other keys are replaced whole
SELECTORS = ("heldout_worst",)
# The sweep file's `slurm:` mapping and the --slurm_<key> options (what each becomes: sftgo.sweep.executors.slurm).
SLURM_KEYS = {"partition": str, "time_min": int, "gpus_per_node": int, "cpus_per_task": int, "mem_gb": float,
              "account": str, "qos": str, "array_parallelism": int, "setup": list}
ABBREV = {"percentile": "p", "lam": "lam", "lam_min": "lmin", "learning_rate": "lr", "keep_ratio": "kr",
          "num_train_epochs": "ep", "max_steps": "steps", "per_device_train_batch_size": "bs", "infosft_p": "P",
          "target_gamma": "g", "target_residual": "res", "model_name_or_path": "", "dataset": "", "num_groups": "k",
          "ref_model_name_or_path": "ref-", "token_weight": ""}


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
    prune_checkpoints: bool = False  # = keep_checkpoints none for every run (see keep_checkpoints below)
    train_args: list = field(default_factory=list)  # extra `sftgo train` flags for every run
    executor: str = "local"  # where runs go: "local" (slots on this machine) or "slurm" (one job per run)
    slots: int = 1  # local: runs at once
    gpus_per_run: int | None = None  # local: GPUs per slot (None: 1 when GPUs are visible, else 0 = CPU)
    slurm: dict = field(default_factory=dict)  # SLURM_KEYS -> value

    @property
    def base(self) -> dict:
        return {**self.config, **self.set}

    @property
    def keep_checkpoints(self) -> str | None:
        """What every run keeps of its checkpoints once complete, where the sweep says it: ``prune_checkpoints``
        (= none), a ``--keep_checkpoints`` train flag, or the train YAML / ``set``; None: sftgo train's default."""
        return "none" if self.prune_checkpoints else self.keep_checkpoints_given

    @property
    def keep_checkpoints_given(self) -> str | None:
        """``keep_checkpoints`` from a train flag of the sweep or the train YAML / ``set``."""
        value = self.base.get("keep_checkpoints")
        for i, a in enumerate(self.train_args):  # the last one wins, as on sftgo train's command line
            if a.startswith("--keep_checkpoints="):
                value = a.split("=", 1)[1]
            elif a == "--keep_checkpoints" and i + 1 < len(self.train_args):
                value = self.train_args[i + 1]
        return value

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
    from ..config import load_yaml
    from ..recipes import resolve_recipe

    return load_yaml(resolve_recipe(path, SweepError, f"{source}: train config"))


def is_sweep_file(data: dict) -> bool:
    return bool(set(data) & SWEEP_KEYS - {"output_dir", "eval"}) and not (set(data) - SWEEP_KEYS)


def _resolve(ref: str, base_dir: Path) -> Path:
    """A path in a sweep file: relative to the sweep file's folder, else to the working directory."""
    p = Path(ref)
    if p.is_absolute() or not (base_dir / p).exists():
        return p
    return base_dir / p


def _apply_extends(data: dict, p: Path, shown: str, chain: tuple = ()) -> tuple[dict, dict]:
    """Sweep file ``p``'s mapping ``data`` with its ``extends:`` chain applied, and for each key the folder that key's
    relative paths are read from (the file it came from). The extended file's keys are the start; this file's replace
    them, except ``set``, ``grid`` and ``slurm``, which are merged key by key (this file's values win)."""
    from ..config import read_yaml_mapping
    from ..recipes import resolve_recipe

    here = p.parent
    if "extends" not in data:
        return data, dict.fromkeys(data, here)
    data = dict(data)
    ref = data.pop("extends")
    if not isinstance(ref, str) or not ref.strip():
        raise SweepError(f"{shown}: extends must name one sweep file (a path relative to this file, or a bundled "
                         f"sweep by name), got {ref!r}")
    parent = resolve_recipe(_resolve(ref, here), SweepError, f"{shown}: extends: sweep file")
    chain = (*chain, p.resolve())
    if parent.resolve() in chain:
        loop = " -> ".join([*(c.name for c in chain), parent.name])
        raise SweepError(f"{shown}: extends {ref}, which leads back to itself ({loop}): remove one `extends:`")
    parent_data = read_yaml_mapping(parent, SweepError)
    if not is_sweep_file(parent_data):
        raise SweepError(f"{shown}: extends {ref}, which is not a sweep file (a train YAML goes under `config:`)")
    merged, dirs = _apply_extends(parent_data, parent, f"{shown}: extends {ref}", chain)
    for k, v in data.items():
        if k in MERGED_KEYS and isinstance(v, dict) and isinstance(merged.get(k), dict):
            v = {**merged[k], **v}
        merged[k], dirs[k] = v, here
    return merged, dirs


def load_spec(path: str | None, args) -> Spec:
    """Sweep file or train YAML (or nothing) + command-line options -> Spec."""
    from ..config import check_keys, read_yaml_mapping
    from ..recipes import resolve_recipe

    spec = Spec()
    file_data: dict = {}
    if path:
        p = resolve_recipe(path, SweepError)  # a bundled sweep by name: its own references are relative to it
        data = read_yaml_mapping(p, SweepError)
        if is_sweep_file(data):
            data, dirs = _apply_extends(data, p, str(path))
            file_data = data
            if data.get("config"):
                spec.config = _load_train_yaml(_resolve(data["config"], dirs["config"]), f"{path}: config")
            check_keys(data.get("set") or {}, f"{path}: set")
            spec.set = dict(data.get("set") or {})
            grid = data.get("grid") or {}
            if not isinstance(grid, dict):
                raise SweepError(f"{path}: grid must be a mapping of setting: [values]")
            spec.grid = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
            for i, v in enumerate(data.get("variants") or []):
                if isinstance(v, str):
                    spec.variants.append({"__config__": str(_resolve(v, dirs["variants"]))})
                elif isinstance(v, dict):
                    check_keys(v, f"{path}: variants[{i}]")
                    spec.variants.append(dict(v))
                else:
                    raise SweepError(f"{path}: variants[{i}] must be a mapping of settings or a train YAML path")
            b = data.get("baseline")
            if isinstance(b, str):
                spec.baseline = {"__config__": str(_resolve(b, dirs["baseline"]))}
            elif isinstance(b, dict):
                check_keys(b, f"{path}: baseline")
                spec.baseline = dict(b)
            elif b is not None:
                raise SweepError(f"{path}: baseline must be a mapping of settings or a train YAML path")
            for k in ("eval", "heldout", "eval_cmd", "launcher", "select", "select_steps", "output_dir", "executor",
                      "slots", "gpus_per_run"):
                if data.get(k) is not None:
                    setattr(spec, k, data[k])
            sl = data.get("slurm")
            if sl is not None:
                if not isinstance(sl, dict):
                    raise SweepError(f"{path}: slurm must be a mapping ({', '.join(sorted(SLURM_KEYS))})")
                spec.slurm.update(parse_slurm(sl, f"{path}: slurm.{{k}}"))
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
    for k in ("eval", "heldout", "eval_cmd", "launcher", "select", "select_steps", "output_dir", "executor",
              "slots", "gpus_per_run"):
        if getattr(args, k, None) is not None:
            setattr(spec, k, getattr(args, k))
    spec.slurm.update(parse_slurm({k: getattr(args, f"slurm_{k}") for k in SLURM_KEYS
                                   if getattr(args, f"slurm_{k}", None) is not None}, "--slurm_{k}"))
    if args.eval_args is not None:
        spec.eval_args = shlex.split(args.eval_args)
    if args.prune_checkpoints:
        spec.prune_checkpoints = True
    spec.train_args = list(args.train_args)
    validate_spec(spec, file_data, also_suggest=tuple(getattr(args, "sweep_flags", ())))
    return spec


def validate_spec(spec: Spec, file_data: dict | None = None, also_suggest: tuple[str, ...] = ()) -> None:
    """``also_suggest``: the sweep's own flags, suggested beside the train flags for a typo (``sftgo sweep`` passes
    them as ``args.sweep_flags``)."""
    from ..config import check_keys, check_train_flags, field_names

    check_keys(spec.grid, "--grid")
    flags = [a[2:].split("=", 1)[0].replace("-", "_") for a in spec.train_args if a.startswith("--")]
    flags = [f[3:] if f.startswith("no_") and f not in field_names() else f for f in flags]  # --no_<bool>
    if spec.train_args and spec.train_args[0].startswith("--"):  # one line for a typo, with the closest names
        check_train_flags(spec.train_args, also_suggest=also_suggest)
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
    if spec.executor not in EXECUTORS:
        raise SweepError(f"executor {spec.executor!r}: one of {', '.join(EXECUTORS)}")
    for k in ("slots", "gpus_per_run"):
        v = getattr(spec, k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if k == "slots" else 0)):
            raise SweepError(f"{k} {v!r}: a whole number >= {1 if k == 'slots' else 0}")
    EXECUTORS[spec.executor].check_spec(spec)
    from ..config import KEEP_CHECKPOINTS

    if spec.keep_checkpoints_given not in (None, *KEEP_CHECKPOINTS):
        raise SweepError(f"keep_checkpoints {spec.keep_checkpoints_given!r}: one of {', '.join(KEEP_CHECKPOINTS)}")
    if spec.prune_checkpoints and spec.keep_checkpoints_given not in (None, "none"):
        raise SweepError(f"prune_checkpoints is keep_checkpoints none, but the runs are also given keep_checkpoints "
                         f"{spec.keep_checkpoints_given}: drop one of the two")
    if spec.eval_cmd and "{run_dir}" not in spec.eval_cmd:
        raise SweepError("--eval_cmd must contain {run_dir} (where the run directory goes)")


def parse_slurm(values: dict, where: str) -> dict:
    """The SLURM options (sweep file `slurm:` or --slurm_KEY), each checked against its type; ``where`` names an
    option in messages, with {k} for its key."""
    out = {}
    for k, v in values.items():
        source = where.format(k=k)
        if k not in SLURM_KEYS:
            raise SweepError(f"{source}: not a SLURM option; known: {', '.join(sorted(SLURM_KEYS))}")
        want = SLURM_KEYS[k]
        if want is list:
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise SweepError(f"{source}: shell lines, a string or a list of strings (e.g. 'module load cuda')")
        else:
            try:
                v = want(v)
            except (TypeError, ValueError):
                raise SweepError(f"{source} {v!r}: expected {want.__name__}") from None
        out[k] = v
    return out
