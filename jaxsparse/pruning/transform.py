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
   Non-event steps skip the mask computation entirely (``lax.cond``). Their one cost is an
   elementwise pass: the updates feed the event branch, so XLA materialises them instead of
   fusing them into the final select (bench/bench_pruning_threshold.py reports it).
3. The returned updates are ``updates`` where the mask is True and ``-params`` where it is
   False, so after ``optax.apply_updates`` pruned weights are exactly 0.0 at every step, with
   no hook to call afterwards.

Masks live once, in ``PruningState.masks``: a pytree shaped like the params with a
bool array for every prunable leaf and ``None`` elsewhere. ``get_masks`` finds them anywhere in
an optimizer state (inside ``optax.chain``, ``optax.MultiSteps``, ``optax.inject_hyperparams``).
Feed a Flax model's ``masks`` collection from ``mask_collection(get_masks(opt_state))``.

Optimizer state of pruned weights (policy): Adam moments are NOT reset (as in the paper's
released code). When the model multiplies kernels by their masks, a pruned weight's gradient is
exactly 0, so its moments decay geometrically and never matter: whatever Adam, weight decay or
any earlier transform proposes for a pruned position is replaced by ``-param`` (= 0 after the
first step), i.e. weight decay and momentum cannot move a pruned weight. Gradient clipping
sees only active weights' gradients (pruned ones are 0).

Scope: "global" uses ONE threshold over all prunable tensors together (the paper's method;
per-layer sparsities then differ); "layerwise" gives every tensor the scheduled density.
Structure "n:m" keeps the ``n`` largest of every ``m`` consecutive fan-in weights (axis -2);
gradual events keep ``ceil(density * m)`` per group, and ``final_sparsity`` must be ``1 - n/m``.
A kernel stacked by ``nn.scan`` (leading layers axis) counts as one tensor for "layerwise".
Keep counts round to the nearest integer but never below 1 (event.py: a (1, 1) kernel under
"layerwise" keeps its one weight). Only floating-point leaves are ever pruned (an int32 leaf of
rank 2 is left alone, whatever ``include`` says). At an event a NaN/Inf prunable weight, or a
NaN/negative score, keeps the old masks and flags the leaf; ``check_events`` / ``get_masks``
then raise ``FloatingPointError`` naming it (event.py).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsparse.pruning import event as event_lib
from jaxsparse.pruning import scores as scores_lib
from jaxsparse.pruning.schedule import Schedule
from jaxsparse.pruning.selection import compile_pattern, path_str, prunable_flags
from jaxsparse.pruning.structure import kept_per_group, parse_structure

SCOPES = ("global", "layerwise")
_INT32_MAX = 2**31 - 1


class PruningState(NamedTuple):
    """State of the pruning transform (whatever its score).

    Attributes:
      count: int32 scalar, updates applied so far (the index of the next forward-pass step).
      masks: params-shaped pytree; bool array (True = kept) per prunable leaf, None elsewhere.
      invalid: int32[number of prunable leaves] (the non-None leaves of ``masks``, in order), sticky
        bits set by an event that found a NaN/Inf weight (1) or a NaN/negative score (2) there;
        ``check_events`` turns them into an error naming the leaves.
    """

    count: jax.Array
    masks: Any
    invalid: jax.Array


MagnitudePruningState = PruningState  # the name before scores were pluggable


