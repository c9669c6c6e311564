"""The transform inside ``optax.MultiSteps``: its ``total_steps`` counts optimizer updates.

``optax.MultiSteps(tx, every_k_schedule=k)`` calls ``tx.update`` once per ``k`` micro-steps, so
the pruning transform inside it counts *updates*: its ``total_steps`` (and every ``Schedule``
fraction) is in updates, ``micro-steps // k`` for a fixed ``k``. Passing the number of micro-steps
instead stretches the schedule ``k``-fold: the run ends after ``1/k`` of the updates the schedule
expects, pruning has barely started (or never starts), and the final sparsity is never reached.

Neither the transform nor ``optax.chain`` can see the wrapper when they are built; the optimizer
state can. ``check_events`` (so also ``get_masks``, inside jit at trace time or outside it) warns
once per call site when it finds a pruning state inside a ``MultiStepsState``, saying which unit
``total_steps`` is in. It is a warning, not an error: passing updates is right, and nothing else
tells the two apart.
"""
from __future__ import annotations

import warnings
from typing import Any

import jax
import optax

MESSAGE = ("magnitude_pruning runs inside optax.MultiSteps: its total_steps and the Schedule count optimizer "
           "updates (one per every_k_schedule micro-steps), not micro-steps; with total_steps = micro-steps the "
           "schedule would need k times the updates the run makes and never reach its final sparsity")


def warn_inside_multi_steps(opt_state: Any, state_type: type, stacklevel: int = 3) -> bool:
    """Warn (``UserWarning``, ``MESSAGE``) when ``opt_state`` holds an ``optax.MultiStepsState``
    whose inner state holds a ``state_type`` (the pruning transform's state); True if it warned."""
    def is_multi(x):
        return isinstance(x, optax.MultiStepsState)

    def is_pruning(x):
        return isinstance(x, state_type)
    for node in jax.tree.leaves(opt_state, is_leaf=is_multi):
        if is_multi(node) and any(map(is_pruning, jax.tree.leaves(node.inner_opt_state, is_leaf=is_pruning))):
            warnings.warn(MESSAGE, UserWarning, stacklevel=stacklevel)
            return True
    return False
