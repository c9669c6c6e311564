"""The training loop of one resolved `Run`: named actions around the jitted sharded step.

`train(config, workdir)` resolves the run (`prepare`: everything checked before any compute),
resumes from the latest complete checkpoint in WORKDIR/checkpoints, and runs the steps. After a
step the loop decides what is due and takes the named actions: `fetch` (metrics to host and the
divergence check), `record_event` (a pruning event), `log` (metrics.jsonl and the console),
`checkpoint` (every `checkpoint.every_steps`, and on SIGTERM), `evaluate`, then `finish` (final
checkpoint, eval, summary.json, training.png). An ExitStack closes the metrics writer, the
checkpointer and the data iterator on every exit path.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import jax
from absl import logging
import ml_collections
import numpy as np

from jaxsparse.errors import ConfigError, Fault
from jaxsparse.pruning import summary
from jaxsparse.train.workdir import layout
from jaxsparse.train.loop import report
from jaxsparse.train.resolve import environment
from jaxsparse.train.workdir import lock as workdir_lock
from jaxsparse.train.workdir.check import make_writable, move_previous_outputs, outputs_to_set_aside
from jaxsparse.train.workdir.checkpoints import Checkpointer
from jaxsparse.train.loop.console import say, startup_line
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.resolve.run import Run, prepare, with_grad_accum
from jaxsparse.train.steps import compiled
from jaxsparse.train.loop.session import Session, open_session


class TrainingFault(Fault):
    """A fault after compute started (I/O error, disk full); the message says what was saved
    and how to resume. The command line exits 1 at once: the checkpointer and the metrics writer
    are closed before it is raised."""

    at_once = True


@dataclasses.dataclass(frozen=True)
class Due:
    """Which actions are due after a step."""

    log: bool
    event: bool
    checkpoint: bool
    eval: bool
    stop: bool

    def any(self) -> bool:
        return self.log or self.checkpoint or self.eval or self.stop


def due_after(run: Run, done: int, preempt: Preemption) -> Due:
    """The actions due once `done` steps are done (processes agree on `stop` at log and
    checkpoint steps; a single process checks it at every step)."""
    event = bool(run.schedule.is_event(done, run.steps)) and done < run.steps
    log = done % run.log_every == 0 or done == run.steps or event
    ckpt = bool(run.checkpoint_every and done % run.checkpoint_every == 0)
    ev = bool(run.eval_every and done % run.eval_every == 0 and done < run.steps)
    if jax.process_count() == 1:
        stop = preempt.requested
    else:
        stop = preempt.agreed() if (log or ckpt) else False
    return Due(log=log, event=event, checkpoint=ckpt, eval=ev, stop=stop)


def train(config: ml_collections.ConfigDict, workdir: str, *, restart: bool = False,
          force: bool = False) -> dict[str, Any]:
    """Run (or resume) the training described by `config` in `workdir`; return summary.json
    (or {"preempted_at": step} after a SIGTERM). `restart`: start over, moving a previous run's
    outputs aside; `force`: skip the memory check. Raises ConfigError (bad input, nothing
    computed), FloatingPointError (diverged) or TrainingFault (I/O fault after compute)."""
    created = not os.path.exists(workdir)  # removed again (if still empty) on bad input
    computing = False
    try:
        run = prepare(config)
        if run.grad_accum is not None and not force:
            environment.check_memory(run.plan.memory.total)  # "auto": in _compiled, once chosen
        make_writable(workdir)
        with contextlib.ExitStack() as stack:
            stack.enter_context(workdir_lock.held(workdir))  # one trainer per workdir
            if outputs_to_set_aside(workdir, restart):  # outputs no checkpoint resumes
                move_previous_outputs(workdir, "--restart" if restart else
                                      "metrics of an attempt that saved no checkpoint")
            ckpt = Checkpointer(workdir, run.checkpoint_keep, run.checkpoint_async)
            stack.callback(ckpt.close)
            finished = _finished_summary(run, ckpt, workdir)
            if finished is not None:
                return finished
            run, steps = _compiled(run, force)
            session = open_session(run, workdir, ckpt, stack, steps)
            say(startup_line(run, workdir, session.start))
            computing = True
            session.redo_missing_eval()  # killed between a checkpoint and its eval record
            return _run_steps(session, stack.enter_context(Preemption()))
    except ConfigError:
        if created:  # bad input writes nothing: not even the workdir this call made
            with contextlib.suppress(OSError):
                os.rmdir(workdir)
        raise
    except FloatingPointError:
        raise
    except Exception as err:  # noqa: BLE001 - after compute started, every fault is reported
        if not computing:
            raise
        logging.info("training fault", exc_info=True)  # the traceback, with --verbosity=0
        raise TrainingFault(_fault_message(err, workdir)) from err


def _compiled(run: Run, force: bool) -> tuple[Run, compiled.CompiledSteps]:
    """`run`'s steps compiled once for its mesh; "auto" decided by compiling for the local
    devices' memory, then the memory plan of the chosen grad_accum checked (unless `force`)."""
    steps = compiled.for_run(run, environment.device_bytes_limit())
    if run.grad_accum is None:
        run = with_grad_accum(run, steps.grad_accum)
        if not force:
            environment.check_memory(run.plan.memory.total)
    return run, steps


