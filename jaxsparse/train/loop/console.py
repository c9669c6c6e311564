"""What the trainer prints: one line per event, from process 0, flushed (and to the absl log).

`format_duration` is the one formatter of durations (the trainer, the sweep runner and its
report use it); `Progress` is the per-log-interval line, whose ETA is measured from the first
completed step, so it excludes the compilation of the train step.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from absl import logging

if TYPE_CHECKING:  # types only: the sweep imports the formatters here without the loop
    from jaxsparse.train.loop.actions import StepOutcome
    from jaxsparse.train.loop.session import Due
    from jaxsparse.train.resolve.run import Run


def format_duration(seconds: float) -> str:
    """'1h02m03s', '4m05s' (whole seconds; negative counts as 0)."""
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def say(message: str) -> None:
    """A console line from process 0 (stdout, flushed), also sent to the absl log."""
    logging.info(message)
    import jax
    if jax.process_index() == 0:
        print(message, flush=True)


def count(n: float) -> str:
    """A parameter or token count in short form: 5.24M, 1.20B, 786K."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def startup_line(run: Run, workdir: str, start_step: int) -> str:
    """'58m model (57.94M params, 46.4M prunable), 1,000 steps, 2.05B tokens, batch 256 x 2048,
    mesh data=1 fsdp=8 tensor=1, workdir runs/x' (and where it resumes)."""
    p = run.plan
    mesh = " ".join(f"{k}={v}" for k, v in p.mesh.items())
    where = f"resuming at step {start_step}" if start_step else "from scratch"
    return (f"{p.size} model ({count(p.params.total)} params, {count(p.params.prunable)} "
            f"prunable), {run.steps:,} steps, {count(p.tokens)} tokens, batch "
            f"{run.batch_size} x {run.seq_len}, pruning {run.schedule.kind} to "
            f"{run.schedule.final_sparsity:g}, mesh {mesh}, workdir {workdir}, {where}")


class Progress:
    """A console line per log interval: step, loss, density, tokens/s, elapsed and ETA.

    The ETA extrapolates the time since the first step *completed* (`started(step)`), so the
    step's compilation is not counted in it; until a second step is done it shows '?'.
    """

    def __init__(self, total_steps: int):
        self.total = total_steps
        self.t0 = time.time()
        self.first_step: int | None = None
        self.t_first = 0.0

    def started(self, step: int, now: float | None = None) -> None:
        """Mark that `step` steps are done (the first call fixes the ETA's origin)."""
        if self.first_step is None:
            self.first_step, self.t_first = step, time.time() if now is None else now

    def line(self, step: int, loss: float, density: float, tokens_per_s: float,
             now: float | None = None) -> str:
        """The console line once `step` steps are done (`now`: time.time() by default)."""
        now = time.time() if now is None else now
        done = step - self.first_step if self.first_step is not None else 0
        eta = format_duration((now - self.t_first) / done * (self.total - step)) if done > 0 else "?"
        return (f"step {step:>7d}/{self.total} ({100 * step / self.total:5.1f}%)  "
                f"loss {loss:7.4f}  density {density:6.4f}  {tokens_per_s:10,.0f} tok/s  "
                f"elapsed {format_duration(now - self.t0)}  ETA {eta}")

    def opened(self, resumed: str | None, startup: str) -> None:
        """The lines of a session opening: where it resumed (None: from scratch), the startup line."""
        for line in [*([resumed] if resumed else []), startup]:
            say(line)

    def report(self, done: int, due: Due, out: StepOutcome, first_done: tuple[int, float] | None,
               checkpoint: str | None, finished: str | None = None) -> None:
        """The lines after step `done` (`due`: the loop's `Due`; `out`: its `StepOutcome`): new
        warnings, the progress line (log steps and SIGTERM), the checkpoint saved at path
        `checkpoint` (None: none saved), the SIGTERM stop, the eval, then `finished` (the run's
        last line).
        `first_done`: (step, time) the first step of this process completed, the ETA's origin."""
        if first_done is not None:
            self.started(*first_done)
        for line in out.lines:
            say(line)
        if out.train is not None and (due.log or due.stop):
            say(self.line(done, out.train["loss"], out.train["density"], out.train["tokens_per_s"]))
        if checkpoint is not None:
            say(f"checkpoint: saving step {done} to {checkpoint}")
        if due.stop:
            say(f"SIGTERM: checkpoint saved at step {done}; rerun the same command to resume")
        if out.eval_loss is not None:
            say(f"eval at step {done}: loss {out.eval_loss:.4f} over {out.eval_batches} batches")
        if finished:
            say(finished)
