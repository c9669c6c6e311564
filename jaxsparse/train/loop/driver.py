"""The trainer, top to bottom: `train(config, workdir)` resolves the run (`prepare`: everything
checked before any compute), restores the newest intact checkpoint in WORKDIR/checkpoints (or
finds the run finished), compiles its steps once, opens the loop's `Loop` and `Carry` there
(`session.open_session`) and runs `run_loop`: after each step the actions due, each room called
once. An ExitStack closes the metrics writer, the checkpointer and the data iterator on every
exit path.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.errors import ConfigError, Fault
from jaxsparse.train.loop import actions, report
from jaxsparse.train.loop.actions import StepOutcome
from jaxsparse.train.loop.console import Progress, say, startup_line
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.loop.run_log import RunLog
from jaxsparse.train.loop.session import Carry, Due, Loop, due_after, open_session
from jaxsparse.train.resolve import environment
from jaxsparse.train.resolve.run import Run, prepare, with_grad_accum
from jaxsparse.train.steps import compiled
from jaxsparse.train.steps.state import abstract_state
from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir import lock
from jaxsparse.train.workdir.check import make_writable, move_previous_outputs, outputs_to_set_aside
from jaxsparse.train.workdir.checkpoints import Checkpointer
from jaxsparse.train.workdir.fallback import set_aside_from


class TrainingFault(Fault):
    """A fault after compute started (I/O error, disk full); the message says what was saved
    and how to resume. The command line exits 1 at once: the checkpointer and the metrics writer
    are closed before it is raised."""

    at_once = True


def train(config: ml_collections.ConfigDict, workdir: str, *, restart: bool = False,
          force: bool = False) -> dict[str, Any]:
    """Run (or resume) the training described by `config` in `workdir`; return summary.json
    (or {"preempted_at": step} after a SIGTERM). `restart`: start over, moving a previous run's
    outputs aside; `force`: skip the memory check. Raises ConfigError (bad input, nothing
    computed), FloatingPointError (diverged) or TrainingFault (I/O fault after compute). From the
    first step on, the libraries' log goes to WORKDIR/trainer.log (`run_log`); after a
    TrainingFault it stays there until the next run in this process starts."""
    created = not os.path.exists(workdir)  # removed again (if still empty) on bad input
    log = RunLog()
    try:
        run = prepare(config)
        _check_memory(run, force)  # a fixed train.grad_accum: before anything is written
        make_writable(workdir)
        with contextlib.ExitStack() as stack:
            return _train_in(run, workdir, stack, restart, force, log)
    except ConfigError:
        if created:  # bad input writes nothing: not even the workdir this call made
            with contextlib.suppress(OSError):
                os.rmdir(workdir)
        raise
    except FloatingPointError:
        raise
    except Exception as err:  # noqa: BLE001 - after compute started, every fault is reported
        if not log.started:
            raise
        logging.error("training fault", exc_info=True)  # the traceback, into the log file
        log.keep()  # orbax's threads may still log until the command line exits (at once)
        raise TrainingFault(_fault_message(err, workdir, log)) from err
    finally:
        log.close()


def _train_in(run: Run, workdir: str, stack: contextlib.ExitStack, restart: bool, force: bool,
              log: RunLog) -> dict[str, Any]:
    """`train` once the run is resolved and the workdir writable, its resources closed by
    `stack`: lock the workdir, set aside outputs no checkpoint resumes, find where to start (a
    finished run: its summary.json; else the newest intact checkpoint, restored before
    anything is compiled), compile the steps once (deciding "auto" and checking its memory plan
    unless `force`), open the loop there and run it, with the log routed to `log` (started
    once steps run: what fails after is a fault)."""
    stack.enter_context(lock.held(workdir))  # one trainer per workdir
    if outputs_to_set_aside(workdir, restart):  # outputs no checkpoint resumes
        move_previous_outputs(workdir, "--restart" if restart else
                              "metrics of an attempt that saved no checkpoint")
    state = abstract_state(run.model, run.tx, run.mesh, models.DEFAULT_RULES, run.seq_len)
    ckpt = Checkpointer(workdir, run.checkpoint_keep, run.checkpoint_async)
    stack.callback(ckpt.close)
    summary_json, restored = ckpt.resume_point(state[0], run.identity, run.steps,
                                               lambda: layout.read_summary(workdir))
    if summary_json is not None:
        say(f"nothing to do: {workdir} holds a finished run ({layout.summary_path(workdir)})")
        return summary_json
    steps = compiled.for_run(run, environment.device_bytes_limit(), state)
    if run.grad_accum is None:  # "auto": decided by compiling, then checked
        run = with_grad_accum(run, steps.grad_accum)
        _check_memory(run, force)
    loop, carry = open_session(run, workdir, ckpt, stack, steps, restored)
    console = Progress(run.steps)
    console.opened(f"resumed from {restored.path}" if restored is not None else None,
                   startup_line(run, workdir, loop.start))
    log.start(layout.trainer_log_path(workdir, jax.process_index()))
    return run_loop(loop, carry, console, stack.enter_context(Preemption()))


def _check_memory(run: Run, force: bool) -> None:
    """Refuse `run` (ConfigError) when its memory plan exceeds a device's memory, unless `force`;
    the one check, done once `run.grad_accum` is decided: a fixed one at once, "auto" (None, a
    no-op here) once compiled."""
    if run.grad_accum is not None and not force:
        environment.check_memory(run.plan.memory.total)


def run_loop(loop: Loop, carry: Carry, console: Progress, preempt: Preemption) -> dict[str, Any]:
    """The loop: after each step the actions due, each room called once: `actions.after_step`
    measures, the metrics writer records, the checkpointer saves (or, after a non-finite loss,
    the checkpoints it spoiled are set aside and the run stops), after the final step
    `report.finish` writes summary.json and training.png; then the console prints. The resume
    step itself acts first when due (`loop.at_resume`). Returns summary.json ({} on other
    processes), or {"preempted_at": step} after a SIGTERM."""
    run, start, result = loop.run, loop.start, {}
    first = start if loop.at_resume.any() or start == run.steps else start + 1
    for done in range(first, run.steps + 1):
        if done > start:
            advance(loop, carry)
        due = due_after(run, done, preempt) if done > start else loop.at_resume
        if not (due.any() or done == run.steps):
            continue
        out = actions.after_step(loop, carry, done, due)
        carry.pending, carry.losses, carry.active, carry.warned = [], out.losses, out.active, out.warned
        carry.eval_loss = carry.eval_loss if out.eval_loss is None else out.eval_loss
        loop.writer.write_all(out.records)
        if out.divergence is not None:  # raised once the spoiled checkpoints are set aside
            raise _diverged(loop.ckpt, out)
        saved = _save(loop, carry, done, due) if due.checkpoint or due.stop else None
        finished = None
        if done == run.steps and not due.stop:  # once the final checkpoint is complete; after
            # a SIGTERM the rerun resumes at that checkpoint, evaluates and finishes
            result, finished = report.finish(loop.workdir, run, report.measured(run, carry),
                                             loop.writer.records)
        console.report(done, due, out, carry.first_done, saved, finished)
        if due.stop:
            return {"preempted_at": done}
        carry.step_at_log, carry.t_log = done, time.time()  # eval and checkpoint time not in tokens/s
    return result


def advance(loop: Loop, carry: Carry) -> None:
    """One train step on the next batch (asynchronous: metrics stay on device, in
    `carry.pending`); adds the parameters in force to `carry.active_sum`."""
    batch = data_lib.to_global_batch(next(loop.train_iter), loop.batch_sharding)
    carry.state, metrics = loop.train_step(carry.state, batch)
    carry.pending.append(metrics)
    carry.active_sum += loop.run.plan.params.other + carry.active
    if carry.first_done is None:
        jax.block_until_ready(metrics)  # the first step (and its compilation) is done
        carry.first_done = (loop.start + 1, time.time())


def _save(loop: Loop, carry: Carry, done: int, due: Due) -> str:
    """Checkpoint step `done` (after its records: a checkpoint never lacks them) with the meta a
    resume needs (the run's identity and config, `active_sum` and the interval's losses); its
    path. A SIGTERM's and the final step's save is forced; the final one is waited for."""
    run, final = loop.run, done == loop.run.steps
    meta = {"identity": run.identity, "config": run.config.to_dict(),
            "progress": {"active_sum": carry.active_sum, "losses": carry.losses}}
    loop.ckpt.save_step(done, carry.state, loop.train_iter.get_state(), meta,
                        force=due.stop or final, wait=final)
    return loop.ckpt.path(done)


def _diverged(ckpt: Checkpointer, out: StepOutcome) -> FloatingPointError:
    """The error of a non-finite loss, once the checkpoints from `out.first_bad` - 1 on (whose
    parameters gave it) are set aside; it names the last good checkpoint."""
    last_good = set_aside_from(ckpt, out.first_bad - 1,
                               f"its parameters gave a non-finite loss at step {out.first_bad}")
    return FloatingPointError(out.divergence.replace(actions.LAST_GOOD, last_good))


def _fault_message(err: BaseException, workdir: str, log: RunLog) -> str:
    ckpts, steps = layout.checkpoint_dir(workdir), layout.saved_steps(workdir)
    saved = (f"the newest complete checkpoint is {ckpts}/{steps[-1]} (step {steps[-1]})"
             if steps else "no checkpoint was saved")
    cause = " ".join(f"{type(err).__name__}: {err}".split())
    return (f"fault during training ({cause}). {saved}; fix the cause (e.g. free disk space) "
            f"and rerun the same command to resume from the newest checkpoint ({log.where()}).")
