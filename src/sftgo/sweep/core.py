"""The sweep itself: plan -> each run's status -> the runs that are not done, handed to an executor; ``sweep.json``
records what was submitted where (job ids, pids, exit codes), the run directories what is done."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from ..naming import run_name
from ..rundir import CONFIG, EVAL_DIR, FINAL, HELDOUT, SELECTION_HELDOUT, SWEEP_STATE
from .executors import EXECUTORS, Executor
from .plan import RunPlan, plan_runs, selection_runs
from .spec import Spec, SweepError
from .status import last_step, read_json, run_status
from .work import RunWork, pid_alive

POLL_S = 10.0  # how often a waiting sweep polls a scheduler (--poll_s: SLURM's squeue)
DETACHED = "detached"


def fmt_dur(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class SweepLock:
    """One sweep process per sweep directory. A lock file created with O_EXCL (atomic on NFS, where cluster sweeps
    live, unlike flock) holding host and pid; a lock left by a dead process on this host is taken over."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def owner(self) -> dict | None:
        rec = read_json(self.path)
        return rec if isinstance(rec, dict) else None

    def owner_alive(self) -> bool:
        rec = self.owner()
        return bool(rec) and (rec.get("host") != socket.gethostname() or pid_alive(rec.get("pid")))

    def __enter__(self):
        me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                rec = self.owner()
                if rec and rec.get("host") == socket.gethostname() and not pid_alive(rec.get("pid")):
                    self.path.unlink(missing_ok=True)  # its process died (kill -9, crash): stale
                    continue
                where = f"pid {rec.get('pid')} on {rec.get('host')}" if rec else "another process"
                raise SweepError(f"another sweep is running in {self.path.parent} ({where}); wait for it or stop it "
                                 f"(a lock left by a crashed sweep on another machine: remove {self.path})") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise SweepError(f"could not take {self.path}")

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


