"""The trainer, top to bottom: `train(config, workdir)` resolves the run (`prepare`: everything
checked before any compute), takes the workdir's lock, compiles its steps once (deciding
train.grad_accum="auto") and checks the memory plan, all before anything but the lock is written
(a refusal releases it); then restores the newest intact checkpoint in WORKDIR/checkpoints (or
finds the run finished), opens the loop's `Loop` and `Carry` there (`session.open_session`) and runs
the loop (`stepping.run_loop`). An ExitStack closes the metrics writer, the checkpointer and the data
iterator on every exit path.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

from absl import logging
import jax
import ml_collections

from jaxsparse import models
from jaxsparse.errors import ConfigError, Fault
from jaxsparse.train.loop import stepping
from jaxsparse.train.loop.console import Progress, say, startup_line
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.loop.run_log import RunLog
from jaxsparse.train.loop.session import open_session
from jaxsparse.train.resolve import environment
from jaxsparse.train.resolve.run import prepare, with_grad_accum
from jaxsparse.train.steps import compiled
from jaxsparse.train.steps.state import abstract_state
from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir import lock
from jaxsparse.train.workdir.check import make_writable, move_previous_outputs, outputs_to_set_aside
from jaxsparse.train.workdir.checkpoints import Checkpointer


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
        with contextlib.ExitStack() as stack:
            return _train_in(config, workdir, stack, restart, force, log)
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


def _train_in(config: ml_collections.ConfigDict, workdir: str, stack: contextlib.ExitStack,
              restart: bool, force: bool, log: RunLog) -> dict[str, Any]:
    """`train` with its resources closed by `stack`, top to bottom: resolve the run, prove the
    workdir writable and lock it (a second trainer is refused before compiling), compile the steps
    once (deciding "auto"), check the memory plan once (unless `force`), all before anything else
    is written (a refusal releases the lock: nothing is left); then set aside outputs no checkpoint
    resumes, find where to start (a finished run: its summary.json; else the newest
    intact checkpoint, restored), open the loop there and run it, with the log routed to `log`
    (started once steps run: what fails after is a fault)."""
    run = prepare(config)
    make_writable(workdir)
    stack.enter_context(lock.held(workdir))  # one trainer per workdir; a refusal below removes it
    state = abstract_state(run.model, run.tx, run.mesh, models.DEFAULT_RULES, run.seq_len)
    steps = compiled.for_run(run, environment.device_bytes_limit(), state)
    if run.grad_accum is None:  # "auto": decided by compiling
        run = with_grad_accum(run, steps.grad_accum)
    if not force:  # the one memory check, once train.grad_accum is decided
        environment.check_memory(run.plan.memory.total)
    if outputs_to_set_aside(workdir, restart):  # outputs no checkpoint resumes
        move_previous_outputs(workdir, "--restart" if restart else
                              "metrics of an attempt that saved no checkpoint")
    ckpt = Checkpointer(workdir, run.checkpoint_keep, run.checkpoint_async)
    stack.callback(ckpt.close)
    summary_json, restored = ckpt.resume_point(state[0], run.identity, run.steps,
                                               lambda: layout.read_summary(workdir))
    if summary_json is not None:
        say(f"nothing to do: {workdir} holds a finished run ({layout.summary_path(workdir)})")
        return summary_json
    loop, carry = open_session(run, workdir, ckpt, stack, steps, restored)
    console = Progress(run.steps)
    console.opened(f"resumed from {restored.path}" if restored is not None else None,
                   startup_line(run, workdir, loop.start))
    log.start(layout.trainer_log_path(workdir, jax.process_index()))
    return stepping.run_loop(loop, carry, console, stack.enter_context(Preemption()))


def _fault_message(err: BaseException, workdir: str, log: RunLog) -> str:
    ckpts, steps = layout.checkpoint_dir(workdir), layout.saved_steps(workdir)
    saved = (f"the newest complete checkpoint is {ckpts}/{steps[-1]} (step {steps[-1]})"
             if steps else "no checkpoint was saved")
    cause = " ".join(f"{type(err).__name__}: {err}".split())
    return (f"fault during training ({cause}). {saved}; fix the cause (e.g. free disk space) "
            f"and rerun the same command to resume from the newest checkpoint ({log.where()}).")
