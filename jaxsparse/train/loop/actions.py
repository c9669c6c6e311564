"""What the loop measures after a step, in one call (`after_step`): the metrics fetched to
host and their divergence check, the pruning-event record (total and per-layer densities), the
train record, the eval loss; returned as a `StepOutcome` (records to write, console lines to print)
that the loop (`jaxsparse.train.loop.driver.run_loop`) hands to the records, the checkpointer and
the console in that order. `after_step` reads the loop's `Loop` and `Carry` and changes neither.

The helpers below it are pure: each takes what it measures and returns plain numbers.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from jaxsparse import data as data_lib
from jaxsparse.models.accounting import train_flops_per_token
from jaxsparse.pruning import sparsity_summary
from jaxsparse.pruning.selection import named_leaves
from jaxsparse.train.loop.session import Carry, Due, Loop
from jaxsparse.train.resolve.run import Run
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
    first; then what other rooms give (the masks of an event step, their leaves' names, the FLOPs
    per token at the density in force) is read before the records are built."""
    fetched = jax.device_get(carry.pending)
    losses = [float(m["loss"]) for m in fetched] or carry.losses
    norms = [float(m["grad_norm"]) for m in fetched]
    bad = first_non_finite(losses, norms) if fetched else None
    if bad is not None:
        first = done - len(losses) + bad + 1  # its loss was computed on step first-1's params
        return StepOutcome([], [], carry.warned, carry.active, losses, first_bad=first,
                           divergence=diverged(losses, norms, done, LAST_GOOD))
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
        records.append(("pruning_event", done, event_record(run, done, named, active, loop.replicated)))
    train = train_record(run, carry, done, losses, norms, active, flops) if fetched else None
    if train is not None:
        records.append(("train", done, train))
    eval_loss = evaluate(loop.eval_step, carry.state, loop.eval_batches, loop.batch_sharding) if due.eval else None
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


def event_record(run: Run, done: int, named: list, active: int, replicated: NamedSharding) -> dict:
    """The pruning_event record of step `done` of `run` (`named`: the masks'
    (names, mask) leaves, `named_leaves`; `active`: their kept weights): density, scheduled
    density and per-layer sparsity."""
    return {"density": active / run.plan.params.prunable,
            "scheduled_density": float(run.schedule.density_at(done, run.steps)),
            "per_layer_sparsity": layer_sparsity(named, replicated)}


def evaluate(eval_step: Callable[[TrainState, dict[str, jax.Array]], dict[str, jax.Array]],
             state: TrainState, batches: list[dict[str, np.ndarray]], sharding: NamedSharding) -> float:
    """Mean eval loss (nats/token) of `state` over the fixed validation `batches` (each this
    process's rows, made global with `sharding`)."""
    sums = [eval_step(state, data_lib.to_global_batch(b, sharding)) for b in batches]
    sums = jax.device_get(sums)
    return float(sum(s["loss_sum"] for s in sums) / max(1.0, sum(s["weights"] for s in sums)))


def per_layer_sparsity(masks: Any, replicated: NamedSharding) -> dict[str, float]:
    """Sparsity per mask of a masks collection; a kernel stacked by nn.scan (rank >= 3) gets one
    entry per layer, named ``path[i]``."""
    return layer_sparsity(named_leaves(masks), replicated)


def layer_sparsity(named: list, replicated: NamedSharding) -> dict[str, float]:
    """`per_layer_sparsity` of the masks' (names, mask) leaves (`named_leaves`)."""
    flat = [("/".join(names), m) for names, m in named]
    counts = _kept_counter(replicated)([m for _, m in flat])
    out = {}
    for (path, m), c in zip(flat, jax.device_get(counts)):
        per = int(np.prod(m.shape[1:])) if m.ndim >= 3 else int(np.prod(m.shape))
        if m.ndim >= 3:
            out.update({f"{path}[{i}]": 1.0 - int(ci) / per for i, ci in enumerate(c)})
        else:
            out[path] = 1.0 - int(c) / per
    return out


def _kept_counts(masks: list[jax.Array]) -> list[jax.Array]:
    """int32 count of True per mask, per layer for scanned (rank >= 3) masks."""
    return [jnp.sum(m, axis=tuple(range(1, m.ndim)) if m.ndim >= 3 else None, dtype=jnp.int32) for m in masks]


@functools.lru_cache(maxsize=None)
def _kept_counter(replicated: NamedSharding) -> Any:
    """`_kept_counts` jitted once per output sharding (so each pruning event reuses one compile)."""
    return jax.jit(_kept_counts, out_shardings=replicated)


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


def train_record(run: Run, carry: Carry, done: int, losses: list[float], norms: list[float],
                 active: int, flops_per_token: float) -> dict:
    """The metrics.jsonl record of the log interval ending at step `done` (`carry`: where and when
    the interval began, `step_at_log` and `t_log`, and N̄ so far; `active`: prunable weights in
    force; `flops_per_token`: training FLOPs per token at that density, `train_flops_per_token`)."""
    plan, now = run.plan, time.time()
    tok_s = plan.tokens_per_step * (done - carry.step_at_log) / max(now - carry.t_log, 1e-9)
    density = active / plan.params.prunable
    tflops = flops_per_token * tok_s / 1e12
    record = {"loss": float(sum(losses) / len(losses)), "learning_rate": float(run.learning_rate(done - 1)),
              "grad_norm": norms[-1], "tokens_per_s": tok_s,
              "step_time_s": (now - carry.t_log) / max(done - carry.step_at_log, 1),
              "density": density, "active_params": plan.params.other + active,
              "n_avg_so_far": carry.active_sum / done, "tflops_per_s": tflops}
    peak = run.peak_tflops_per_device
    if peak > 0:
        record["mfu"] = tflops / (peak * jax.device_count())
    return record