class Sweep:
    def __init__(self, spec: Spec, log=print, poll_s: float = POLL_S, detach: bool = False):
        self.spec = spec
        self.out = Path(spec.output_dir)
        self.log = log
        self.poll_s = poll_s
        self.detach = detach
        self.state_file = self.out / SWEEP_STATE
        self.state = {"runs": {}, "selection": None}
        self.t0 = time.time()
        self.durations: list[float] = []
        self.command = ""
        self._executor = None
        kind = EXECUTORS[spec.executor]
        if detach and not kind.detachable:
            need = " or ".join(k for k, x in EXECUTORS.items() if x.detachable)
            raise SweepError(f"--detach needs --executor {need} ({kind.why_not_detachable})")

    # ---------------------------------------------------------------- sweep.json (a record, not the source of truth)
    def load_state(self):
        old = read_json(self.state_file) if self.state_file.exists() else {}
        if not isinstance(old, dict):
            self.log(f"sweep: {self.state_file} unreadable; rebuilding it from the run directories")
            old = {}
        try:
            self.state["runs"] = {r["name"]: r for r in old.get("runs", [])}
        except (KeyError, TypeError):
            self.state["runs"] = {}
        self.state["selection"] = old.get("selection")

    def save_state(self, order: list[RunPlan]):
        names = [r.name for r in order]
        runs = [self.state["runs"][n] for n in names if n in self.state["runs"]]
        runs += [r for n, r in self.state["runs"].items() if n not in names]
        s = self.spec
        doc = {"format": 2, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": self.command,
               "executor": s.executor, "seeds": s.seeds, "grid": s.grid, "eval": s.eval, "heldout": s.heldout,
               "select": s.select, "select_steps": s.select_steps, "selection": self.state["selection"],
               # what `sftgo sweep --status` needs to read each run's status from its directory
               "eval_signature": self.eval_signature(), "select_signature": self.eval_signature(heldout_only=True),
               "runs": runs}
        tmp = self.state_file.with_name(f".sweep.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str))
        os.replace(tmp, self.state_file)

    def entry(self, r: RunPlan) -> dict:
        e = self.state["runs"].setdefault(r.name, {"name": r.name})
        e.update({"dir": os.path.relpath(r.dir, self.out), "seed": r.seed, "role": r.role, "point": r.point,
                  "settings": r.settings})
        e.setdefault("state", "pending")
        return e

    # ---------------------------------------------------------------- evaluation and commands
    def eval_signature(self, heldout_only=False) -> str | None:
        s = self.spec
        if heldout_only:
            return json.dumps(["select", s.heldout, s.eval_args, s.eval_cmd]) if s.select else None
        if not (s.eval or s.heldout or s.eval_cmd):
            return None
        return json.dumps([s.eval, s.heldout, s.eval_args, s.eval_cmd])

    def gpus_per_run(self) -> int:
        return self.executor().gpus_per_run

    def _python_m(self) -> list[str]:
        if self.spec.launcher:
            return [*shlex.split(self.spec.launcher), "-m", "sftgo.cli"]
        k = self.gpus_per_run()
        if k > 1:  # several GPUs per run: one process per GPU; --standalone picks a free port (slots run side by side)
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(k),
                    "-m", "sftgo.cli"]
        return [sys.executable, "-m", "sftgo.cli"]

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

    def check_matches(self, r: RunPlan, cfg: dict):
        """A run directory must hold the run this sweep would train there."""
        import yaml

        f = r.dir / CONFIG
        if not f.exists():
            return
        have = yaml.safe_load(f.read_text()) or {}
        for k, v in {**r.settings, "seed": r.seed}.items():
            if k in ("stop_after_steps",):
                continue
            if k in have and json.dumps(have[k], default=str) != json.dumps(cfg.get(k), default=str):
                raise SweepError(f"{r.dir} holds a run with {k}={have[k]!r}, but this sweep puts {k}={cfg.get(k)!r} "
                                 "there: use another --output_dir or remove that directory")

    def work(self, r: RunPlan, stop_after: int | None = None, heldout_only=False) -> RunWork:
        """Writes the run's YAML (SWEEP/configs/NAME.yaml) and returns its work."""
        import yaml

        cfg = r.config()
        if self.spec.prune_checkpoints:
            cfg["keep_checkpoints"] = "none"
        if stop_after:
            cfg["stop_after_steps"] = int(stop_after)
        else:
            cfg.pop("stop_after_steps", None)
        self.check_matches(r, cfg)
        cfg_path = self.out / "configs" / f"{r.name}.yaml"
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cfg_path.with_name(f".{cfg_path.name}.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
        os.replace(tmp, cfg_path)
        sig = self.eval_signature(heldout_only)
        logs = self.out / "logs"
        return RunWork(name=r.name, run_dir=str(r.dir), train_cmd=[*self._python_m(), "train", str(cfg_path),
                                                                   *self.spec.train_args],
                       eval_cmd=self.eval_command(r, heldout_only) if sig else None, eval_signature=sig,
                       stop_after=int(stop_after) if stop_after else None,
                       train_log=str(logs / f"{r.name}.train.log"), eval_log=str(logs / f"{r.name}.eval.log"))

    def status(self, r: RunPlan, stop_after=None, heldout_only=False):
        return run_status(r.dir, self.eval_signature(heldout_only), stop_after)

    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = EXECUTORS[self.spec.executor].from_spec(self.spec, self.out, self.poll_s)
        return self._executor

    # ---------------------------------------------------------------- one phase: the runs that are not done
    def process(self, runs: list[RunPlan], order: list[RunPlan], stop_after: int | None = None,
                heldout_only=False):
        """Trains (or resumes) and evaluates every run of ``runs`` that is not done; returns the names that failed,
        or DETACHED when jobs were left running (--detach). The one loop of every executor: attach to the jobs a
        stopped sweep left, submit the others, then poll until each has ended."""
        n = len(runs)
        index = {r.name: i for i, r in enumerate(runs, start=1)}
        todo = []
        for r in runs:
            e = self.entry(r)
            if self.status(r, stop_after, heldout_only).done:
                e["state"] = "selection-evaluated" if stop_after else "complete"
                self.log(f"[{index[r.name]}/{n}] {r.name}: complete, skipped")
                self.prune(r, stop_after)
            else:
                todo.append(r)
        self.save_state(order)
        if not todo:
            return []
        ex = self.executor()
        records = self.state["runs"]
        works = {r.name: self.work(r, stop_after, heldout_only) for r in todo}
        budget = f" (selection budget: {stop_after} steps)" if stop_after else ""
        attached = ex.attach({r.name: records[r.name] for r in todo})
        for r in todo:
            if r.name in attached:
                self.log(f"[{index[r.name]}/{n}] {r.name}: attached to {ex.label(records[r.name]['job_id'])} "
                         f"({attached[r.name]}), not submitted again")
        submit = [r for r in todo if r.name not in attached]
        jobs = {r.name: records[r.name]["job_id"] for r in todo if r.name in attached}
        try:
            for r, jid in zip(submit, ex.submit([works[r.name] for r in submit]) if submit else []):
                jobs[r.name] = jid
                if jid is None:  # a child of this process: its events say when it starts
                    continue
                e = records[r.name]
                e.update(state="queued", job_id=jid, submitted=time.strftime("%Y-%m-%dT%H:%M:%S"),
                         attempts=e.get("attempts", 0) + 1, pid=None, train_command=shlex.join(works[r.name].train_cmd),
                         **ex.job_record(jid))
                self.log(f"[{index[r.name]}/{n}] {r.name}: submitted as {ex.label(jid)}{budget}")
            self.save_state(order)
            if self.detach:
                self.log(f"sweep: {len(submit)} jobs submitted, {len(attached)} already queued or running; detached. "
                         f"`sftgo sweep --status {self.out}` shows their states; the same command again attaches to "
                         "them (and goes on to the next phase once they are done)")
                return DETACHED
            failed = self._wait(ex, jobs, {r.name: r for r in todo}, order, index, stop_after, heldout_only)
        except KeyboardInterrupt:
            ex.interrupt()
            for r in todo:
                e = records[r.name]
                if e.get("state") in ("training", "evaluating"):
                    e["state"] = "interrupted"
            self.save_state(order)
            raise
        return [r.name for r in todo if r.name in failed]

    def progress(self, i: int, n: int, name: str, what: str, left: int, slots: int = 1):
        el = time.time() - self.t0
        rem = (sum(self.durations) / len(self.durations) * left / max(1, slots)) if self.durations else None
        self.log(f"[{i}/{n}] {name}: {what} | elapsed {fmt_dur(el)}, remaining ~{fmt_dur(rem)}"
                 + ("" if self.durations else " (estimate after the first run)"))

    def _wait(self, ex: Executor, jobs: dict, plans: dict, order, index, stop_after, heldout_only) -> list[str]:
        """Polls ``jobs`` ({run: job id}) until every one has ended, recording what the executor's events say in
        sweep.json; returns the runs that failed."""
        n = len(index)
        pending = dict(jobs)
        started: dict[str, float] = {}
        shown: dict[str, str] = {}
        failed = []
        last_summary = time.time()
        while pending:
            events = ex.poll(pending)
            for ev in events:
                if ev.run is None:
                    self.log(f"sweep: {ev.data['text']}")
                elif ev.run in pending:
                    self._on_event(ex, ev, plans[ev.run], pending, started, shown, failed, index[ev.run], n,
                                   stop_after, heldout_only)
            if events:
                self.save_state(order)
            if pending and ex.summary_s is not None and time.time() - last_summary > ex.summary_s:
                states = [self.state["runs"][x]["state"] for x in pending]
                self.log(f"sweep: {states.count('running')} running, {states.count('queued')} queued, "
                         f"{len(jobs) - len(pending)} of {len(jobs)} ended | elapsed {fmt_dur(time.time() - self.t0)}")
                last_summary = time.time()
            if pending:
                ex.wait()
        return failed

    def _on_event(self, ex, ev, r: RunPlan, pending, started, shown, failed, i, n, stop_after, heldout_only):
        name, kind, d = ev.run, ev.kind, ev.data
        e = self.state["runs"][name]
        job = pending[name]
        if kind in ("train", "eval"):
            started.setdefault(name, time.time())
            left = len(pending) - 1  # the others not finished yet
            if kind == "train":
                how = "resuming from its last checkpoint" if d["resumed_from"] else "training"
                if stop_after:
                    how += f" (selection budget: {stop_after} steps)"
                e.update(state="training", started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                         resumed=bool(d["resumed_from"]), attempts=e.get("attempts", 0) + 1,
                         train_command=d["command"], host=socket.gethostname(), job_id=job)
            else:
                how = "evaluating"
                e.update(state="evaluating", eval_command=d["command"])
            self.progress(i, n, name, how, left, ex.slots)
        elif kind == "pid":
            e["pid"] = d["pid"]
        elif kind == "trained":
            e.update(train_rc=d["rc"], train_time_s=d["seconds"])
            e["state"] = "trained" if d["rc"] == 0 else "failed"
        elif kind == "evaluated":
            e.update(eval_rc=d["rc"], eval_time_s=d["seconds"])
            e["state"] = "eval-failed" if d["rc"] else ("selection-evaluated" if stop_after else "complete")
        elif kind == "state":
            if shown.get(name) != d["state"]:
                step = last_step(r.dir)
                self.log(f"[{i}/{n}] {name}: {d['state']} ({ex.label(job)}"
                         + (f", at step {step}" if step else "") + f") | elapsed {fmt_dur(time.time() - self.t0)}")
                shown[name] = d["state"]
            e["state"] = d["state"]
        elif kind == "done":
            del pending[name]
            if name in started:
                self.durations.append(time.time() - started[name])
            ok = d["ok"] if d["ok"] is not None else self.status(r, stop_after, heldout_only).done
            if ok:
                e["state"] = "selection-evaluated" if stop_after else "complete"
                if job is not None:
                    self.log(f"[{i}/{n}] {name}: done ({ex.label(job)}) | elapsed {fmt_dur(time.time() - self.t0)}")
                self.prune(r, stop_after)
                return
            failed.append(name)
            e["state"] = "eval-failed" if d.get("stage") == "evaluation" else "failed"
            if "error" in d:
                e["error"] = d["error"]
            self._report_failure(name, d, job and ex.label(job))

    def _report_failure(self, name: str, d: dict, job: str | None):
        if d.get("log"):
            self.log(f"sweep: {name}: {d['stage']} failed (exit {d['rc']}); log {d['log']}:\n{_tail(Path(d['log']))}")
        elif d["ok"] is None:  # the job ended, the run directory says the run is not done
            logs = [p for p in (self.out / "logs" / f"{name}.train.log", self.out / "logs" / f"{name}.eval.log")
                    if p.exists()]
            self.log(f"sweep: {name}: {job} ended without finishing the run; job log {d['job_log']}"
                     + (f", run log {logs[-1]}:\n{_tail(logs[-1])}" if logs else ""))
        else:
            self.log(f"sweep: {name}: failed: {d.get('error') or d.get('stage')}")

    def prune(self, r: RunPlan, stop_after=None) -> None:
        """A complete run keeps what ``keep_checkpoints`` says: its training applied the setting when it completed;
        a run found complete (trained before, perhaps with another setting) gets the sweep's now, where the sweep
        states one (:attr:`Spec.keep_checkpoints`). Selection runs keep theirs: the chosen one resumes from it."""
        from ..checkpoints import apply_keep_checkpoints
        from .status import is_trained

        keep = self.spec.keep_checkpoints
        if keep is None or stop_after or r.role == "select" or not is_trained(r.dir) or not (r.dir / FINAL).is_dir():
            return
        gone = apply_keep_checkpoints(r.dir, keep)
        if gone:
            self.log(f"  {r.name}: removed {', '.join(p.name for p in gone)} (keep_checkpoints {keep}; final/ stays)")

    # ---------------------------------------------------------------- the sweep
    def run(self, dry_run=False) -> int:
        runs, points = plan_runs(self.spec)
        self.out.mkdir(parents=True, exist_ok=True)
        self.load_state()
        if dry_run:
            return self._print_plan(runs, points)
        with SweepLock(self.out / ".sweep.lock"):
            if self.spec.select and len(points) > 1:
                return self._run_select(runs, points)
            for r in runs:
                self.entry(r)
            self.save_state(runs)
            done = sum(self.status(r).done for r in runs)
            self.log(f"sweep: {len(runs)} runs in {self.out} ({done} complete, {len(runs) - done} to do)")
            failed = self.process(runs, runs)
            return self._finish(runs, failed)

    def _print_plan(self, runs, points):
        if self.spec.select and len(points) > 1:
            chosen = (self.state.get("selection") or {}).get("chosen")
            for r in selection_runs(self.spec, points):
                self.log(f"{r.name}\tselect ({self.spec.select_steps} steps)\t"
                         + " ".join(f"{k}={v}" for k, v in r.settings.items()))
            self.log("then the chosen point and the baseline over all seeds"
                     + (": " + ", ".join(r.name for r in runs if r.role == "baseline" or r.point == chosen)
                        if chosen else ""))
            return 0
        for r in runs:
            st = self.status(r)
            state = "complete" if st.done else ("resume" if st.checkpoint else "train")
            self.log(f"{r.name}\t{state}\t" + " ".join(f"{k}={v}" for k, v in r.settings.items()))
        return 0

    def _finish(self, runs, failed) -> int:
        self.save_state(runs)
        took = fmt_dur(time.time() - self.t0)
        if failed == DETACHED:
            return 0
        if failed:
            self.log(f"sweep: {len(failed)} of {len(runs)} runs failed ({', '.join(failed)}); run the same command "
                     f"again to retry them (took {took})")
            return 1
        self.log(f"sweep: all {len(runs)} runs complete in {self.out} (took {took}); "
                 f"`sftgo report {self.out} --output_dir {self.out / 'report'}` makes the tables")
        return 0

    def _run_select(self, runs, points) -> int:
        s = self.spec
        seed0 = s.seeds[0]
        sel_runs = selection_runs(s, points)
        chosen = (self.state.get("selection") or {}).get("chosen")
        if chosen not in {p["name"] for p in points}:
            chosen = None  # no selection yet, or one made for another grid: select again
        if chosen is None:
            self.log(f"sweep: selection phase: {len(sel_runs)} grid points x {s.select_steps} steps (seed {seed0}), "
                     "ranked by held-out worst-group loss")
            failed = self.process(sel_runs, sel_runs, stop_after=int(s.select_steps), heldout_only=True)
            if failed == DETACHED:
                return 0
            scores = []
            for r in sel_runs:
                h = read_json(r.dir / EVAL_DIR / HELDOUT)
                v = h.get("loss_worst") if isinstance(h, dict) else None
                scores.append({"name": r.point, "run": r.name, "loss_worst": v})
            ok = [p for p in scores if isinstance(p["loss_worst"], (int, float))]
            if not ok:
                self.save_state(sel_runs)
                raise SweepError("selection: no grid point produced eval/heldout.json with loss_worst; see "
                                 f"{self.out / 'logs'} ({', '.join(failed) or 'no failures recorded'})")
            chosen = min(ok, key=lambda p: p["loss_worst"])["name"]
            self.state["selection"] = {"criterion": s.select, "steps": int(s.select_steps), "seed": seed0,
                                       "points": scores, "chosen": chosen}
            self.log("sweep: selection: " + ", ".join(f"{p['name']}={p['loss_worst']}" for p in scores)
                     + f" -> {chosen}")
            # The chosen point's short run continues to the full budget in the sweep directory (one rename).
            src = self.out / "select" / run_name(chosen, seed0)
            dst = self.out / run_name(chosen, seed0)
            if src.exists() and not dst.exists():
                if (src / EVAL_DIR / HELDOUT).exists():
                    os.replace(src / EVAL_DIR / HELDOUT, src / SELECTION_HELDOUT)
                os.replace(src, dst)
            self.save_state(sel_runs)
        final = [r for r in runs if r.role == "baseline" or r.point == chosen]
        for r in final:
            self.entry(r)
        self.save_state(final)
        self.log(f"sweep: full budget: {len(final)} runs ({chosen} and the baseline over seeds {s.seeds})")
        failed = self.process(final, final)
        return self._finish(final, failed)


def _tail(path: Path, n=15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------------- --status


def sweep_status(sweep_dir: str | Path) -> list[dict]:
    """Every run of a sweep directory: name, state (done / running / queued / failed; interrupted or pending when
    its sweep is not running), SLURM job id or local pid, last step. From the run directories, what each executor
    tells of the runs it knows (squeue, a live child process), and what sweep.json recorded."""
    d = Path(sweep_dir)
    doc = read_json(d / SWEEP_STATE)
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise SweepError(f"{d}: no readable sweep.json: not a sweep directory (sftgo sweep ... --output_dir {d})")
    lock = SweepLock(d / ".sweep.lock")
    sweep_alive = lock.owner_alive()
    told = {}  # what the sweep's executor (every executor, for a sweep.json that does not name one) tells
    for kind in [EXECUTORS[doc["executor"]]] if doc.get("executor") in EXECUTORS else EXECUTORS.values():
        told.update(kind.run_states(doc["runs"], sweep_alive))
    rows = []
    for e in doc["runs"]:
        run_dir = d / e.get("dir", e["name"])
        sel = e.get("role") == "select"
        st = run_status(run_dir, doc.get("select_signature") if sel else doc.get("eval_signature"),
                        doc.get("select_steps") if sel else None)
        job = e.get("job_id")
        chosen = (doc.get("selection") or {}).get("chosen")
        if st.done or (sel and chosen == e.get("point") and not run_dir.exists()):
            state = "done"  # (the chosen selection run was moved on to continue as the full-budget run)
        elif e["name"] in told:
            state = told[e["name"]]  # queued / running / failed (a job that left SLURM without finishing its run)
        elif e.get("state") in ("failed", "eval-failed"):
            state = "failed"
        elif e.get("state") in ("training", "evaluating", "interrupted") and not sweep_alive:
            state = "interrupted"  # its sweep was stopped: the same command resumes it
        elif sweep_alive:
            state = "queued"  # waiting for a slot of the running sweep
        else:
            state = "pending"
        rows.append({"name": e["name"], "state": state, "job_id": job, "pid": e.get("pid") if not job else None,
                     "last_step": st.last_step, "dir": str(run_dir)})
    return rows


def print_status(sweep_dir: str | Path, log=print) -> int:
    rows = sweep_status(sweep_dir)
    w = max([len(r["name"]) for r in rows] + [4])
    log(f"{'RUN'.ljust(w)}  {'STATE':11}  {'JOB':12}  LAST STEP")
    for r in rows:
        job = r["job_id"] or (f"pid-{r['pid']}" if r["pid"] and r["state"] == "running" else "–")
        log(f"{r['name'].ljust(w)}  {r['state']:11}  {job:12}  "
            f"{r['last_step'] if r['last_step'] is not None else '–'}")
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    log(", ".join(f"{v} {k}" for k, v in counts.items()) or "no runs")
    return 0
