"""Top-k masks from scores, without sorting or gathering.

Scores are non-negative float32 (the magnitude |w| for magnitude pruning). A non-negative
float32's bit pattern, read as int32, orders exactly like the float, so the k-th largest score
is found by bisection on the integer bit pattern: 31 passes of compare-and-count, each a
local reduction plus (under a sharded mesh) a scalar all-reduce. No sort, no top_k, no gather:
a mask is computed where its kernel lives and comes out sharded like it.

Ties: every score equal to the threshold is kept, so the realised number kept may exceed ``k``
by the number of weights tied at the threshold (zero for continuous-valued weights).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

INF_BITS = 0x7F800000  # bit pattern of float32 +inf; NaN's (after abs) are larger
_PASSES = 31  # the search range [0, 2**31) halves each pass


def score_bits(scores: jax.Array, active: jax.Array) -> jax.Array:
    """int32 keys with the order of ``scores``; inactive entries get -1 (never kept)."""
    bits = jax.lax.bitcast_convert_type(jnp.abs(scores).astype(jnp.float32), jnp.int32)
    return jnp.where(active, bits, jnp.int32(-1))


_U16_MAX = 2**16 - 1


def _count_ge(keys: jax.Array, threshold: jax.Array) -> jax.Array:
    """int32 number of entries >= threshold.

    The indicator is first summed over the leading axes in uint16 (exact while they hold at most
    65,535 entries; narrow lanes make this about 2x faster on CPU than one int32 reduction), then
    over the last axis in int32. Both are reductions: under a sharded mesh, local sums plus an
    all-reduce, never a gather.
    """
    hit = keys >= threshold
    if keys.ndim >= 2 and keys.size // keys.shape[-1] <= _U16_MAX:
        partial = jnp.sum(hit, axis=tuple(range(keys.ndim - 1)), dtype=jnp.uint16)
        return jnp.sum(partial.astype(jnp.int32))
    return jnp.sum(hit, dtype=jnp.int32)


def global_threshold(keys: Sequence[jax.Array], k: jax.Array) -> jax.Array:
    """Largest int32 key ``t`` with ``#{keys >= t} >= k`` over all arrays together.

    Requires ``1 <= k <= #{keys >= 0}``; the total element count must fit in int32.
    """
    lo = jnp.int32(0)
    hi = jnp.int32(INF_BITS + 1)

    def body(_, carry):
        lo, hi = carry
        mid = lo + (hi - lo) // 2
        count = sum(_count_ge(x, mid) for x in keys)
        ok = count >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, _PASSES, body, (lo, hi))
    return lo


def per_tensor_thresholds(keys: Sequence[jax.Array], ks: jax.Array) -> jax.Array:
    """int32[len(keys)]: for each array its own largest ``t`` with ``#{x >= t} >= ks[i]``.

    All tensors share the same 31 passes, so the cost equals one global search.
    """
    n = len(keys)
    lo = jnp.zeros((n,), jnp.int32)
    hi = jnp.full((n,), INF_BITS + 1, jnp.int32)

    def body(_, carry):
        lo, hi = carry
        mid = lo + (hi - lo) // 2
        counts = jnp.stack([_count_ge(x, mid[i]) for i, x in enumerate(keys)])
        ok = counts >= ks
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, _PASSES, body, (lo, hi))
    return lo


def floored_thresholds(keys: Sequence[jax.Array], k: jax.Array, floors: jax.Array) -> jax.Array:
    """int32[len(keys)]: thresholds keeping about ``k`` entries over all arrays together (one global
    threshold) but at least ``floors[i]`` in array ``i`` (keep ``keys[i] >= result[i]``).

    The global search counts ``sum_i max(#{keys_i >= t}, floors[i])``, still non-increasing in ``t``,
    so the floors are paid for by the other arrays and the total stays ``k`` (unless the floors alone
    exceed it). Twice the passes of ``global_threshold``.
    """
    per_tensor = per_tensor_thresholds(keys, floors)
    lo = jnp.int32(0)
    hi = jnp.int32(INF_BITS + 1)

    def body(_, carry):
        lo, hi = carry
        mid = lo + (hi - lo) // 2
        count = sum(jnp.maximum(_count_ge(x, mid), floors[i]) for i, x in enumerate(keys))
        ok = count >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    t, _ = jax.lax.fori_loop(0, _PASSES, body, (lo, hi))
    return jnp.minimum(t, per_tensor)


def n_of_m_mask(scores: jax.Array, active: jax.Array, keep: jax.Array, m: int) -> jax.Array:
    """Keep the ``keep`` largest scores in every group of ``m`` consecutive entries along
    axis -2 (the fan-in axis of a Dense kernel ``(..., in, out)``); exactly ``keep`` per group
    (ties broken by position). Inactive entries rank last, so masks only shrink.

    Args:
      scores: float[..., in, out], ``in % m == 0``.
      active: bool, same shape: the current mask.
      keep: int scalar in [0, m].
    """
    *lead, fan_in, fan_out = scores.shape
    s = jnp.where(active, jnp.abs(scores).astype(jnp.float32), -1.0)
    g = s.reshape(*lead, fan_in // m, m, fan_out)
    a = g[..., :, None, :]  # the entry being ranked, i
    b = g[..., None, :, :]  # every other entry of its group, j
    idx = jnp.arange(m)
    earlier = (idx[None, :] < idx[:, None])[..., None]  # j before i
    beats = (b > a) | ((b == a) & earlier)
    rank = jnp.sum(beats, axis=-2)  # how many in the group outrank entry i
    mask = (rank < keep).reshape(scores.shape)
    return mask & active
