"""The measurements the loop's actions take: eval loss, per-layer sparsity, the train record.

Pure helpers (no loop state): each takes what it measures and returns plain numbers.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from jaxsparse import data as data_lib
from jaxsparse.pruning.selection import named_leaves


def evaluate(eval_step, state, batches, sharding) -> float:
    """Mean eval loss (nats/token) over the fixed validation batches."""
    sums = [eval_step(state, data_lib.to_global_batch(b, sharding)) for b in batches]
    sums = jax.device_get(sums)
    return float(sum(s["loss_sum"] for s in sums) / max(1.0, sum(s["weights"] for s in sums)))


def per_layer_sparsity(masks: Any, replicated: NamedSharding) -> dict[str, float]:
    """Sparsity per mask; a kernel stacked by nn.scan (rank >= 3) gets one entry per layer,
    named ``path[i]``."""
    flat = [("/".join(names), m) for names, m in named_leaves(masks)]
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


def diverged(losses: list[float], norms: list[float], done: int, last_good: str) -> FloatingPointError:
    """The divergence error: `last_good` describes the newest checkpoint whose loss was finite."""
    return FloatingPointError(
        f"training diverged: loss {losses[-1]} / grad norm {norms[-1]} is not finite by step "
        f"{done}; stopped. The last good checkpoint (its loss was finite): {last_good}; lower "
        "config.train.learning_rate (or check the data) and rerun to resume from it.")