def magnitude_pruning(schedule: Schedule, total_steps: int, *, scope: str = "global",
                      structure: str | None = None, include: str | None = None,
                      exclude: str | None = None,
                      score: scores_lib.Score | None = None) -> optax.GradientTransformationExtraArgs:
    """Scheduled pruning as the last element of an ``optax.chain``; magnitude |w| unless ``score``.

    Args:
      schedule: a ``Schedule`` (start/end are fractions of ``total_steps``).
      total_steps: number of training steps T (optimizer updates) of the run.
      scope: "global" (one threshold over all prunable weights) or "layerwise".
      structure: None (unstructured) or "n:m", e.g. "2:4", groups along the fan-in axis (-2).
      include / exclude: regular expressions (``re.search``) on the '/'-joined parameter path
        that override the default prunable rule (rank >= 2, float, no "embed" in the path).
      score: a score function (contract in scores.py), e.g. ``scores.random_scores(0)`` or
        ``scores.saliency``; None is ``scores.magnitude`` (|w|). It is called on event steps only,
        with the extra args of ``tx.update`` and ``step``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` requires ``params``.

    Raises:
      ValueError: bad arguments (here), or at ``init`` patterns that match no parameter, an n:m
        group size that does not divide a kernel's fan-in axis, or more than 2**31-1 weights.
      FloatingPointError: from ``init`` (event at step 0), and from ``check_events`` / ``get_masks``
        after an event that found a NaN/Inf prunable weight or a NaN/negative score (event.py).
    """
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule={schedule!r} must be a jaxsparse.pruning.Schedule")
    schedule.check_fits(total_steps)
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} is unknown; allowed: {', '.join(SCOPES)}")
    score_fn = scores_lib.magnitude if score is None else score
    if not callable(score_fn):
        raise TypeError(f"score={score!r} must be a function (params, updates, **extra_args) -> scores")
    nm = parse_structure(structure)
    if nm is not None and not math.isclose(schedule.final_sparsity, 1 - nm[0] / nm[1],
                                           abs_tol=1e-6):
        raise ValueError(
            f"structure={structure!r} keeps {nm[0]} of {nm[1]}, so schedule.final_sparsity must be "
            f"{1 - nm[0] / nm[1]} (got {schedule.final_sparsity})")
    compile_pattern("include", include)
    compile_pattern("exclude", exclude)

    events = schedule.event_steps(total_steps)
    densities = schedule.event_densities(total_steps)
    per_group = None if nm is None else kept_per_group(schedule, total_steps, nm)

    def leaf_tables(params):
        """(treedef, leaves, indices of the prunable leaves, their sizes, all leaf paths)."""
        treedef = jax.tree.structure(params)
        leaves = jax.tree.leaves(params)
        paths, flags = prunable_flags(params, include, exclude)
        idx = [i for i, f in enumerate(flags) if f]
        sizes = [int(np.prod(leaves[i].shape)) for i in idx]
        return treedef, leaves, idx, sizes, paths

    def validate(params) -> None:
        _, leaves, idx, sizes, paths = leaf_tables(params)
        if sum(sizes) > _INT32_MAX:
            raise ValueError(f"{sum(sizes)} prunable weights exceed the 2**31-1 supported")
        if nm is not None:
            for i in idx:
                shape = leaves[i].shape
                if len(shape) < 2 or shape[-2] % nm[1]:
                    raise ValueError(
                        f"structure={structure!r}: group size m={nm[1]} does not divide the "
                        f"fan-in axis (-2) of {paths[i]} with shape {tuple(shape)}")

    def event_masks(tables, new_leaves, upd_leaves, masks, k_row, step, extra_args):
        """Masks of one event from the weights after the update (``new_leaves``, all leaves)."""
        treedef, _, idx, _, paths = tables
        updates = None if upd_leaves is None else treedef.unflatten(upd_leaves)
        scored = score_fn(treedef.unflatten(new_leaves), updates, step=step, **extra_args)
        scored = treedef.flatten_up_to(scored)
        weights, names = [new_leaves[i] for i in idx], [paths[i] for i in idx]
        chosen = event_lib.check_scores([scored[i] for i in idx], weights, names)
        new, codes = event_lib.compute_masks(chosen, masks, k_row, scope, None if nm is None else nm[1],
                                             None if score_fn is scores_lib.magnitude else weights)
        fine = jnp.all(codes == 0)  # a failing event leaves the masks as they were
        return [jnp.where(fine, m_new, m_old) for m_new, m_old in zip(new, masks)], codes

    def event_index(step):
        return jnp.searchsorted(jnp.asarray(events), step, side="right") - 1

    def init_fn(params):
        validate(params)
        tables = leaf_tables(params)
        treedef, leaves, idx, sizes, _ = tables
        masks = [jnp.ones(leaves[i].shape, bool) for i in idx]
        codes = jnp.zeros((len(idx),), jnp.int32)
        if len(events) and events[0] == 0:  # an event at step 0 acts on the initial weights
            table = event_lib.keep_counts(densities, sizes, scope, per_group)
            masks, codes = event_masks(tables, leaves, None, masks, jnp.asarray(table[0]),
                                       jnp.zeros((), jnp.int32), {})
        state = PruningState(count=jnp.zeros((), jnp.int32),
                             masks=_unflatten(treedef, len(leaves), idx, masks), invalid=codes)
        if not isinstance(codes, jax.core.Tracer):  # init outside jit: say so at once
            check_events(state)
        return state

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("the pruning transform needs params: call tx.update(grads, state, params)")
        tables = leaf_tables(params)
        treedef, leaves, idx, sizes, _ = tables
        upd_leaves = treedef.flatten_up_to(updates)
        masks = [m for m in treedef.flatten_up_to(state.masks) if m is not None]
        next_step = state.count + 1
        if len(events):
            table = jnp.asarray(event_lib.keep_counts(densities, sizes, scope, per_group))
            e = event_index(next_step)
            is_event = (e >= 0) & (jnp.asarray(events)[jnp.maximum(e, 0)] == next_step)

            def event():  # the weights after this update, computed only on event steps
                new = [_add(w, u) for w, u in zip(leaves, upd_leaves)]
                new_masks, codes = event_masks(tables, new, upd_leaves, masks, table[jnp.maximum(e, 0)],
                                               next_step, extra_args)
                return new_masks, state.invalid | codes
            masks, invalid = jax.lax.cond(is_event, event, lambda: (list(masks), state.invalid))
        else:
            invalid = state.invalid
        out = list(upd_leaves)
        for j, i in enumerate(idx):
            # in the wider of the two dtypes, so that params + updates is exactly 0 when pruned
            dtype = jnp.promote_types(upd_leaves[i].dtype, leaves[i].dtype)
            out[i] = jnp.where(masks[j], upd_leaves[i].astype(dtype), -leaves[i].astype(dtype))
        new_state = PruningState(
            count=optax.safe_increment(state.count),
            masks=_unflatten(treedef, len(leaves), idx, masks), invalid=invalid)
        return treedef.unflatten(out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _add(w, u):
    """``w + u`` in ``w``'s dtype (what ``optax.apply_updates`` gives); non-array leaves as they are."""
    if u is None or not hasattr(w, "dtype"):
        return w
    return (w + u).astype(w.dtype)


def _unflatten(treedef, n_leaves: int, idx: list[int], masks: list) -> Any:
    full: list = [None] * n_leaves
    for j, i in enumerate(idx):
        full[i] = masks[j]
    return treedef.unflatten(full)


def get_masks(opt_state: Any) -> Any:
    """The masks (params-shaped pytree, None at non-prunable leaves) held in ``opt_state``.

    Works wherever the transform sits: inside ``optax.chain``, ``optax.MultiSteps``,
    ``optax.inject_hyperparams`` or any other pytree of states.

    Raises:
      ValueError: when ``opt_state`` holds no, or more than one, ``PruningState``.
      FloatingPointError: outside jit, when an event found NaN/Inf weights (see ``check_events``).
    """
    found = find_pruning_states(opt_state)
    if len(found) != 1:
        raise ValueError(f"expected one PruningState in the optimizer state, found "
                         f"{len(found)}; is magnitude_pruning in the optax chain?")
    check_events(found[0])
    return found[0].masks


def check_events(opt_state: Any) -> None:
    """Raise ``FloatingPointError`` naming the leaves if a pruning event in ``opt_state`` found a
    NaN/Inf prunable weight or a NaN/negative score (its masks were then left unchanged). Reads one
    small int32 array per pruning state from the device; does nothing under tracing (inside jit).
    Call it after event steps (or every few steps) in your own loop; ``get_masks`` calls it too."""
    for state in find_pruning_states(opt_state):
        if isinstance(state.invalid, jax.core.Tracer):
            continue
        paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.masks)[0]]
        message = event_lib.describe_invalid(np.asarray(jax.device_get(state.invalid)), paths)
        if message:
            raise FloatingPointError(f"{message} (steps so far: {int(jax.device_get(state.count))})")


def find_pruning_states(opt_state: Any) -> list[PruningState]:
    """Every ``PruningState`` inside ``opt_state`` (any score; nested anywhere)."""
    return [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, PruningState))
            if isinstance(x, PruningState)]


def mask_collection(masks: Any) -> Any:
    """``masks`` with the None leaves (and emptied dicts) dropped: the nested-dict form of a
    Flax ``masks`` variable collection, e.g. ``{'layers_0': {'attn': {'q': {'kernel': m}}}}``."""
    if isinstance(masks, dict):
        out = {}
        for key, value in masks.items():
            sub = mask_collection(value)
            if sub is not None and not (isinstance(sub, dict) and not sub):
                out[key] = sub
        return out
    return masks
