"""The live state of one training loop (`Session`) and the loop itself (`Session.train`).

After a step the loop decides what is due (`due_after`: log, pruning event, checkpoint, eval,
SIGTERM stop; the final step does all but the event) and calls each room once, in this order:
`actions.after_step` measures (metrics to host and the divergence check, the event record, the
train record, the eval loss), the metrics writer records, the checkpointer saves (every
`checkpoint.every_steps`, the final step and on SIGTERM), the console prints. Every record of a
step is written before its checkpoint, so a checkpoint never lacks its step's records. Then
`report.finish` writes summary.json and training.png.

`open_session` builds what a run needs to step (data iterators, the train state restored or
created on the mesh, the metrics writer) around the steps the driver compiled once
(`jaxsparse.train.steps.compiled.for_run`), and registers each closable resource on the
caller's ExitStack. Units: `active` counts the prunable weights in force; `active_sum`
sums, over the steps done, all parameters in force (N̄ so far = active_sum / steps done).
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.train.loop import actions, report
from jaxsparse.train.loop.actions import Due
from jaxsparse.train.loop.console import Progress, startup_line
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.resolve.run import Run
from jaxsparse.train.steps.compiled import CompiledSteps
from jaxsparse.train.steps.state import create_state
from jaxsparse.train.steps.step import active_params
from jaxsparse.train.workdir import fallback
from jaxsparse.train.workdir.checkpoints import Checkpointer, Restored
from jaxsparse.train.workdir.records import MetricsWriter


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


class Session:
    """Mutable loop state and the loop (`train`)."""

    def __init__(self, run: Run, workdir: str, ckpt: Checkpointer, steps: CompiledSteps):
        self.run, self.workdir, self.ckpt = run, workdir, ckpt
        self.batch_sharding = models.batch_sharding(run.mesh)
        self.replicated = NamedSharding(run.mesh, PartitionSpec())
        self.train_step, self.eval_step = steps.train, steps.eval  # compiled once, by the driver
        self.count_active = jax.jit(active_params, in_shardings=(steps.shardings,),
                                    out_shardings=self.replicated)
        self.dense = run.schedule.kind == "dense"  # no transform: every weight stays active
        self.progress: Any = None
        self.pending: list[dict] = []
        self.losses: list[float] = []
        self.active_sum = 0.0
        self.state: Any = None
        self.train_iter: Any = None
        self.eval_batches: Any = None
        self.writer: Any = None
        self.start = self.step_at_log = 0
        self.eval_missing = False  # the resume step's eval record is missing (process 0's view)
        self.eval_loss: float | None = None  # the latest eval's, for summary.json
        self.first_done: tuple[int, float] | None = None  # (step, time) the first step completed
        self.warned: set[str] = set()  # the pruning checks' warnings already printed
        self.active = run.plan.params.prunable
        self.t_log = time.time()

    def train(self, preempt: Preemption) -> dict[str, Any]:
        """The loop: after each step, the actions due, each room called once: `actions.after_step`
        measures, the metrics writer records, the checkpointer saves (or, after a non-finite
        loss, sets aside the checkpoints it spoiled and the run stops), and after the final step
        `report.finish` writes summary.json and training.png; then the console prints. The resume
        step itself acts first when due (`due_at_resume`). Returns summary.json ({} on other
        processes), or {"preempted_at": step} after a SIGTERM."""
        run, result = self.run, {}
        at_resume = due_at_resume(run, self.start, self.dense, self.eval_missing)
        first = self.start if at_resume.any() or self.start == run.steps else self.start + 1
        for done in range(first, run.steps + 1):
            if done > self.start:
                self.advance()
            due = due_after(run, done, preempt) if done > self.start else at_resume
            if not (due.any() or done == run.steps):
                continue
            pending, self.pending = self.pending, []
            out = actions.after_step(self, done, due, pending)
            self.losses, self.active = out.losses, out.active
            self.eval_loss = self.eval_loss if out.eval_loss is None else out.eval_loss
            self.writer.write_all(out.records)
            if out.divergence is not None:  # raised once the spoiled checkpoints are set aside
                last_good = fallback.set_aside_from(self.ckpt, out.first_bad - 1, "its "
                                                         f"parameters gave a non-finite loss at step {out.first_bad}")
                raise FloatingPointError(out.divergence.replace(actions.LAST_GOOD, last_good))
            saved = None
            if due.checkpoint or due.stop:  # after the step's records: a checkpoint never lacks them
                self.ckpt.save_step(done, self.state, self.train_iter.get_state(), self.meta(),
                                    force=due.stop or done == run.steps, wait=done == run.steps)
                saved = self.ckpt.path(done)
            finished = None
            if done == run.steps and not due.stop:  # once the final checkpoint is complete; after
                # a SIGTERM the rerun resumes at that checkpoint, evaluates and finishes
                result, finished = report.finish(self.workdir, run, self.final(), self.writer.records)
            self.progress.report(done, due, out, self.first_done, saved, finished)
            if due.stop:
                return {"preempted_at": done}
            self.t_log, self.step_at_log = time.time(), done  # eval and checkpoint time not in tokens/s
        return result

    def meta(self) -> dict[str, Any]:
        """A checkpoint's meta: the run's identity and config, and the progress a resume needs."""
        return {"identity": self.run.identity, "config": self.run.config.to_dict(),
                "progress": {"active_sum": self.active_sum, "losses": self.losses}}

    def final(self) -> dict[str, Any]:
        """summary.json's measured entries, once the final step is done."""
        params = self.run.plan.params
        final_active = params.prunable if self.dense else self.active
        return {"n_avg_realised": self.active_sum / self.run.steps,
                "n_final": params.other + final_active,
                "final_sparsity": 1.0 - final_active / params.prunable,
                "final_train_loss": float(np.mean(self.losses)) if self.losses else None,
                "final_eval_loss": self.eval_loss}

    def advance(self) -> None:
        """One train step on the next batch (asynchronous: metrics stay on device)."""
        batch = data_lib.to_global_batch(next(self.train_iter), self.batch_sharding)
        self.state, metrics = self.train_step(self.state, batch)
        self.pending.append(metrics)
        self.active_sum += self.run.plan.params.other + self.active
        if self.first_done is None:
            jax.block_until_ready(metrics)  # the first step (and its compilation) is done
            self.first_done = (self.start + 1, time.time())


