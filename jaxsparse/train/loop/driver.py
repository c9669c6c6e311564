"""The training loop of one resolved `Run`: named actions around the jitted sharded step.

`train(config, workdir)` resolves the run (`prepare`: everything checked before any compute),
compiles its steps once, opens a `Session` at the latest complete checkpoint in
WORKDIR/checkpoints and hands it the loop (`Session.train`, which names the actions taken after a
step). An ExitStack closes the metrics writer, the checkpointer and the data iterator on every
exit path.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

from absl import logging
import ml_collections

from jaxsparse.errors import ConfigError, Fault
from jaxsparse.train.workdir import layout
from jaxsparse.train.resolve import environment
from jaxsparse.train.workdir import lock as workdir_lock
from jaxsparse.train.workdir.check import make_writable, move_previous_outputs, outputs_to_set_aside
from jaxsparse.train.workdir.checkpoints import Checkpointer
from jaxsparse.train.loop.console import say
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.resolve.run import Run, prepare, with_grad_accum
from jaxsparse.train.steps import compiled
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
    computed), FloatingPointError (diverged) or TrainingFault (I/O fault after compute)."""
    created = not os.path.exists(workdir)  # removed again (if still empty) on bad input
    computing = False
    try:
        run = prepare(config)
        if run.grad_accum is not None and not force:
            environment.check_memory(run.plan.memory.total)  # "auto": once compiled
        make_writable(workdir)
        with contextlib.ExitStack() as stack:
            stack.enter_context(workdir_lock.held(workdir))  # one trainer per workdir
            if outputs_to_set_aside(workdir, restart):  # outputs no checkpoint resumes
                move_previous_outputs(workdir, "--restart" if restart else
                                      "metrics of an attempt that saved no checkpoint")
            ckpt = Checkpointer(workdir, run.checkpoint_keep, run.checkpoint_async)
            stack.callback(ckpt.close)
            finished, run, steps = _finished_or_compiled(run, ckpt, workdir, force)
            if finished is not None:
                return finished
            session = open_session(run, workdir, ckpt, stack, steps)
            computing = True
            return session.train(stack.enter_context(Preemption()))
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


def _finished_or_compiled(run: Run, ckpt: Checkpointer, workdir: str, force: bool
                          ) -> tuple[dict | None, Run, compiled.CompiledSteps | None]:
    """What the loop needs before it starts: (summary.json, run, None) when the workdir holds this
    run finished (its final checkpoint readable and of this run; a damaged final checkpoint is
    left to the verified restore); else (None, run, its steps compiled once for its mesh), with
    "auto" decided by compiling for the local devices' memory and the memory plan of the chosen
    grad_accum checked (unless `force`)."""
    final = ckpt.holds_final(run.steps, run.identity)  # identity checked before any write (ConfigError)
    summary_json = layout.read_summary(workdir) if final else None
    if summary_json is not None:
        say(f"nothing to do: {workdir} holds a finished run ({layout.summary_path(workdir)})")
        return summary_json, run, None
    steps = compiled.for_run(run, environment.device_bytes_limit())
    if run.grad_accum is None:
        run = with_grad_accum(run, steps.grad_accum)
        if not force:
            environment.check_memory(run.plan.memory.total)
    return None, run, steps


def _fault_message(err: BaseException, workdir: str) -> str:
    ckpts, steps = layout.checkpoint_dir(workdir), layout.saved_steps(workdir)
    saved = (f"the newest complete checkpoint is {ckpts}/{steps[-1]} (step {steps[-1]})"
             if steps else "no checkpoint was saved")
    cause = " ".join(f"{type(err).__name__}: {err}".split())
    return (f"fault during training ({cause}). {saved}; fix the cause (e.g. free disk space) "
            "and rerun the same command to resume from the newest checkpoint "
            "(--verbosity=0 prints the traceback).")
