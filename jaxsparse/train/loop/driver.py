"""The training loop of one resolved `Run`: named actions around the jitted sharded step.

`train(config, workdir)` resolves the run (`prepare`: everything checked before any compute),
restores the newest intact checkpoint in WORKDIR/checkpoints (or finds the run finished),
compiles its steps once, opens a `Session` there and hands it the loop (`Session.train`). An
ExitStack closes the metrics writer, the checkpointer and the data iterator on every exit path.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

from absl import logging
import jax
import ml_collections

from jaxsparse.errors import ConfigError, Fault
from jaxsparse.train.workdir import layout
from jaxsparse.train.resolve import environment
from jaxsparse.train.workdir import lock
from jaxsparse.train.workdir.check import make_writable, move_previous_outputs, outputs_to_set_aside
from jaxsparse.train.workdir.checkpoints import Checkpointer
from jaxsparse.train.loop.console import say
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.loop.run_log import RunLog
from jaxsparse.train.resolve.run import Run, prepare, with_grad_accum
from jaxsparse import models
from jaxsparse.train.steps import compiled
from jaxsparse.train.steps.state import abstract_state
from jaxsparse.train.loop.session import open_session


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
        if run.grad_accum is not None and not force:
            environment.check_memory(run.plan.memory.total)  # "auto": once compiled
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
    unless `force`), then hand the loop to a Session, with the log routed to `log` (started
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
    if run.grad_accum is None:
        run = with_grad_accum(run, steps.grad_accum)
        if not force:
            environment.check_memory(run.plan.memory.total)
    session = open_session(run, workdir, ckpt, stack, steps, restored)
    log.start(layout.trainer_log_path(workdir, jax.process_index()))
    return session.train(stack.enter_context(Preemption()))


def _fault_message(err: BaseException, workdir: str, log: RunLog) -> str:
    ckpts, steps = layout.checkpoint_dir(workdir), layout.saved_steps(workdir)
    saved = (f"the newest complete checkpoint is {ckpts}/{steps[-1]} (step {steps[-1]})"
             if steps else "no checkpoint was saved")
    cause = " ".join(f"{type(err).__name__}: {err}".split())
    return (f"fault during training ({cause}). {saved}; fix the cause (e.g. free disk space) "
            f"and rerun the same command to resume from the newest checkpoint ({log.where()}).")
