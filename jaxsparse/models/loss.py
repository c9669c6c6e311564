"""Next-token cross-entropy from the final hidden states and the LM-head kernel, whole or in chunks.

`cross_entropy_sums(x, kernel, targets, weights, chunk)` returns (sum of weighted cross-entropy in nats,
sum of weights) for x [B, S, D] (compute dtype), kernel [D, V] (the masked LM head, compute dtype),
targets int[B, S], weights [B, S]. Logits are formed in float32 as x @ kernel.

chunk = 0 is the reference path: the whole float32 logits [B, S, V] are formed, then
`optax.softmax_cross_entropy_with_integer_labels`; autodiff keeps them and their gradient (both
[B, S, V] float32) alive at once. chunk = c > 0 (S a multiple of c) scans over S / c slices of the
sequence under `jax.checkpoint`: the forward keeps only each slice's scalar sum, the backward recomputes
one [B, c, V] slice of logits at a time. Same function; only the summation order differs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from .sharding import constrain

LOGITS = ("activation_batch", "activation_length", "activation_vocab")


def logits_of(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """float32 logits [B, S, V] = x [B, S, D] @ kernel [D, V], batch over data x fsdp, vocab over tensor."""
    return constrain(jnp.dot(x, kernel, preferred_element_type=jnp.float32), LOGITS)


def _sums(x: jax.Array, kernel: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_of(x, kernel), targets)
    w = weights.astype(jnp.float32)
    return jnp.sum(ce * w), jnp.sum(w)


def cross_entropy_sums(x: jax.Array, kernel: jax.Array, targets: jax.Array, weights: jax.Array,
                       chunk: int = 0) -> tuple[jax.Array, jax.Array]:
    """(sum of weights * cross-entropy, sum of weights), float32 scalars; see the module doc.

    Raises ValueError when chunk > 0 does not divide the sequence length."""
    seq_len = x.shape[1]
    if chunk == 0 or chunk >= seq_len:
        return _sums(x, kernel, targets, weights)
    if seq_len % chunk:
        raise ValueError(f"loss chunk {chunk} does not divide the sequence length {seq_len}: "
                         f"use a divisor of {seq_len} (or 0 for no chunking)")
    n = seq_len // chunk

    def split(t: jax.Array) -> jax.Array:  # [B, S, ...] -> [n, B, chunk, ...]
        return jnp.moveaxis(t.reshape(t.shape[0], n, chunk, *t.shape[2:]), 1, 0)

    @jax.checkpoint
    def one_chunk(x_c, t_c, w_c):
        return _sums(x_c, kernel, t_c, w_c)

    def body(carry, xs):
        total, weight = one_chunk(*xs)
        return (carry[0] + total, carry[1] + weight), None

    zero = jnp.zeros((), jnp.float32)
    (total, weight), _ = jax.lax.scan(body, (zero, zero), (split(x), split(targets), split(weights)))
    return total, weight
