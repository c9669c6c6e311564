"""The live state of one training loop (`Session`), the loop itself and the actions it takes.

After a step the loop decides what is due (`due_after`) and takes the named actions in order:
`fetch` (metrics to host and the divergence check), `record_event` (a pruning event), `log`
(metrics.jsonl and the console), `checkpoint` (every `checkpoint.every_steps`, and on SIGTERM),
`evaluate`; then `finish` (final checkpoint, eval, summary.json, training.png).

`open_session` builds what a run needs to step (data iterators, the train state restored or
created on the mesh, the metrics writer) around the steps the driver compiled once
(`jaxsparse.train.steps.compiled.for_run`), and registers each closable resource on the
caller's ExitStack. Units: `active` counts the prunable weights in force; `active_sum`
sums, over the steps done, all parameters in force (N̄ so far = active_sum / steps done).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.errors import ConfigError
from jaxsparse.pruning import summary
from jaxsparse.train.loop import actions, report
from jaxsparse.train.workdir.checkpoints import Checkpointer
from jaxsparse.train.loop.console import Progress, say, startup_line
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir.records import MetricsWriter
from jaxsparse.train.resolve.run import Run
from jaxsparse.train.steps.compiled import CompiledSteps
from jaxsparse.train.steps.state import create_state
from jaxsparse.train.steps.step import active_params, model_masks


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


class Session:
    """Mutable loop state, the loop (`train`) and its named actions."""

    def __init__(self, run: Run, workdir: str, ckpt: Checkpointer, steps: CompiledSteps):
        self.run, self.workdir, self.ckpt = run, workdir, ckpt
        self.batch_sharding = models.batch_sharding(run.mesh)
        self.replicated = NamedSharding(run.mesh, PartitionSpec())
        self.train_step, self.eval_step = steps.train, steps.eval  # compiled once, by the driver
        self.count_active = jax.jit(active_params, in_shardings=(steps.shardings,),
                                    out_shardings=self.replicated)
        self.lr_at = run.learning_rate
        self.dense = run.schedule.kind == "dense"  # no transform: every weight stays active
        self.progress = Progress(run.steps)
        self.pending: list[dict] = []
        self.losses: list[float] = []
        self.active_sum = 0.0
        self.state: Any = None
        self.train_iter: Any = None
        self.eval_batches: Any = None
        self.writer: Any = None
        self.start = self.step_at_log = 0
        self.last_good: int | None = None
        self.warned: set[str] = set()  # the pruning checks' warnings already printed
        self.active = run.plan.params.prunable
        self.t_log = time.time()

    def masks(self) -> Any:
        """The model's masks collection. What the pruning transform's checks found (e.g. a tensor
        emptied by the global threshold) is printed once, as a `warning:` line."""
        with warnings.catch_warnings(record=True) as found:
            warnings.simplefilter("always")
            masks = model_masks(self.state.opt_state)
        for message in dict.fromkeys(str(w.message) for w in found):
            if message not in self.warned:
                self.warned.add(message)
                say(f"warning: {message}")
        return masks

    def train(self, preempt: Preemption) -> dict[str, Any]:
        """The loop: one step, then the actions that are due; then `finish`. Returns summary.json
        (process 0; {} on the others), or {"preempted_at": step} after a SIGTERM."""
        self.redo_missing_eval()  # killed between a checkpoint and its eval record
        for step in range(self.start, self.run.steps):
            self.advance()
            done = step + 1
            due = due_after(self.run, done, preempt)
            if due.any() and self.act(done, due):
                return {"preempted_at": done}
        return self.finish()

    def act(self, done: int, due: Due) -> bool:
        """Take the actions `due` after step `done`; True when stopped by a SIGTERM."""
        losses, norms = self.fetch(done)
        if due.event:
            self.record_event(done)
        self.log(done, losses, norms, echo=due.log or due.stop)
        if due.checkpoint or due.stop:  # before any eval: a preempted run has little time left
            self.checkpoint(done, force=due.stop)
        if due.stop:
            say(f"SIGTERM: checkpoint saved at step {done}; rerun the same command to resume")
            return True
        if due.eval:
            self.evaluate(done)
        self.restart_clock(done)  # eval and checkpoint time not in tokens/s
        return False

    def finish(self) -> dict[str, Any]:
        """Final checkpoint and eval, then summary.json and training.png (process 0)."""
        run, steps = self.run, self.run.steps
        if self.last_good != steps:
            self.checkpoint(steps, force=True)
        eval_loss = self.evaluate(steps)
        self.ckpt.wait()
        n_prunable, n_other = run.plan.params.prunable, run.plan.params.other
        final_active = n_prunable if self.dense else summary(self.masks()).active
        final = {"n_avg_realised": self.active_sum / steps, "n_final": n_other + final_active,
                 "final_sparsity": 1.0 - final_active / n_prunable,
                 "final_train_loss": float(np.mean(self.losses)) if self.losses else None,
                 "final_eval_loss": eval_loss}
        if jax.process_index() != 0:
            return {}
        result = report.write_summary(self.workdir, run.config, run.plan, final)
        if run.plots:
            report.plot_run(self.workdir)
        say(f"done: eval loss {eval_loss:.4f}, sparsity {final['final_sparsity']:.4f}; "
            f"summary in {layout.summary_path(self.workdir)}")
        return result

    def advance(self) -> None:
        """One train step on the next batch (asynchronous: metrics stay on device)."""
        batch = data_lib.to_global_batch(next(self.train_iter), self.batch_sharding)
        self.state, metrics = self.train_step(self.state, batch)
        self.pending.append(metrics)
        self.active_sum += self.run.plan.params.other + self.active
        if self.progress.first_step is None:
            jax.block_until_ready(metrics)  # the first step (and its compilation) is done
            self.progress.started(self.start + 1)

    def fetch(self, done: int) -> tuple[list[float], list[float]]:
        """Metrics of the steps since the last fetch to host; raise if any is not finite."""
        fetched, self.pending = jax.device_get(self.pending), []
        losses = [float(m["loss"]) for m in fetched]
        norms = [float(m["grad_norm"]) for m in fetched]
        self.losses = losses
        bad = actions.first_non_finite(losses, norms)
        if bad is not None:
            first = done - len(losses) + bad + 1  # its loss was computed on step first-1's params
            last_good = self.ckpt.set_aside_from(first - 1, f"its parameters gave a non-finite "
                                                 f"loss at step {first}")
            raise actions.diverged(losses, norms, done, last_good)
        return losses, norms

    def record_event(self, done: int) -> None:
        """A pruning event happened at step `done`: record densities (total and per layer)."""
        masks = self.masks()
        self.active = summary(masks).active
        self.writer.write("pruning_event", done, {
            "density": self.active / self.run.plan.params.prunable,
            "scheduled_density": float(self.run.schedule.density_at(done, self.run.steps)),
            "per_layer_sparsity": actions.per_layer_sparsity(masks, self.replicated)})

    def log(self, done: int, losses: list[float], norms: list[float], echo: bool) -> None:
        """The train record to metrics.jsonl; the console line when `echo` (process 0)."""
        record = actions.train_record(self, done, losses, norms)
        self.writer.write("train", done, record)
        if echo:
            self.progress.log(done, record["loss"], record["density"], record["tokens_per_s"])

    def checkpoint(self, done: int, force: bool = False) -> None:
        meta = {"identity": self.run.identity, "config": self.run.config.to_dict(),
                "progress": {"active_sum": self.active_sum, "losses": self.losses}}
        self.ckpt.save(done, self.state, self.train_iter.get_state(), meta, force=force)
        self.last_good = done
        say(f"checkpoint: saving step {done} to {self.ckpt.directory}/{done}")

    def evaluate(self, done: int) -> float:
        loss = actions.evaluate(self.eval_step, self.state, self.eval_batches, self.batch_sharding)
        self.writer.write("eval", done, {"eval_loss": loss})
        say(f"eval at step {done}: loss {loss:.4f} over {self.run.eval_batches} batches")
        return loss

    def redo_missing_eval(self) -> None:
        """Evaluate at the resume step if an eval was due there and its record is missing (a
        kill after the checkpoint committed, before the record was written): records and
        checkpoints agree after any kill. Process 0 decides; all processes evaluate."""
        every, start = self.run.eval_every, self.start
        if not (every and start and start % every == 0 and start < self.run.steps):
            return
        if _agreed(not self.writer.has("eval", start)):
            say(f"redoing the eval of step {start}: its record is missing (the run was stopped "
                "after the checkpoint, before the eval)")
            self.evaluate(start)
            self.restart_clock(start)  # the eval's time is not in the next tokens/s

    def restart_clock(self, done: int) -> None:
        self.t_log, self.step_at_log = time.time(), done


def _agreed(flag: bool) -> bool:
    """Process 0's `flag`, on every process."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def open_session(run: Run, workdir: str, ckpt: Checkpointer, stack: contextlib.ExitStack,
                 steps: CompiledSteps) -> Session:
    """A Session at the latest checkpoint (or step 0) that calls `steps` (compiled for `run`);
    its resources close with `stack`. Prints the startup line."""
    seq, abstract, shardings = run.seq_len, steps.abstract, steps.shardings
    s = Session(run, workdir, ckpt, steps)
    s.train_iter = data_lib.make_train_iterator(run.data, seq_len=seq, seed=run.seed,
                                                global_batch_size=run.batch_size)
    stack.callback(s.train_iter.close)
    s.eval_batches = data_lib.make_eval_batches(run.data, seq_len=seq, num_batches=run.eval_batches,
                                                global_batch_size=run.batch_size)
    try:  # verified: damaged checkpoints are set aside, the newest intact one wins
        restored = ckpt.restore_newest_intact(abstract, run.identity)
    except ConfigError:
        raise
    except ValueError as err:  # another run's checkpoint: bad input, nothing computed
        raise ConfigError(str(err)) from err
    if restored is not None:
        progress = restored.meta.get("progress", {})
        s.state = restored.state
        s.train_iter.set_state(restored.data)
        s.active_sum = float(progress.get("active_sum", 0.0))
        s.losses = list(progress.get("losses", []))
        s.last_good = restored.step
        say(f"resumed from {ckpt.path(restored.step)}")
    else:
        s.state = create_state(run.model, run.tx, run.seed, seq, shardings)
        if run.init_from:  # start from a Hugging Face checkpoint's weights
            from jaxsparse.hf import load as hf_load
            params = hf_load.load_params(run.init_from, run.model_config)
            s.state = hf_load.with_params(s.state, run.tx, params, shardings)
    s.start = s.step_at_log = int(jax.device_get(s.state.step))
    s.writer = MetricsWriter(workdir, enabled=jax.process_index() == 0,
                             tensorboard=run.tensorboard, keep_until=s.start)
    stack.callback(s.writer.close)
    if not s.dense:
        s.active = int(jax.device_get(s.count_active(s.state)))
        if s.start == 0 and run.schedule.is_event(0, run.steps):  # an event applied in init
            s.record_event(0)
    s.t_log = time.time()
    say(startup_line(run, workdir, s.start))
    return s
