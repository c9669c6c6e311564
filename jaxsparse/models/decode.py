"""KV-cache decoding for `Transformer`: the same parameters and masks, one forward pass per new token.

`DecodeTransformer(config, cache_len)` has exactly the variable tree of `Transformer(config)` (same
module names, shapes and logical axes, `nn.scan`-stacked or not), plus a `cache` collection:

  cache/<block>/attn/key, value   [B, cache_len, H, K]  (scanned: leading n_layers axis)
  cache/<block>/attn/index        int32 scalar: cache slots already written

A call `apply({'params', 'masks', 'cache'}, tokens [B, S], positions [B, S], key_valid [B, cache_len],
mutable=['cache'])` writes the S new keys/values at slots index..index+S-1 and attends, for the query
in slot j, to the slots <= j whose `key_valid` is True. Left-padded prompts set key_valid False on their
pad slots and count `positions` from their first real token, so every row sees exactly what the full
forward pass over its unpadded prefix sees (RoPE depends only on relative positions, and the absolute
ones are the same too). Logits float32 [B, S, vocab_size].
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .model_config import ModelConfig
from .layers import Block, ShardedMaskedDense, rotary_qkv
from .loss import logits_of
from .transformer import decoder_trunk

CACHE = "cache"


class CachedSelfAttention(nn.Module):
    """`CausalSelfAttention` (the same q/k/v/o kernels, `layers.rotary_qkv`) over a KV cache."""

    config: ModelConfig
    cache_len: int

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, key_valid: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        batch, seq_len, _ = x.shape
        shape = (batch, self.cache_len, cfg.n_heads, cfg.head_dim)
        q, k, v = rotary_qkv(cfg, x, positions)
        cached_k = self.variable(CACHE, "key", jnp.zeros, shape, dtype)
        cached_v = self.variable(CACHE, "value", jnp.zeros, shape, dtype)
        index = self.variable(CACHE, "index", lambda: jnp.zeros((), jnp.int32))
        start = index.value
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k.astype(dtype), (0, start, 0, 0))
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v.astype(dtype), (0, start, 0, 0))
        index.value = start + seq_len
        query_slot = start + jnp.arange(seq_len)  # [S]
        allowed = (jnp.arange(self.cache_len)[None, :] <= query_slot[:, None])[None] & key_valid[:, None, :]
        scores = jnp.einsum("bqhk,bshk->bhqs", q, cached_k.value, preferred_element_type=jnp.float32)
        scores = jnp.where(allowed[:, None], scores, jnp.finfo(jnp.float32).min)  # [B, H, S, L]
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
        out = jnp.einsum("bhqs,bshk->bqhk", probs, cached_v.value).reshape(batch, seq_len, cfg.qkv_dim)
        return ShardedMaskedDense(cfg.d_model, ("heads", "embed"), dtype, pdtype, name="o")(out)


class CachedBlock(Block):
    """`Block` whose attention reads and writes the KV cache: side = (positions, key_valid)."""

    cache_len: int

    def attention(self, h: jax.Array, *side: Any) -> jax.Array:
        positions, key_valid = side
        return CachedSelfAttention(self.config, self.cache_len, name="attn")(h, positions, key_valid)


class DecodeTransformer(nn.Module):
    """`Transformer` with a KV cache of `cache_len` slots (see the module docstring for the contract)."""

    config: ModelConfig
    cache_len: int

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array, key_valid: jax.Array) -> jax.Array:
        x, kernel = decoder_trunk(self.config, tokens, CachedBlock, (positions, key_valid), (CACHE,),
                                  cache_len=self.cache_len)
        return logits_of(x, kernel)


def empty_cache(model: DecodeTransformer, batch: int) -> Any:
    """The zero `cache` collection of `model` for `batch` rows (traced without allocating params)."""
    tokens = jnp.zeros((batch, 1), jnp.int32)
    valid = jnp.ones((batch, model.cache_len), jnp.bool_)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, valid))[CACHE]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes))
