"""Causal self-attention kernels: one function, three implementations of the same math.

`causal_attention(q, k, v, impl)` takes q, k, v [B, S, H, K] (after rotary embeddings, in the compute
dtype) and returns softmax(q k^T masked causally) v as [B, S, H, K] in q's dtype. No 1/sqrt(K) factor
is applied: the model folds the temperature into the query kernel's initialisation (layers.py).

  "reference"   einsum scores [B, H, S, S] in float32, softmax, einsum with v (today's path; it holds
                the whole score matrix, forward and backward).
  "dot_product" `jax.nn.dot_product_attention(..., is_causal=True)`: XLA's fused form (cuDNN on GPU).
  "flash"       the Pallas TPU flash-attention kernel (`jax.experimental.pallas.ops.tpu`), blockwise,
                never holding [S, S]. It runs per device inside `jax.shard_map` over the active mesh
                (batch over data x fsdp, heads over tensor; see sharding.activation_sharding). It
                needs a TPU, or Pallas's TPU interpret mode (`pltpu.force_tpu_interpret_mode()`) on CPU.
                Sequences that are not a multiple of FLASH_BLOCK (128) use the reference path.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import sharding
from .model_config import ATTENTION_IMPLS


def _reference(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    seq_len = q.shape[1]
    scores = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=jnp.float32)  # [B, H, S, S]
    scores = sharding.constrain(scores, ("activation_batch", "activation_heads", "activation_length", None))
    causal = jnp.tril(jnp.ones((seq_len, seq_len), jnp.bool_))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    return jnp.einsum("bhqs,bshk->bqhk", probs, v)


def _dot_product(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    return jax.nn.dot_product_attention(q, k, v, scale=1.0, is_causal=True)


def _flash_local(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """The Pallas kernel on one device's shard: [B, S, H, K] in and out (the kernel wants [B, H, S, K])."""
    from jax.experimental.pallas.ops.tpu.flash_attention import flash_attention

    to_bhsk = lambda t: jnp.swapaxes(t, 1, 2)  # noqa: E731
    out = flash_attention(to_bhsk(q), to_bhsk(k), to_bhsk(v), causal=True, sm_scale=1.0)
    return jnp.swapaxes(out, 1, 2).astype(q.dtype)


FLASH_BLOCK = 128  # the kernel's default block along the sequence


def _flash(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    if q.shape[1] % FLASH_BLOCK:  # e.g. model.init's 1-token sample: the same function, unblocked
        return _reference(q, k, v)
    mesh = sharding.active_mesh()
    if mesh is None:
        return _flash_local(q, k, v)
    rules = sharding.current_rules()
    names = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
    spec = sharding.activation_spec(names, q.shape, mesh, rules)
    fn = jax.shard_map(_flash_local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)
    return fn(q, k, v)


_IMPLS = {"reference": _reference, "dot_product": _dot_product, "flash": _flash}
assert tuple(_IMPLS) == ATTENTION_IMPLS


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, impl: str = "reference") -> jax.Array:
    """Causal attention of q, k, v [B, S, H, K] (equal shapes) -> [B, S, H, K] in q's dtype, by `impl`
    (one of ATTENTION_IMPLS). Raises ValueError for an unknown impl or mismatched shapes."""
    if impl not in _IMPLS:
        raise ValueError(f"attention impl {impl!r}: allowed values are {ATTENTION_IMPLS}")
    if not q.shape == k.shape == v.shape or q.ndim != 4:
        raise ValueError(f"causal_attention: q, k, v must have equal [B, S, H, K] shapes, got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    out = _IMPLS[impl](q, k, v)
    return sharding.constrain(out, ("activation_batch", "activation_length", "activation_heads", "activation_kv"))

