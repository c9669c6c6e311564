"""The optax transform that applies scheduled pruning (magnitude |w| by default, any score).

Put it LAST in an ``optax.chain``::

    tx = optax.chain(optax.adamw(3e-4), magnitude_pruning(schedule, total_steps))
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)   # pruned weights are now exactly 0.0

Contract, per update call (``count`` = updates applied so far = index of the step whose
gradients are being applied):

1. ``new = params + updates`` (what ``optax.apply_updates`` will produce).
2. If step ``count + 1`` is a pruning event, the masks are recomputed from the scores of ``new``
   (the weights that step's forward pass would see; scores.py: |w| by default, or any score
   function, which also receives ``updates``, the step and ``tx.update``'s extra args), so the
   event "happens before the forward pass of its step and uses the current weights" (the
   paper, Jin et al. ICLR 2025, section 1). An event at step 0 is
   applied in ``init`` from the initial weights. Masks only shrink: pruned weights never return.
   Non-event steps skip the mask computation entirely (one ``lax.switch``, indexed by one small
   comparison against the event table). Their cost is an elementwise pass: the updates feed the
   event branch, so XLA materialises them instead of fusing them into the final select
   (bench/bench_pruning_step.py measures an ordinary step with and without the transform).
3. The returned updates are ``updates`` where the mask is True and ``-params`` where it is
   False, so after ``optax.apply_updates`` pruned weights are exactly 0.0 at every step, with
   no hook to call afterwards.

Masks live once, in ``PruningState.masks`` (state.py); feed a Flax model's ``masks`` collection
from ``mask_collection(get_masks(opt_state))``.

Optimizer state of pruned weights (policy): Adam moments are NOT reset (as in the paper's
released code). When the model multiplies kernels by their masks, a pruned weight's gradient is
exactly 0, so its moments decay geometrically and never matter: whatever Adam, weight decay or
any earlier transform proposes for a pruned position is replaced by ``-param`` (= 0 after the
first step), i.e. weight decay and momentum cannot move a pruned weight. Gradient clipping
sees only active weights' gradients (pruned ones are 0).

Scope: "global" uses ONE threshold over all prunable tensors together (the paper's method;
per-layer sparsities then differ); "layerwise" gives every tensor the scheduled density.
``min_density`` (global scope) keeps at least that fraction of every tensor, paid for by the others.
Structure "n:m" keeps the ``n`` largest of every ``m`` consecutive weights along the kernel's
fan-in (fanin.py: axis 0 of a rank-2 kernel, else ``fan_in_axes``); gradual events keep
``ceil(density * m)`` per group, and ``final_sparsity`` must be ``1 - n/m``.
A kernel stacked by ``nn.scan`` (leading layers axis) counts as one tensor for "layerwise".
Keep counts round to the nearest integer but never below 1 (event.py: a (1, 1) kernel under
"layerwise" keeps its one weight). Only floating-point leaves are ever pruned (an int32 leaf of
rank 2 is left alone, whatever ``include`` says). At an event a NaN/Inf prunable weight, a
NaN/negative score, or a weight pruned by an earlier event that is no longer 0 (the transform is
not last in the chain) keeps the old masks and flags the leaf; the step that found it reports it
(``report=``: a ``jax.pure_callback`` in those branches only, raising or warning as ``check_events``
does), and ``check_events`` / ``get_masks`` raise an error naming it, and warn naming a tensor that
lost every weight (event.py). These checks run on event steps, and the not-last check also on the
update right after each event (so a single-event schedule is covered); every other step pays
nothing for these checks. The callback is not free where it does not run: on the CPU backend a
program holding a host callback runs synchronously (the step's call returns only once the step has
run), so the caller's per-call host work (``nnx.jit``'s is several ms on a small model) no longer
overlaps the computation: wall time suffers most (bench/bench_pruning_step.py). ``report="off"``
compiles none. It is a pure callback because an effectful one (``jax.debug.callback``,
``io_callback``) also costs jax's fast dispatch path on every call (event.py).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsparse.pruning import event as event_lib
from jaxsparse.pruning.arguments import check_arguments
from jaxsparse.pruning import explicit, fanin
from jaxsparse.pruning import scores as scores_lib
from jaxsparse.pruning.schedule import Schedule
from jaxsparse.pruning.selection import prunable_flags
from jaxsparse.pruning.state import (PruningState, check_events, check_layout, new_state, report, stored_masks,
                                     with_masks)
from jaxsparse.pruning.structure import kept_per_group

_INT32_MAX = 2**31 - 1


def magnitude_pruning(schedule: Schedule, total_steps: int, **options: Any) -> optax.GradientTransformationExtraArgs:
    """Gradual magnitude pruning, the method of Jin et al. (ICLR 2025): ``scheduled_pruning`` with
    the score |w|. ``options`` are those of ``scheduled_pruning``, all but ``score``."""
    if "score" in options:
        raise TypeError("magnitude_pruning ranks weights by |w| and takes no score=; for another "
                        "score call scheduled_pruning(schedule, total_steps, score=...)")
    return scheduled_pruning(schedule, total_steps, **options)


def scheduled_pruning(schedule: Schedule, total_steps: int, *, scope: str = "global",
                      structure: str | None = None, include: str | None = None,
                      exclude: str | None = None, score: scores_lib.Score | None = None,
                      min_density: float | None = None,
                      fan_in_axes: fanin.FanInAxes | None = None,
                      report: str = "raise") -> optax.GradientTransformationExtraArgs:
    """Scheduled pruning as the LAST element of an ``optax.chain``; magnitude |w| unless ``score``.

    Args:
      schedule: a ``Schedule`` (start/end are fractions of ``total_steps``).
      total_steps: number of training steps T (optimizer updates) of the run; under
        ``optax.MultiSteps(k)`` that is micro-steps // k, not micro-steps (multi_steps.py).
      scope: "global" (one threshold over all prunable weights) or "layerwise".
      structure: None (unstructured) or "n:m", e.g. "2:4", groups along each kernel's fan-in.
      include / exclude: regular expressions (``re.search``) on the '/'-joined module path (boxes
        such as ``nn.Partitioned`` left out: ``q/kernel``) that override the default prunable rule
        (rank >= 2, float, no "embed" in the path).
      score: a score function (contract in scores.py), e.g. ``scores.random_scores(0)`` or
        ``scores.saliency``; None is ``scores.magnitude`` (|w|). It is called on event steps only,
        with the extra args of ``tx.update`` and ``step``.
      min_density: global scope, unstructured: every tensor keeps at least this fraction of its
        weights (rounded up), in [0, 1 - schedule.final_sparsity]; None: no floor.
      fan_in_axes: ``(path, leaf) -> axes | None``, the input axes of each kernel for "n:m" (fanin.py);
        None infers them (rank 2: axis 0; any other rank is refused, naming the kernel).

      report: what an event found (the transform not last in the chain, NaN/Inf weights, a bad score,
        an emptied tensor) is reported by the transform itself, from the step that found it: on an
        event step, or on the update right after one (the not-last check), under ``jax.jit`` and
        ``nnx.jit`` alike, through a host callback compiled into those branches only (ordinary steps
        run none). "raise": the error ``check_events`` would raise, reaching the caller through XLA
        (on CPU a ``ValueError`` whose message carries it, from that step's call); "warn": each as a
        ``UserWarning`` (and training goes on); "off": no callback (poll ``check_events``). Each
        finding is reported once. With several processes the callback runs on the process that
        holds device 0 only.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` requires ``params``.

    Raises:
      ValueError: bad arguments (here), or at ``init`` patterns that match no parameter, n:m fan-in
        axes that are ambiguous or not a multiple of m, or more than 2**31-1 weights; from
        ``check_events`` / ``get_masks`` when the transform is not last in the chain.
      FloatingPointError: from ``init`` (event at step 0), and from ``check_events`` / ``get_masks``
        after an event that found a NaN/Inf prunable weight or a NaN/negative score (event.py).
    """
    nm = check_arguments(schedule, total_steps, scope, structure, include, exclude, score, min_density, report)
    cfg = _Config(events=schedule.event_steps(total_steps), densities=schedule.event_densities(total_steps),
                  scope=scope, nm=nm, include=include, exclude=exclude,
                  score_fn=scores_lib.magnitude if score is None else score, min_density=min_density,
                  fan_in_axes=fan_in_axes, report=report,
                  per_group=None if nm is None else kept_per_group(schedule, total_steps, nm))
    return optax.GradientTransformationExtraArgs(functools.partial(_init, cfg), functools.partial(_update, cfg))


@dataclasses.dataclass(frozen=True, eq=False)
class _Config:
    """What ``scheduled_pruning`` was asked for, resolved on the host (event table, score)."""

    events: np.ndarray
    densities: np.ndarray
    scope: str
    nm: tuple[int, int] | None
    include: str | None
    exclude: str | None
    score_fn: Any
    min_density: float | None
    fan_in_axes: Any
    report: str
    per_group: np.ndarray | None


class _Tables(NamedTuple):
    """The params' leaves as the transform sees them (host-side facts of one trace)."""

    treedef: Any
    leaves: list
    idx: list[int]       # positions of the prunable leaves in ``leaves``
    sizes: list[int]
    paths: list[str]     # module paths of all leaves
    axes: list | None    # n:m fan-in axes of each prunable leaf
    floors: np.ndarray | None  # min_density floor of each prunable leaf


def _tables(cfg: _Config, params: Any) -> _Tables:
    """Leaf tables of ``params``, validated (patterns, n:m fan-in, int32 total)."""
    treedef = jax.tree.structure(params)
    leaves = jax.tree.leaves(params)
    paths, flags = prunable_flags(params, cfg.include, cfg.exclude)
    idx = [i for i, f in enumerate(flags) if f]
    sizes = [int(np.prod(leaves[i].shape)) for i in idx]
    if sum(sizes) > _INT32_MAX:
        raise ValueError(f"{sum(sizes)} prunable weights exceed the 2**31-1 supported")
    axes = None if cfg.nm is None else [fanin.resolve(cfg.fan_in_axes, paths[i], leaves[i], cfg.nm[1])
                                        for i in idx]
    floors = None
    if cfg.min_density:
        floors = np.maximum(np.ceil(np.asarray(sizes) * cfg.min_density - 1e-9), 1).astype(np.int32)
    return _Tables(treedef, leaves, idx, sizes, paths, axes, floors)


def _keep_table(cfg: _Config, tables: _Tables) -> np.ndarray:
    return event_lib.keep_counts(cfg.densities, tables.sizes, cfg.scope, cfg.per_group)


def _event_masks(cfg: _Config, tables: _Tables, new_leaves, upd_leaves, masks, k_row, step, extra_args,
                 armed=None):
    """(masks, codes) of one event from the weights after the update (``new_leaves``, all leaves).

    ``armed`` (a bool scalar, or None at ``init``): check that ``tables.leaves`` (the params the
    update received) are 0 where ``masks`` pruned them (the transform is last in the chain)."""
    treedef, idx, paths = tables.treedef, tables.idx, tables.paths
    updates = None if upd_leaves is None else treedef.unflatten(upd_leaves)
    scored = treedef.flatten_up_to(cfg.score_fn(treedef.unflatten(new_leaves), updates, step=step,
                                                **extra_args))
    weights = [new_leaves[i] for i in idx]
    chosen = event_lib.check_scores([scored[i] for i in idx], weights, [paths[i] for i in idx])
    new, codes = event_lib.compute_masks(
        chosen, masks, k_row, cfg.scope, None if cfg.nm is None else cfg.nm[1],
        None if cfg.score_fn is scores_lib.magnitude else weights, tables.axes, tables.floors)
    if armed is not None:
        stale = event_lib.stale_codes([tables.leaves[i] for i in idx], masks, armed)
        codes = codes | jnp.stack(stale).astype(jnp.int32)
    fine = jnp.all((codes & event_lib.BLOCKING) == 0)  # a failing event leaves the masks as they were
    new = [jnp.where(fine, explicit.like(m_new, m_old), m_old) for m_new, m_old in zip(new, masks)]
    return new, codes | jnp.stack(event_lib.emptied_codes(new)).astype(jnp.int32)


def _init(cfg: _Config, params: Any) -> PruningState:
    tables = _tables(cfg, params)
    leaves, idx = tables.leaves, tables.idx
    masks = [explicit.like(jnp.ones_like(leaves[i], dtype=bool), leaves[i]) for i in idx]
    codes = jnp.zeros((len(idx),), jnp.int32)
    if len(cfg.events) and cfg.events[0] == 0:  # an event at step 0 acts on the initial weights
        masks, codes = _event_masks(cfg, tables, leaves, None, masks, jnp.asarray(_keep_table(cfg, tables)[0]),
                                    jnp.zeros((), jnp.int32), {})
    state = new_state(params, idx, masks, jnp.zeros((), jnp.int32), codes)
    if not isinstance(codes, jax.core.Tracer):  # init outside jit: say so at once
        check_events(state)
    return state


def _update(cfg: _Config, updates, state: PruningState, params=None, **extra_args):
    if params is None:
        raise ValueError("the pruning transform needs params: call tx.update(grads, state, params)")
    tables = _tables(cfg, params)
    treedef, leaves, idx = tables.treedef, tables.leaves, tables.idx
    upd_leaves = treedef.flatten_up_to(updates)
    state = check_layout(state, idx, tables.paths)
    masks = [explicit.like(m, leaves[i]) for m, i in zip(stored_masks(state), idx)]
    invalid = state.invalid
    if len(cfg.events):
        masks, invalid = _maybe_event(cfg, tables, upd_leaves, masks, state, extra_args)
    out = list(upd_leaves)
    for j, i in enumerate(idx):
        # in the wider of the two dtypes, so that params + updates is exactly 0 when pruned
        dtype = jnp.promote_types(upd_leaves[i].dtype, leaves[i].dtype)
        out[i] = jnp.where(masks[j], upd_leaves[i].astype(dtype), -leaves[i].astype(dtype))
    return treedef.unflatten(out), with_masks(state, masks, count=optax.safe_increment(state.count),
                                              invalid=invalid)


def _maybe_event(cfg: _Config, tables: _Tables, upd_leaves, masks, state: PruningState, extra_args):
    """(masks, invalid) after step ``state.count + 1``'s event if it is one. One ``lax.switch`` picks
    what runs: nothing on an ordinary step; on an event step the event, with every check; on the
    update right after an event the check that the weights that event pruned are 0 (so a schedule with
    a single event still finds a transform that is not last). Both of the latter report what they
    found (``report``). The switch index is one small fused comparison against the event table."""
    count = state.count
    events = jnp.asarray(cfg.events)
    table = jnp.asarray(_keep_table(cfg, tables))
    e = jnp.maximum(jnp.sum(events <= count + 1) - 1, 0)  # the last event at or before the next step
    branch = jnp.where(jnp.any(events == count + 1), 1, jnp.where((count > 0) & jnp.any(events == count), 2, 0))
    prunable = [tables.leaves[i] for i in tables.idx]
    paths = [tables.paths[i] for i in tables.idx]

    # |w| is read at the prunable leaves only, so the others' updates need not feed the branch
    scored = set(tables.idx) if cfg.score_fn is scores_lib.magnitude else set(range(len(tables.leaves)))

    def event():  # the weights after this update, computed only on event steps
        new = [_add(w, u) if i in scored else w for i, (w, u) in enumerate(zip(tables.leaves, upd_leaves))]
        new_masks, codes = _event_masks(cfg, tables, new, upd_leaves, masks, table[e], count + 1, extra_args,
                                        armed=count > 0)
        return new_masks, report(cfg.report, paths, state.invalid, state.invalid | codes, count)

    def after_event():  # the params this update received must be 0 wherever the last event pruned
        stale = jnp.stack(event_lib.stale_codes(prunable, masks, jnp.asarray(True))).astype(jnp.int32)
        return list(masks), report(cfg.report, paths, state.invalid, state.invalid | stale, count)

    return jax.lax.switch(branch, (lambda: (list(masks), state.invalid), event, after_event))


def _add(w, u):
    """``w + u`` in ``w``'s dtype (what ``optax.apply_updates`` gives); non-array leaves as they are."""
    if u is None or not hasattr(w, "dtype"):
        return w
    return (w + u).astype(w.dtype)