def open_session(run: Run, workdir: str, ckpt: Checkpointer, stack: contextlib.ExitStack,
                 steps: CompiledSteps, restored: Restored | None) -> Session:
    """A Session at `restored` (the newest intact checkpoint, `Checkpointer.resume_point`; None:
    step 0) that calls `steps` (compiled for `run`); its resources close with `stack`. Asks the
    metrics writer whether the resume step's eval record is missing (`Session.eval_missing`, for
    `due_at_resume`) and prints the startup line."""
    seq = run.seq_len
    s = Session(run, workdir, ckpt, steps)
    s.train_iter = data_lib.make_train_iterator(run.data, seq_len=seq, seed=run.seed,
                                                global_batch_size=run.batch_size)
    stack.callback(s.train_iter.close)
    s.eval_batches = data_lib.make_eval_batches(run.data, seq_len=seq, num_batches=run.eval_batches,
                                                global_batch_size=run.batch_size)
    if restored is not None:
        progress = restored.meta.get("progress", {})
        s.state = restored.state
        s.train_iter.set_state(restored.data)
        s.active_sum = float(progress.get("active_sum", 0.0))
        s.losses = list(progress.get("losses", []))
    else:
        s.state = create_state(run.model, run.tx, run.seed, seq, steps.shardings)
        if run.init_from:  # start from a Hugging Face checkpoint's weights
            from jaxsparse.hf.load import load_params, with_params
            params = load_params(run.init_from, run.model_config)
            s.state = with_params(s.state, run.tx, params, steps.shardings)
    s.start = s.step_at_log = int(jax.device_get(s.state.step))
    if not s.dense:
        s.active = int(jax.device_get(s.count_active(s.state)))
    s.writer = MetricsWriter(workdir, enabled=jax.process_index() == 0,
                             tensorboard=run.tensorboard, keep_until=s.start)
    stack.callback(s.writer.close)
    s.eval_loss = s.writer.value("eval", s.start, "eval_loss")
    s.eval_missing = s.writer.agreed_missing("eval", s.start)  # collective: every process asks
    s.t_log = time.time()
    s.progress = Progress(run.steps)
    s.progress.opened(f"resumed from {restored.path}" if restored is not None else None,
                      startup_line(run, workdir, s.start))
    return s
