"""The measurements the loop's actions take: eval loss, per-layer sparsity, the train record.

Pure helpers (no loop state): each takes what it measures and returns plain numbers.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from jaxsparse import data as data_lib
from jaxsparse.pruning.selection import named_leaves
from jaxsparse.train.resolve.plan import train_flops_per_token


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


def train_record(s: Any, done: int, losses: list[float], norms: list[float]) -> dict:
    """The metrics.jsonl record of the log interval ending at step `done` (`s`: the loop's
    `Session`: its run, clock and parameter counts)."""
    plan, now = s.run.plan, time.time()
    tok_s = plan.tokens_per_step * (done - s.step_at_log) / max(now - s.t_log, 1e-9)
    density = s.active / plan.params.prunable
    tflops = train_flops_per_token(s.run.model_config, s.run.seq_len, plan.params.prunable,
                                   density) * tok_s / 1e12
    record = {"loss": float(sum(losses) / len(losses)), "learning_rate": float(s.lr_at(done - 1)),
              "grad_norm": norms[-1], "tokens_per_s": tok_s,
              "step_time_s": (now - s.t_log) / max(done - s.step_at_log, 1),
              "density": density, "active_params": plan.params.other + s.active,
              "n_avg_so_far": s.active_sum / done, "tflops_per_s": tflops}
    peak = s.run.peak_tflops_per_device
    if peak > 0:
        record["mfu"] = tflops / (peak * jax.device_count())
    return record
