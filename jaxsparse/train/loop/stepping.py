"""The loop itself, top to bottom on one screen: `run_loop` steps the run and, after each step
whose actions are due, calls each room once: `actions.after_step` measures, the metrics writer
records, the checkpointer saves (or, after a non-finite loss, the checkpoints it spoiled are set
aside and the run stops), after the final step `report.finish` writes summary.json and
training.png; then the console prints. It reads the loop's fixed `Loop` and changes its `Carry`
(`jaxsparse.train.loop.session`), which `jaxsparse.train.loop.driver.train` opened.
"""
from __future__ import annotations

import time
from typing import Any

import jax

from jaxsparse import data as data_lib
from jaxsparse.train.loop import actions, report
from jaxsparse.train.loop.console import Progress
from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.loop.session import Carry, Loop, due_after
from jaxsparse.train.workdir.fallback import set_aside_from


def run_loop(loop: Loop, carry: Carry, console: Progress, preempt: Preemption) -> dict[str, Any]:
    """Step `loop`'s run from `loop.start` to its last step, the actions due after each (the
    resume step itself acts first when due: `loop.at_resume`). A checkpoint is saved after its
    step's records (it never lacks them) with the meta a resume reads (the run's identity and
    config, `active_sum` and the interval's losses); a SIGTERM's and the final step's save is
    forced, the final one waited for. Returns summary.json ({} on other processes), or
    {"preempted_at": step} after a SIGTERM; raises FloatingPointError on a non-finite loss."""
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
        if out.divergence is not None:  # the checkpoints from first_bad - 1 on gave it: set aside
            last_good = set_aside_from(loop.ckpt, out.first_bad - 1, "its parameters gave a "
                                       f"non-finite loss at step {out.first_bad}")
            raise FloatingPointError(out.divergence.replace(actions.LAST_GOOD, last_good))
        saved, final, finished = None, done == run.steps, None
        if due.checkpoint or due.stop:
            meta = {"identity": run.identity, "config": run.config.to_dict(),
                    "progress": {"active_sum": carry.active_sum, "losses": carry.losses}}
            loop.ckpt.save_step(done, carry.state, loop.train_iter.get_state(), meta,
                                force=due.stop or final, wait=final)
            saved = loop.ckpt.path(done)
        if final and not due.stop:  # once the final checkpoint is complete; after a SIGTERM
            # the rerun resumes at that checkpoint, evaluates and finishes
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
