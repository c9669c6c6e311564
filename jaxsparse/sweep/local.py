"""Run a sweep on this machine: K trainer subprocesses at a time, resumable and idempotent.

A run whose WORKDIR/summary.json was written with the run's current spec is skipped; a summary
whose config differs from the spec's (the sweep file was edited after the run finished) stops
the runner before it starts anything (exit 2, naming the run and the changed fields). Any other
run is (re)started with the same trainer command; the trainer resumes from WORKDIR/checkpoints
by itself. A run whose workdir is locked by a live trainer (WORKDIR/trainer.lock) is reported
and not started. Each run's stdout and stderr are appended to WORKDIR/log.txt. With K > 1 every
run is pinned to its own share of the CPU cores (sched_setaffinity) and told to use that many
threads.

Trainers never outlive the runner: each runs in its own process group, SIGINT/SIGTERM are
forwarded to the groups as SIGTERM (the trainers checkpoint and stop; rerun to resume), and on
Linux each trainer gets SIGTERM from the kernel when the runner dies, even by SIGKILL
(prctl PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable

import numpy as np

from jaxsparse.sweep.collect import matching_summary
from jaxsparse.sweep.collect import finished as finished_runs
from jaxsparse.sweep.spec import RunSpec, SweepError
from jaxsparse.errors import EXIT_PREEMPTED
from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir import lock
from jaxsparse.train.loop.console import format_duration

__all__ = ["LocalRunner", "is_done"]
HISTORY = "runner.jsonl"  # in the sweep root: one record per finished or failed trainer process


def is_done(root: str, run: RunSpec) -> bool:
    """Whether `run` finished with its current spec (SweepError if its summary is another's)."""
    return matching_summary(run, root) is not None


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _child_setup(parent: int, cores: list[int] | None) -> None:
    """preexec_fn of a trainer (in its own session by then): SIGTERM when the runner dies (Linux),
    the runner's CPU priority kept, then CPU pinning."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl: do not start at all
            os._exit(EXIT_PREEMPTED)  # "try again": a rerun starts it
        _keep_niceness()
    if cores:
        os.sched_setaffinity(0, cores)


def _keep_niceness() -> None:
    """Give this process's autogroup the process's own niceness. Under Linux's autogroup scheduling
    (on by default in many distributions) each session is one CPU-share group at nice 0, and the
    groups share the CPU equally whatever their processes' `nice`: a trainer in its own session would
    take as much CPU as all of the user's other work together, though the runner was started with
    `nice -n 19`. Nothing to do where there are no autogroups."""
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(os.getpriority(os.PRIO_PROCESS, 0)))
    except OSError:
        pass


def lock_holder(workdir: str) -> str | None:
    """Why a trainer must not start on `workdir` now (a live or uncheckable lock), else None."""
    record = lock.read_lock(workdir)
    if record is None or lock.holder_state(record) == "stale":
        return None  # a stale lock: the trainer takes it over with a message
    return (f"its workdir is locked by {lock.describe(record)} "
            f"({layout.lock_path(workdir)})")


@dataclasses.dataclass
class _Active:
    run: RunSpec
    proc: subprocess.Popen
    log: object
    started: float
    slot: int


@dataclasses.dataclass
class _Tally:
    """What the sweep's runs have come to so far: the progress line and the exit code read it."""

    skipped: int
    finished: int = 0
    failed: list[RunSpec] = dataclasses.field(default_factory=list)
    timed: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (weight, wall s) of finished runs
    t0: float = dataclasses.field(default_factory=time.time)
    last_progress: float = 0.0


def _slot_cores(slot: int, parallel: int) -> list[int] | None:
    """The CPU cores of parallel slot `slot` (None: no pinning, one run uses everything)."""
    if parallel <= 1 or not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // parallel)
    start = (slot * share) % len(cores)
    return cores[start:start + share] or cores[:share]


def _env(cores: list[int] | None) -> dict[str, str]:
    env = dict(os.environ)
    if cores is not None:
        threads = str(len(cores))
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                            + ("false" if len(cores) == 1 else "true")).strip()
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = threads
    return env


