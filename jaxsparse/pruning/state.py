"""The pruning transform's state, and reading it: masks, event checks, the Flax ``masks`` collection.

Masks live once, in ``PruningState.masks``: a flat tuple with one bool array (True = kept) per
prunable leaf, in ``jax.tree.leaves(params)`` order, each with its kernel's sharding (and inside the
same ``nn.Partitioned`` or NNX box as the kernel when the params given to ``init`` are boxed).
Where each mask sits in the params is static (``MaskLayout``, the state's pytree aux data), so
the state's only leaves are arrays (count, masks, invalid: an ``nnx.Optimizer``'s state has a shape
on every variable) and it adds few pytree nodes (``nnx.jit`` walks each of them on every call).
``get_masks`` finds the state anywhere in an optimizer state (inside ``optax.chain``,
``optax.MultiSteps``, ``optax.inject_hyperparams``, NNX ``OptState`` variables) and gives the masks
params-shaped, with ``None`` at the leaves that are not pruned.

What an event found is recorded in ``PruningState.invalid`` (bits, sticky; event.py), reported by
the step that found it (``report``: a host callback in the event branches) and read outside jit by
``check_events`` (``get_masks`` runs the same checks): errors for a NaN/Inf weight, a bad score or the transform
not being last in the chain; a warning naming a tensor that lost every weight.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

from jaxsparse.pruning import event as event_lib
from jaxsparse.pruning.multi_steps import warn_inside_multi_steps
from jaxsparse.pruning.selection import is_box, leaf_paths, named_leaves


@dataclasses.dataclass(frozen=True)
class MaskLayout:
    """Where the masks of a ``PruningState`` sit in the params (static, hashable).

    Attributes:
      tree: the structure of the params with boxes (``is_box``) as leaves and ``optax.MaskedNode()``
        in place of every leaf or box that is not pruned: ``tree.unflatten(masks)`` is params-shaped.
      leaf_index: the position of each mask's leaf in ``jax.tree.leaves(params)``.
      paths: the '/'-joined module path of each mask's leaf (``selection.leaf_paths``).
    """

    tree: Any
    leaf_index: tuple[int, ...]
    paths: tuple[str, ...]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["count", "masks", "invalid"],
                   meta_fields=["layout"])
@dataclasses.dataclass(frozen=True, eq=False)
class PruningState:
    """State of the pruning transform (whatever its score).

    Attributes:
      count: int32 scalar, updates applied so far (the index of the next forward-pass step).
      masks: tuple, a bool array (True = kept) per prunable leaf in ``jax.tree.leaves(params)``
        order, with its kernel's sharding (in the kernel's box when ``init`` was given boxed params).
      invalid: int32[len(masks)], sticky bits set by events: a NaN/Inf weight (1), a NaN/negative
        score (2), a weight pruned earlier no longer 0 (4: the transform is not last), every weight
        pruned (8: a warning).
      layout: static (pytree aux data): where each mask sits in the params (``MaskLayout``).
    """

    count: Any
    masks: tuple
    invalid: Any
    layout: MaskLayout

    def _replace(self, **changes: Any) -> PruningState:
        return dataclasses.replace(self, **changes)


def new_state(params: Any, idx: list[int], masks: list[jax.Array], count: jax.Array,
              invalid: jax.Array) -> PruningState:
    """``PruningState`` of ``init``: ``masks[j]`` is the mask of leaf ``idx[j]`` of ``jax.tree.leaves(params)``
    (put in that leaf's box, if any)."""
    nodes, treedef = jax.tree.flatten(params, is_leaf=is_box)
    if len(nodes) != len(jax.tree.leaves(params)):
        raise ValueError("the pruning transform supports boxes holding one array each (nn.Partitioned, NNX "
                         "variables); a params leaf holds several")
    out: list = [optax.MaskedNode()] * len(nodes)
    for j, i in enumerate(idx):
        out[i] = jax.tree.map(lambda _, m=masks[j]: m, nodes[i]) if is_box(nodes[i]) else masks[j]
    tree = jax.tree.structure(treedef.unflatten(out), is_leaf=is_box)
    paths = leaf_paths(params)
    layout = MaskLayout(tree, tuple(idx), tuple(paths[i] for i in idx))
    return PruningState(count=count, masks=tuple(out[i] for i in idx), invalid=invalid, layout=layout)


def stored_masks(state: PruningState) -> list[jax.Array]:
    """The mask arrays of ``state``, out of their boxes (if any)."""
    return [jax.tree.leaves(m)[0] for m in state.masks]


def with_masks(state: PruningState, masks: list[jax.Array], **changes: Any) -> PruningState:
    """``state`` holding ``masks`` (arrays), each in the box its predecessor was in (the state keeps
    its pytree structure, as ``lax.cond`` and ``optax.MultiSteps`` need)."""
    boxed = tuple(jax.tree.map(lambda _, m=m: m, old) for old, m in zip(state.masks, masks))
    return dataclasses.replace(state, masks=boxed, **changes)


def check_layout(state: Any, idx: list[int], paths: list[str]) -> PruningState:
    """``state`` if it is a ``PruningState`` whose masks are those of the prunable leaves ``idx``
    (named by ``paths``) of the params given to ``update``; else a ValueError saying what differs."""
    if not isinstance(state, PruningState):
        raise ValueError(f"the pruning transform's state is a {type(state).__name__}, not a PruningState "
                         "(a state or checkpoint of another version of jaxsparse.pruning? its masks now "
                         "sit in a flat tuple: initialise the optimizer state again with tx.init)")
    if state.layout.leaf_index != tuple(idx):
        named = [paths[i] for i in idx]
        raise ValueError(f"the pruning state holds masks for {list(state.layout.paths)}, but the params "
                         f"given to update have the prunable leaves {named}: was the state made by tx.init "
                         "of other params?")
    return state


def params_like_masks(opt_state: Any, params_like: Any) -> Any:
    """``opt_state`` with the masks of each ``PruningState`` in it replaced by the leaves of
    ``params_like`` (a tree with one leaf per params leaf, e.g. the params' shardings) at the masks'
    positions (``MaskLayout.leaf_index``)."""
    leaves = jax.tree.leaves(params_like)

    def swap(node):
        if not isinstance(node, PruningState):
            return node
        return dataclasses.replace(node, masks=tuple(leaves[i] for i in node.layout.leaf_index))
    return jax.tree.map(swap, opt_state, is_leaf=lambda x: isinstance(x, PruningState))


def get_masks(opt_state: Any) -> Any:
    """The masks held in ``opt_state``: params-shaped, a bool array (True = kept) at each pruned
    leaf (in the leaf's box if ``init`` was given boxed params) and None at the others.

    Works wherever the transform sits: inside ``optax.chain``, ``optax.MultiSteps``,
    ``optax.inject_hyperparams`` or any other pytree of states.

    Raises:
      ValueError: when ``opt_state`` holds no, or more than one, ``PruningState``; outside jit,
        when the transform is not last in the chain (see ``check_events``).
      FloatingPointError: outside jit, when an event found NaN/Inf weights (see ``check_events``).
    """
    found = find_pruning_states(opt_state)
    if len(found) != 1:
        raise ValueError(f"expected one PruningState in the optimizer state, found "
                         f"{len(found)}; is magnitude_pruning in the optax chain?")
    _check_state(found[0])  # as check_events does, with its warning below
    warn_inside_multi_steps(opt_state, PruningState)  # total_steps counts updates there (multi_steps.py)
    masks = found[0].layout.tree.unflatten(found[0].masks)
    return jax.tree.map(lambda x: None if isinstance(x, optax.MaskedNode) else x, masks,
                        is_leaf=lambda x: isinstance(x, optax.MaskedNode))


def check_events(opt_state: Any) -> None:
    """Report what the pruning events in ``opt_state`` found; does nothing under tracing (inside jit).

    Raises ``ValueError`` when a weight pruned by an earlier event was no longer 0 at a later one
    (the transform is not the last element of the chain; found on the update right after the first event),
    ``FloatingPointError`` naming the leaves when an event found a NaN/Inf prunable weight or a
    NaN/negative score (its masks were then left unchanged), and warns (``UserWarning``) naming
    each tensor that lost every weight. Reads one small int32 array per pruning state from the
    device; ``get_masks`` runs the same checks. The transform also reports these by itself (``report``).
    """
    warn_inside_multi_steps(opt_state, PruningState)  # total_steps counts updates there (multi_steps.py)
    for state in find_pruning_states(opt_state):
        _check_state(state, stacklevel=4)  # a warning names check_events' caller


def _check_state(state: PruningState, stacklevel: int = 3) -> None:
    """``check_events`` of one pruning state (nothing under tracing); a warning names the line
    `stacklevel` frames above ``_raise_or_warn`` (3: this function's caller)."""
    invalid, count = _unbox(state.invalid), _unbox(state.count)
    if isinstance(invalid, jax.core.Tracer):
        return
    codes = np.asarray(jax.device_get(invalid))
    if codes.any():
        _raise_or_warn(codes, list(state.layout.paths), int(jax.device_get(count)), warn=False,
                       stacklevel=stacklevel)


REPORTS = ("raise", "warn", "off")


def report(how: str, paths: list[str], before: jax.Array, after: jax.Array, count: jax.Array) -> jax.Array:
    """``after``; unless ``how`` is "off", with a host callback (``jax.debug.callback``) that reports the
    bits of ``after`` (codes of the leaves named by ``paths``) not yet in ``before``, as ``check_events``
    does ("raise"), or as ``UserWarning``s only ("warn"). Compiled into the event branches of the step
    only; a ``jax.pure_callback`` (whose result is ``after``: no effect, cheaper to dispatch than an
    effectful callback, though not free; transform.py).
    Under jit a raised error reaches the caller through XLA, with its message (on CPU as a
    ``ValueError`` from the step's call; on an accelerator when the step's results are read)."""
    if how == "off":
        return after
    out = jax.ShapeDtypeStruct(after.shape, after.dtype, sharding=jax.typeof(after).sharding)
    return jax.pure_callback(functools.partial(_report_new, tuple(paths), how == "warn"), out, before, after, count)


def _report_new(paths: tuple[str, ...], warn: bool, before: Any, after: Any, count: Any) -> np.ndarray:
    new = np.asarray(after) & ~np.asarray(before)
    if new.any():
        _raise_or_warn(new, list(paths), int(count) + 1, warn)
    return np.asarray(after)


def _raise_or_warn(codes: np.ndarray, paths: list[str], count: int, warn: bool, stacklevel: int = 3) -> None:
    """Raise (or with ``warn``, warn) what ``codes`` say about the leaves named by ``paths``."""
    steps = f" (steps so far: {count})"
    for describe, error in ((event_lib.describe_order, ValueError), (event_lib.describe_invalid, FloatingPointError)):
        message = describe(codes, paths)
        if message and warn:
            warnings.warn(message + steps, UserWarning, stacklevel=stacklevel)
        elif message:
            raise error(message + steps)
    message = event_lib.describe_emptied(codes, paths)
    if message:
        warnings.warn(message, UserWarning, stacklevel=stacklevel)


def _unbox(x: Any) -> Any:
    """The array inside ``x`` (an NNX ``OptState`` variable without ``nnx.as_pure``), or ``x``."""
    leaves = jax.tree.leaves(x)
    return leaves[0] if len(leaves) == 1 else x


def find_pruning_states(opt_state: Any) -> list[PruningState]:
    """Every ``PruningState`` inside ``opt_state`` (any score; nested anywhere)."""
    return [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, PruningState))
            if isinstance(x, PruningState)]


def mask_collection(masks: Any) -> Any:
    """The nested-dict form of a Flax ``masks`` variable collection, e.g.
    ``{'layers_0': {'attn': {'q': {'kernel': m}}}}``: the None leaves (and emptied dicts) dropped and
    boxes (``nn.Partitioned``, NNX variables) unwrapped, keyed by module path like ``model.init``'s
    ``masks``. A ``masks`` that is not a mapping is returned as it is."""
    if not isinstance(masks, Mapping):
        return masks
    out: dict = {}
    for names, leaf in named_leaves(masks):
        *parents, name = names
        node = out
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"mask_collection: two masks are both named {'/'.join(names)} (or a prefix of it)")
        if name in node:
            raise ValueError(f"mask_collection: two masks are both named {'/'.join(names)}")
        node[name] = leaf
    return out
