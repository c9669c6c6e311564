"""What the loop does when: `due_after` (after a step) and `due_at_resume` (at the step a
session opens at), on a resolved run of configs/tiny.py; `open_session`'s Loop and Carry at a
restored checkpoint, run to a SIGTERM by `stepping.run_loop`."""
from __future__ import annotations

import pytest
from train_utils import tiny_config

from jaxsparse.train.loop.preemption import Preemption
from jaxsparse.train.loop.session import due_after, due_at_resume
from jaxsparse.train.resolve.run import prepare


@pytest.fixture(scope="module")
def run(corpus, data_dir):
    return prepare(tiny_config(corpus, **{
        "data.data_dir": str(data_dir), "train.steps": 40, "train.log_every_steps": 10,
        "checkpoint.every_steps": 16, "eval.every_steps": 20, "pruning.interval": 4}))


def test_the_final_step_logs_checkpoints_and_evaluates_and_events_log(run):
    preempt = Preemption()
    final = due_after(run, run.steps, preempt)
    assert final.log and final.checkpoint and final.eval and not final.event and not final.stop
    events = [d for d in range(1, run.steps) if run.schedule.is_event(d, run.steps)]
    assert events and all(due_after(run, d, preempt).event and due_after(run, d, preempt).log
                          for d in events)
    quiet = next(d for d in range(1, run.steps) if d % 10 and d % 16 and d % 20 and d not in events)
    assert not due_after(run, quiet, preempt).any()
    assert due_after(run, 16, preempt).checkpoint and due_after(run, 20, preempt).eval


def test_a_sigterm_checkpoints_and_skips_the_eval(run):
    preempt = Preemption()
    preempt.requested = True
    due = due_after(run, 20, preempt)  # an eval step
    assert due.stop and not due.eval and due.any()


def test_at_resume_only_a_missing_eval_or_an_event_at_initialisation_is_due(run):
    assert due_at_resume(run, 20, dense=False, eval_missing=True).redo  # an eval step
    assert not due_at_resume(run, 20, dense=False, eval_missing=False).any()
    assert not due_at_resume(run, 16, dense=False, eval_missing=True).any()  # no eval due at 16
    assert due_at_resume(run, run.steps, dense=False, eval_missing=True).eval  # the final eval
    at_start = due_at_resume(run, 0, dense=False, eval_missing=True)
    assert not at_start.eval and at_start.event == bool(run.schedule.is_event(0, run.steps))
    assert not due_at_resume(run, 0, dense=True, eval_missing=True).event


def test_a_sigterm_in_the_final_step_saves_it_and_the_rerun_evaluates_and_finishes(
        corpus, data_dir, tmp_path):
    """A stop asked for during the final step (a real Preemption whose flag is set, as SIGTERM
    sets it) saves the final checkpoint and writes no summary.json; the rerun resumes there,
    evaluates and writes the summary an uninterrupted run writes."""
    import contextlib
    import dataclasses
    import json
    import shutil

    from jaxsparse import models
    from jaxsparse.train import train
    from jaxsparse.train.loop.actions import after_step
    from jaxsparse.train.loop.console import Progress
    from jaxsparse.train.loop.stepping import run_loop
    from jaxsparse.train.loop.session import Due, open_session
    from jaxsparse.train.steps import compiled
    from jaxsparse.train.steps.state import abstract_state
    from jaxsparse.train.workdir.checkpoints import Checkpointer

    config = tiny_config(corpus, **{"data.data_dir": str(data_dir), "train.steps": 8,
                                    "checkpoint.every_steps": 7, "eval.every_steps": 4,
                                    "checkpoint.async_save": False, "metrics.plots": False})
    clean = train(config, str(tmp_path / "clean"))
    work = tmp_path / "w"
    shutil.copytree(tmp_path / "clean", work)  # as if stopped after checkpoint 7
    shutil.rmtree(work / "checkpoints" / "8")
    (work / "summary.json").unlink()
    run = prepare(config)
    state = abstract_state(run.model, run.tx, run.mesh, models.DEFAULT_RULES, run.seq_len)
    with contextlib.ExitStack() as stack:
        ckpt = Checkpointer(str(work), run.checkpoint_keep, run.checkpoint_async)
        stack.callback(ckpt.close)
        _, restored = ckpt.resume_point(state[0], run.identity, run.steps, lambda: None)
        assert restored.step == 7
        loop, carry = open_session(run, str(work), ckpt, stack, compiled.for_run(run, None, state), restored)
        assert (loop.start, carry.state.step) == (7, 7) and not loop.at_resume.any()
        before = dataclasses.replace(carry, losses=list(carry.losses), pending=list(carry.pending))
        out = after_step(loop, carry, 7, Due(log=False, event=True, checkpoint=False, eval=True, stop=False))
        assert [(kind, step) for kind, step, _ in out.records] == [("pruning_event", 7), ("eval", 7)]
        assert carry == before  # measured, nothing changed: the loop applies `out` itself
        preempt = Preemption()
        preempt.requested = True  # what the SIGTERM handler sets
        assert run_loop(loop, carry, Progress(run.steps), preempt) == {"preempted_at": 8}
    assert (work / "checkpoints" / "8").is_dir() and not (work / "summary.json").exists()
    resumed = train(config, str(work))
    assert resumed["final_eval_loss"] == clean["final_eval_loss"]
    assert resumed["n_avg_realised"] == clean["n_avg_realised"]
    kinds = [(r["kind"], r["step"]) for r in map(json.loads, (work / "metrics.jsonl").read_text().splitlines())]
    assert kinds.count(("eval", 8)) == 1 and len(kinds) == len(set(kinds))
