"""The training loop's two values: `Loop`, what stays fixed for a run, built once and complete by
`open_session`; and `Carry`, what each step changes, handed explicitly to the functions that read
or change it. `due_after` and `due_at_resume` say what the loop does when (a `Due`).

`open_session` builds what a run needs to step (the data iterators, the train state restored or
created on the mesh, the metrics writer) around the steps the driver compiled once
(`jaxsparse.train.steps.compiled.for_run`), and registers each closable resource on the
caller's ExitStack. The loop itself is `jaxsparse.train.loop.stepping.run_loop`. Units: `active`
counts the prunable weights in force; `active_sum` sums, over the steps done, all parameters in
force (N̄ so far = active_sum / steps done).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.data import TrainIterator
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.resolve.run import Run
from jaxsparse.train.steps.compiled import CompiledSteps
from jaxsparse.train.steps.state import TrainState, create_state
from jaxsparse.train.steps.step import active_params
from jaxsparse.train.workdir.checkpoints import Checkpointer, Restored
from jaxsparse.train.workdir.records import MetricsWriter


@dataclasses.dataclass(frozen=True)
class Due:
    """Which actions are due after a step (`redo`: only the eval of the resume step, whose record
    a run stopped between its checkpoint and that record never wrote)."""

    log: bool
    event: bool
    checkpoint: bool
    eval: bool
    stop: bool
    redo: bool = False

    def any(self) -> bool:
        return self.log or self.event or self.checkpoint or self.eval or self.stop


@dataclasses.dataclass(frozen=True)
class Loop:
    """What stays fixed while a run's loop steps: the resolved `run`, its `workdir`, the
    checkpointer and metrics writer, the training batches (`train_iter`, one iterator; its
    position is checkpointed) and the fixed eval batches, the compiled steps (`train_step(state,
    batch) -> (state, metrics)`, state donated; `eval_step(state, batch) -> {loss_sum, weights}`),
    the global batch and replicated shardings on the run's mesh, the step the session opened at
    (`start`) and what is due there before any step (`at_resume`, `due_at_resume`)."""

    run: Run
    workdir: str
    ckpt: Checkpointer
    writer: MetricsWriter
    train_iter: TrainIterator
    eval_batches: list[dict[str, np.ndarray]]
    train_step: Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]
    eval_step: Callable[[TrainState, dict[str, jax.Array]], dict[str, jax.Array]]
    batch_sharding: NamedSharding
    replicated: NamedSharding
    start: int
    at_resume: Due


@dataclasses.dataclass
class Carry:
    """What the loop's steps change: the train `state`; `active` (prunable weights in force);
    `active_sum` (N̄ so far x steps done); the losses of the latest log interval; the latest eval
    loss (for summary.json); `pending`: the device metrics of the steps since the last fetch;
    `warned`: the pruning checks' warnings already printed; `first_done`: (step, time) the first
    step of this process completed (the ETA's origin); (`step_at_log`, `t_log`): where and when
    the current log interval began (tokens/s excludes eval and checkpoint time)."""

    state: TrainState
    active: int
    active_sum: float
    losses: list[float]
    eval_loss: float | None
    step_at_log: int
    t_log: float
    pending: list[dict[str, jax.Array]] = dataclasses.field(default_factory=list)
    warned: frozenset[str] = frozenset()
    first_done: tuple[int, float] | None = None


def due_after(run: Run, done: int, preempt: Preemption) -> Due:
    """The actions due once `done` steps are done: the final step logs, checkpoints and
    evaluates (processes agree on `stop` at log and checkpoint steps; a single process checks
    it at every step)."""
    final = done == run.steps
    event = bool(run.schedule.is_event(done, run.steps)) and not final
    log = done % run.log_every == 0 or final or event
    ckpt = bool(run.checkpoint_every and done % run.checkpoint_every == 0) or final
    ev = bool(run.eval_every and done % run.eval_every == 0) or final
    if jax.process_count() == 1:
        stop = preempt.requested
    else:
        stop = preempt.agreed() if (log or ckpt) else False
    return Due(log=log, event=event, checkpoint=ckpt, eval=ev and not stop, stop=stop)


def due_at_resume(run: Run, start: int, dense: bool, eval_missing: bool) -> Due:
    """What is due at the step `start` a session opens at, before any step: the pruning event
    applied at initialisation (step 0; `dense`: no pruning transform), and the eval of a resume
    step whose eval record is missing (`eval_missing`: a run stopped between a checkpoint and
    that record)."""
    event = start == 0 and not dense and bool(run.schedule.is_event(0, run.steps))
    eval_due = bool(run.eval_every and start % run.eval_every == 0) or start == run.steps
    redo = start > 0 and eval_due and eval_missing
    return Due(log=False, event=event, checkpoint=False, eval=redo, stop=False, redo=redo)


def open_session(run: Run, workdir: str, ckpt: Checkpointer, stack: contextlib.ExitStack,
                 steps: CompiledSteps, restored: Restored | None) -> tuple[Loop, Carry]:
    """(Loop, Carry) at `restored` (the newest intact checkpoint, `Checkpointer.resume_point`;
    None: step 0), calling `steps` (compiled for `run`); the data iterator and the metrics writer
    close with `stack`. Asks the metrics writer whether the resume step's eval record is missing
    (a collective: every process asks), for `Loop.at_resume`."""
    seq = run.seq_len
    train_iter = data_lib.make_train_iterator(run.data, seq_len=seq, seed=run.seed,
                                              global_batch_size=run.batch_size)
    stack.callback(train_iter.close)
    eval_batches = data_lib.make_eval_batches(run.data, seq_len=seq, num_batches=run.eval_batches,
                                              global_batch_size=run.batch_size)
    state, active_sum, losses = _state_at(run, steps, restored, train_iter)
    start = int(jax.device_get(state.step))
    replicated = NamedSharding(run.mesh, PartitionSpec())
    dense = run.schedule.kind == "dense"  # no pruning transform: every weight stays active
    active = run.plan.params.prunable
    if not dense:
        count_active = jax.jit(active_params, in_shardings=(steps.shardings,), out_shardings=replicated)
        active = int(jax.device_get(count_active(state)))
    writer = MetricsWriter(workdir, enabled=jax.process_index() == 0,
                           tensorboard=run.tensorboard, keep_until=start)
    stack.callback(writer.close)
    eval_missing = writer.agreed_missing("eval", start)  # collective: every process asks
    eval_loss = writer.value("eval", start, "eval_loss")
    loop = Loop(run=run, workdir=workdir, ckpt=ckpt, writer=writer, train_iter=train_iter,
                eval_batches=eval_batches, train_step=steps.train, eval_step=steps.eval,
                batch_sharding=models.batch_sharding(run.mesh), replicated=replicated,
                start=start, at_resume=due_at_resume(run, start, dense, eval_missing))
    carry = Carry(state=state, active=active, active_sum=active_sum, losses=losses,
                  eval_loss=eval_loss, step_at_log=start,
                  t_log=time.time())
    return loop, carry


def _state_at(run: Run, steps: CompiledSteps, restored: Restored | None,
              train_iter: TrainIterator) -> tuple[TrainState, float, list[float]]:
    """(train state, active_sum, losses) to start from: `restored`'s (its data position set on
    `train_iter`), else a new state on the mesh (from `run.init_from`'s weights when given)."""
    if restored is not None:
        progress = restored.meta.get("progress", {})
        train_iter.set_state(restored.data)
        return (restored.state, float(progress.get("active_sum", 0.0)),
                list(progress.get("losses", [])))
    state = create_state(run.model, run.tx, run.seed, run.seq_len, steps.shardings)
    if run.init_from:  # start from a Hugging Face checkpoint's weights
        from jaxsparse.hf.load import load_params, with_params
        params = load_params(run.init_from, run.model_config)
        state = with_params(state, run.tx, params, steps.shardings)
    return state, 0.0, []
