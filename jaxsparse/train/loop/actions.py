"""What the loop measures after a step, in one call (`after_step`): the metrics fetched to
host and their divergence check, the eval loss, the masks of a pruning event (with the pruning
checks' warnings); the records built from them (`report.event_record`, `report.train_record`) are
returned as a `StepOutcome` (records to write, console lines to print) that the loop
(`jaxsparse.train.loop.stepping.run_loop`) hands to the records, the checkpointer and the console
in that order. `after_step` reads the loop's `Loop` and `Carry` and changes neither.

The helpers below it are pure: each takes what it measures and returns plain numbers.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxsparse import data as data_lib
from jaxsparse.models.accounting import train_flops_per_token
from jaxsparse.pruning import sparsity_summary
from jaxsparse.pruning.selection import named_leaves
from jaxsparse.train.loop import report
from jaxsparse.train.loop.session import Carry, Due, Loop
from jaxsparse.train.steps.state import TrainState
from jaxsparse.train.steps.step import model_masks

LAST_GOOD = "<last good checkpoint>"  # filled in by the loop once the checkpointer says which


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """What `after_step` measured after step `done`. records: (kind, step, values) for metrics.jsonl in
    order; lines: console lines before the progress line (the redo note, new warnings); warned:
    every pruning-check warning printed so far, these lines' included; active: prunable weights in
    force; losses: the interval's train losses; eval_loss: None when no eval was due (over
    `eval_batches` batches); train: the train record (None: no step since the last). On a
    non-finite loss: `first_bad` is the step whose loss was not finite (its parameters are those
    of step first_bad - 1), `divergence` the error text with LAST_GOOD to fill, records empty."""

    records: list[tuple[str, int, dict]]
    lines: list[str]
    warned: frozenset[str]
    active: int
    losses: list[float]
    eval_loss: float | None = None
    eval_batches: int = 0
    train: dict | None = None
    first_bad: int | None = None
    divergence: str | None = None


def after_step(loop: Loop, carry: Carry, done: int, due: Due) -> StepOutcome:
    """Measure what `due` asks after step `done`; `carry.pending` holds the device metrics of the
    steps since the last fetch (none at the resume step). A non-finite loss stops the measuring
    first; then the eval loss and what other rooms give (the masks of an event step, their
    leaves' names, the FLOPs per token at the density in force) are read before the records are
    built."""
    fetched = jax.device_get(carry.pending)
    losses = [float(m["loss"]) for m in fetched] or carry.losses
    norms = [float(m["grad_norm"]) for m in fetched]
    bad = first_non_finite(losses, norms) if fetched else None
    if bad is not None:
        first = done - len(losses) + bad + 1  # its loss was computed on step first-1's params
        return StepOutcome([], [], carry.warned, carry.active, losses, first_bad=first,
                           divergence=diverged(losses, norms, done, LAST_GOOD))
    eval_loss = evaluate(loop.eval_step, carry.state, loop.eval_batches, loop.batch_sharding) if due.eval else None
    masks, new = masks_of(carry.state, carry.warned) if due.event else (None, [])
    lines = [f"warning: {message}" for message in new]
    named = named_leaves(masks) if masks is not None else []
    active = sparsity_summary(masks).active if masks is not None else carry.active
    run, prunable = loop.run, loop.run.plan.params.prunable
    flops = train_flops_per_token(run.model_config, run.seq_len, prunable, active / prunable) if fetched else 0.0
    if due.redo:
        lines.insert(0, f"redoing the eval of step {done}: its record is missing (the run was "
                        "stopped after the checkpoint, before the eval)")
    records = []
    if masks is not None:
        records.append(("pruning_event", done, report.event_record(run, done, named, active, loop.replicated)))
    train = report.train_record(run, carry, done, losses, norms, active, flops) if fetched else None
    if train is not None:
        records.append(("train", done, train))
    if eval_loss is not None:
        records.append(("eval", done, {"eval_loss": eval_loss}))
    return StepOutcome(records, lines, carry.warned | frozenset(new), active, losses, eval_loss,
                       run.eval_batches, train)


def masks_of(state: TrainState, warned: frozenset[str]) -> tuple[Any, list[str]]:
    """(the masks collection of `state`; the pruning checks' warnings not in `warned`, each once)."""
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        masks = model_masks(state.opt_state)
    return masks, [m for m in dict.fromkeys(str(w.message) for w in found) if m not in warned]


def evaluate(eval_step: Callable[[TrainState, dict[str, jax.Array]], dict[str, jax.Array]],
             state: TrainState, batches: list[dict[str, np.ndarray]], sharding: NamedSharding) -> float:
    """Mean eval loss (nats/token) of `state` over the fixed validation `batches` (each this
    process's rows, made global with `sharding`)."""
    sums = [eval_step(state, data_lib.to_global_batch(b, sharding)) for b in batches]
    sums = jax.device_get(sums)
    return float(sum(s["loss_sum"] for s in sums) / max(1.0, sum(s["weights"] for s in sums)))


def first_non_finite(losses: list[float], norms: list[float]) -> int | None:
    """Index of the first step whose loss or gradient norm is not finite (None: all finite)."""
    for i, (loss, norm) in enumerate(zip(losses, norms)):
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return i
    return None


def diverged(losses: list[float], norms: list[float], done: int, last_good: str) -> str:
    """The divergence error's text: `last_good` describes the newest checkpoint whose loss was finite."""
    return (
        f"training diverged: loss {losses[-1]} / grad norm {norms[-1]} is not finite by step "
        f"{done}; stopped. The last good checkpoint (its loss was finite): {last_good}; lower "
        "config.train.learning_rate (or check the data) and rerun to resume from it.")