class LocalRunner:
    """Runs `runs` under `root`, `parallel` at a time; `weights` (e.g. planned FLOPs) give ETA."""

    def __init__(self, runs: list[RunSpec], root: str, parallel: int = 1,
                 weights: dict[str, float] | None = None,
                 say: Callable[[str], None] = lambda m: print(m, flush=True),
                 progress_every_s: float = 60.0):
        if parallel < 1:
            raise SweepError(f"--parallel={parallel} is not allowed: expected an integer >= 1")
        self.runs, self.root, self.parallel = runs, root, parallel
        self.weights = weights or {r.name: 1.0 for r in runs}
        self.say = say
        self.progress_every_s = progress_every_s
        self._stop_signal: int | None = None

    def command(self, run: RunSpec) -> list[str]:
        from jaxsparse.sweep.spec import resolve_config_file, split_config
        path, arg = split_config(run.config)
        config = resolve_config_file(path) + (f":{arg}" if arg is not None else "")
        workdir = os.path.join(self.root, run.workdir)
        return [sys.executable, "-m", "jaxsparse.train", *run.train_args(workdir, config)]

    def _start(self, run: RunSpec, slot: int) -> _Active:
        workdir = os.path.join(self.root, run.workdir)
        os.makedirs(workdir, exist_ok=True)
        cmd = self.command(run)
        log = open(layout.runner_log_path(workdir), "a", encoding="utf-8")
        resumed = bool(layout.saved_steps(workdir))
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} "
                  f"{'resume' if resumed else 'start'}: {' '.join(cmd)}\n")
        log.flush()
        cores, parent = _slot_cores(slot, self.parallel), os.getpid()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(cores),
                                preexec_fn=lambda: _child_setup(parent, cores),
                                start_new_session=True)  # its own process group
        self.say(f"[{run.name}] {'resumed' if resumed else 'started'} "
                 f"(log: {layout.runner_log_path(workdir)})")
        return _Active(run, proc, log, time.time(), slot)

    def _on_signal(self, signum, frame) -> None:
        del frame
        self._stop_signal = signum

    def run(self) -> int:
        """Run everything not done; return 0 (all done), 1 (some failed) or 128+signal."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as err:
            raise SweepError(f"--root={self.root!r} cannot be created: {err}") from err
        done = finished_runs(self.runs, self.root)  # SweepError if a spec was edited: no start
        pending = [r for r in self.runs if r.name not in done]
        tally = _Tally(skipped=len(self.runs) - len(pending))
        if tally.skipped:
            self.say(f"{tally.skipped} of {len(self.runs)} runs already have {layout.SUMMARY}: skipped")
        active: list[_Active] = []
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or active:
                if self._stop_signal is not None:
                    return self._shutdown(active)
                self._fill_slots(pending, active, tally)
                time.sleep(0.2)
                self._reap(active, tally)
                now = time.time()
                if now - tally.last_progress >= self.progress_every_s or not (pending or active):
                    tally.last_progress = now
                    self.say(self._progress(tally, active, pending, now))
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        if tally.failed:
            self.say(f"{len(tally.failed)} run(s) failed: {', '.join(r.name for r in tally.failed)}; "
                     "rerun the same command to retry them (finished runs are skipped)")
            return 1
        return 0

    def _fill_slots(self, pending: list[RunSpec], active: list[_Active], tally: _Tally) -> None:
        """Start pending runs on the free slots; a run whose workdir another trainer holds fails."""
        free = [s for s in range(self.parallel) if s not in {a.slot for a in active}]
        while pending and free:
            run = pending.pop(0)
            held = lock_holder(os.path.join(self.root, run.workdir))
            if held:  # another trainer (e.g. of a runner killed earlier) is on it
                self.say(f"[{run.name}] not started: {held}")
                tally.failed.append(run)
                continue
            active.append(self._start(run, free.pop(0)))

    def _reap(self, active: list[_Active], tally: _Tally) -> None:
        """Take the trainers that exited off `active`, recording and reporting each."""
        for a in list(active):
            code = a.proc.poll()
            if code is None:
                continue
            active.remove(a)
            a.log.close()
            wall = time.time() - a.started
            self._record(a.run, code, wall)
            if code == 0 and is_done(self.root, a.run):
                tally.finished += 1
                tally.timed.append((self.weights[a.run.name], wall))
                self.say(f"[{a.run.name}] done in {format_duration(wall)}")
            else:
                tally.failed.append(a.run)
                why = ("stopped by SIGTERM, checkpoint saved; rerun to resume"
                       if code == EXIT_PREEMPTED else f"FAILED (exit {code})")
                self.say(f"[{a.run.name}] {why} after {format_duration(wall)}; see "
                         f"{layout.runner_log_path(os.path.join(self.root, a.run.workdir))}")
            tally.last_progress = 0.0

    def _record(self, run: RunSpec, code: int, wall: float) -> None:
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, HISTORY), "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": run.name, "exit": code, "wall_s": round(wall, 2),
                                "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")

    def _eta(self, timed: list[tuple[float, float]], left: list[RunSpec]) -> str:
        """Seconds per run = a + b * weight, fitted to the finished runs (a, b >= 0), summed
        over the runs left (running ones counted whole) and divided by `parallel`."""
        if not timed:
            return "?" if left else "0m00s"
        w = np.array([x for x, _ in timed])
        t = np.array([y for _, y in timed])
        a, b = 0.0, float(t.sum() / max(w.sum(), 1e-30))
        if len(timed) >= 2 and np.ptp(w) > 0:
            b_fit, a_fit = np.polyfit(w, t, 1)
            if a_fit >= 0 and b_fit >= 0:
                a, b = float(a_fit), float(b_fit)
        seconds = sum(a + b * self.weights[r.name] for r in left) / self.parallel
        return format_duration(seconds)

    def _progress(self, tally: _Tally, active: list[_Active], pending: list[RunSpec], now: float) -> str:
        eta = self._eta(tally.timed, [a.run for a in active] + pending)
        return (f"progress: {tally.finished + tally.skipped}/{len(self.runs)} done ({tally.skipped} skipped), "
                f"{len(active)} running, {len(pending)} waiting, {len(tally.failed)} failed | "
                f"elapsed {format_duration(now - tally.t0)} | ETA {eta}")

    def _shutdown(self, active: list[_Active]) -> int:
        signum = self._stop_signal or signal.SIGTERM
        self.say(f"signal {signum}: asking {len(active)} running trainer(s) to checkpoint and "
                 "stop; rerun the same command to resume")
        for a in active:
            if a.proc.poll() is None:
                try:
                    os.killpg(a.proc.pid, signal.SIGTERM)  # the trainer's whole process group
                except ProcessLookupError:
                    pass
        for a in active:
            try:
                a.proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                a.proc.kill()
                a.proc.wait()
            a.log.close()
            self._record(a.run, a.proc.returncode, time.time() - a.started)
        return 128 + int(signum)