def _finished_summary(run: Run, ckpt: Checkpointer, workdir: str) -> dict | None:
    """summary.json when the workdir holds this run finished (its final checkpoint readable
    and of this run); a damaged final checkpoint is left to the verified restore."""
    final = ckpt.holds_final(run.steps, run.identity)  # identity checked before any write (ConfigError)
    summary_json = layout.read_summary(workdir) if final else None
    if summary_json is not None:
        say(f"nothing to do: {workdir} holds a finished run ({layout.summary_path(workdir)})")
    return summary_json


def _fault_message(err: BaseException, workdir: str) -> str:
    ckpts, steps = layout.checkpoint_dir(workdir), layout.saved_steps(workdir)
    saved = (f"the newest complete checkpoint is {ckpts}/{steps[-1]} (step {steps[-1]})"
             if steps else "no checkpoint was saved")
    cause = " ".join(f"{type(err).__name__}: {err}".split())
    return (f"fault during training ({cause}). {saved}; fix the cause (e.g. free disk space) "
            "and rerun the same command to resume from the newest checkpoint "
            "(--verbosity=0 prints the traceback).")


def _run_steps(s: Session, preempt: Preemption) -> dict[str, Any]:
    """The loop: one step, then the actions that are due."""
    for step in range(s.start, s.run.steps):
        s.advance()
        done = step + 1
        due = due_after(s.run, done, preempt)
        if not due.any():
            continue
        fetched = s.fetch(done)
        if due.event:
            s.record_event(done)
        s.log(done, *fetched, echo=due.log or due.stop)
        if due.checkpoint or due.stop:  # before any eval: a preempted run has little time left
            s.checkpoint(done, force=due.stop)
        if due.stop:
            say(f"SIGTERM: checkpoint saved at step {done}; rerun the same command to resume")
            return {"preempted_at": done}
        if due.eval:
            s.evaluate(done)
        s.restart_clock(done)  # eval and checkpoint time not in tokens/s
    return finish(s)


def finish(s: Session) -> dict[str, Any]:
    """Final checkpoint and eval, then summary.json and training.png (process 0)."""
    run, steps = s.run, s.run.steps
    if s.last_good != steps:
        s.checkpoint(steps, force=True)
    eval_loss = s.evaluate(steps)
    s.ckpt.wait()
    n_prunable, n_other = run.plan.params.prunable, run.plan.params.other
    final_active = n_prunable if s.dense else summary(s.masks()).active
    final = {"n_avg_realised": s.active_sum / steps, "n_final": n_other + final_active,
             "final_sparsity": 1.0 - final_active / n_prunable,
             "final_train_loss": float(np.mean(s.losses)) if s.losses else None,
             "final_eval_loss": eval_loss}
    if jax.process_index() != 0:
        return {}
    result = report.write_summary(s.workdir, run.config, run.plan, final)
    if run.plots:
        report.plot_run(s.workdir)
    say(f"done: eval loss {eval_loss:.4f}, sparsity {final['final_sparsity']:.4f}; "
        f"summary in {layout.summary_path(s.workdir)}")
    return result
