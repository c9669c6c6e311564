"""Building blocks: masked dense kernel, RMSNorm, rotary embeddings, attention, SwiGLU MLP, block.

Activation shapes: B = batch, S = sequence length (tokens), D = d_model, H = n_heads, K = head_dim,
F = mlp_dim. Parameter logical axes: "embed" (D), "heads" (H*K fused), "mlp" (F), "vocab", "norm".

The mask contract (see `ShardedMaskedDense`): each kernel `kernel` has a bool variable of the same name,
path and shape in the `masks` collection. `model.init` creates it all True; `apply` multiplies the
kernel by it in the compute dtype; a kernel whose mask is absent from `apply`'s `masks` is used as is.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from .attention import causal_attention
from .model_config import ModelConfig
from .sharding import constrain, gathered

Initializer = Callable[..., jax.Array]
MASKS = "masks"
# Logical axes of activations (rules in sharding.py): the residual stream, per-head tensors, MLP hidden.
EMBED = ("activation_batch", "activation_length", "activation_embed")
HEADS = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
MLP = ("activation_batch", "activation_length", "activation_mlp")


def fan_in_init(scale: float = 1.0) -> Initializer:
    """Truncated-normal fan-in variance scaling: Var = scale / fan_in, fan_in = shape[-2] (2-D kernels)."""
    return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1)


class ShardedMaskedDense(nn.Module):
    """y = x @ where(mask, kernel, 0): a bias-free linear layer whose kernel carries a pruning mask.

    Params: `kernel` [in_features, features], logical axes `kernel_axes` (fan-in first: the pruning
    library's n:m groups run along axis -2). Masks: `kernel` in the `masks` collection, bool, same
    shape and axes, all True at init. The product is formed in `dtype`; the output has `out_dtype`
    (default `dtype`), accumulated at that precision.
    """

    features: int
    kernel_axes: tuple[str, str]
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    out_dtype: Optional[jnp.dtype] = None
    kernel_init: Initializer = fan_in_init()

    @nn.compact
    def __call__(self, x: jax.Array, return_kernel: bool = False) -> jax.Array:
        """x [..., in_features] -> [..., features]; with return_kernel, the masked kernel itself
        [in_features, features] in `dtype` (x is read for its last dimension only)."""
        shape = (x.shape[-1], self.features)
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                            shape, self.param_dtype)
        kernel = jnp.asarray(kernel, self.dtype)
        if self.is_initializing() or self.has_variable(MASKS, "kernel"):
            mask = self.variable(
                MASKS, "kernel",
                nn.with_logical_partitioning(lambda: jnp.ones(shape, jnp.bool_), self.kernel_axes)).value
            if mask.shape != shape:
                raise ValueError(f"mask of {'/'.join(self.path)}/kernel has shape {mask.shape}; "
                                 f"the kernel has shape {shape}")
            kernel = jnp.where(mask, kernel, jnp.zeros((), self.dtype))
        kernel = gathered(kernel, self.kernel_axes)  # FSDP: all-gathered (in `dtype`) just before use
        if return_kernel:
            return kernel
        out_dtype = self.out_dtype or self.dtype
        return jnp.dot(jnp.asarray(x, self.dtype), kernel, preferred_element_type=out_dtype).astype(out_dtype)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2, -1) + eps) * scale, computed in float32, returned in `dtype`.

    Params: `scale` [D], logical axis ("norm",), initialised to ones. No mask.
    """

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = jnp.asarray(x, jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (x32 * jnp.asarray(scale, jnp.float32)).astype(self.dtype)


def apply_rope(x: jax.Array, max_timescale: float, positions: Optional[jax.Array] = None) -> jax.Array:
    """Rotary position embedding of x [B, S, H, K] at `positions` (int [B, S] or [S]; default 0..S-1),
    rotating (first half, second half) feature pairs: pair i turns by angle pos / max_timescale^(2i/K).
    Computed in float32, returns x's dtype. (KV-cache decoding passes each token's position.)"""
    seq_len, head_dim = x.shape[-3], x.shape[-1]
    half = head_dim // 2
    inv_timescale = max_timescale ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim)
    pos = jnp.arange(seq_len) if positions is None else positions
    angle = jnp.asarray(pos, jnp.float32)[..., None] * inv_timescale  # [(B,) S, K/2]
    sin, cos = jnp.sin(angle)[..., None, :], jnp.cos(angle)[..., None, :]  # [(B,) S, 1, K/2]
    x1, x2 = jnp.split(jnp.asarray(x, jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def rotary_qkv(cfg: ModelConfig, x: jax.Array, positions: Optional[jax.Array] = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q, k, v [B, S, H, K] of x [B, S, D] by the kernels q, k, v [D, H*K] (axes ("embed", "heads")) of
    the calling attention module, q and k rotated at `positions` (default 0..S-1). Called from inside a
    compact `__call__`: the kernels belong to that module. The 1/sqrt(K) temperature is folded into
    the query kernel's initialisation (fan-in std divided by sqrt(K)), as in the released code."""
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    batch, seq_len, _ = x.shape
    dense = lambda name, init=fan_in_init(): ShardedMaskedDense(  # noqa: E731
        cfg.qkv_dim, ("embed", "heads"), dtype, pdtype, kernel_init=init, name=name)
    split = lambda t: constrain(t.reshape(batch, seq_len, cfg.n_heads, cfg.head_dim), HEADS)  # noqa: E731
    q = apply_rope(split(dense("q", fan_in_init(1.0 / cfg.head_dim))(x)), cfg.rope_max_timescale, positions)
    k = apply_rope(split(dense("k")(x)), cfg.rope_max_timescale, positions)
    return q, k, split(dense("v")(x))


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention with rotary embeddings; kv heads = query heads.

    Input/output [B, S, D]. Kernels q, k, v [D, H*K] axes ("embed", "heads") (`rotary_qkv`); o [H*K, D]
    axes ("heads", "embed"). As in the released code (and T5/MaxText), the 1/sqrt(K) temperature is in
    the query kernel's initialisation; the scores are not rescaled in the forward pass. The attention
    itself is `attention.causal_attention` with impl `config.attention` (the reference path computes
    scores and softmax in float32).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        q, k, v = rotary_qkv(cfg, x)
        out = causal_attention(q, k, v, cfg.attention).reshape(*x.shape[:2], cfg.qkv_dim)
        return ShardedMaskedDense(cfg.d_model, ("heads", "embed"), jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype),
                           name="o")(out)


class SwiGLU(nn.Module):
    """wo(silu(x @ wi_0) * (x @ wi_1)). Input/output [B, S, D]; hidden [B, S, F].

    Kernels wi_0, wi_1 [D, F] axes ("embed", "mlp"); wo [F, D] axes ("mlp", "embed").
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        gate = constrain(ShardedMaskedDense(cfg.mlp_dim, ("embed", "mlp"), dtype, pdtype, name="wi_0")(x), MLP)
        up = constrain(ShardedMaskedDense(cfg.mlp_dim, ("embed", "mlp"), dtype, pdtype, name="wi_1")(x), MLP)
        return ShardedMaskedDense(cfg.d_model, ("mlp", "embed"), dtype, pdtype, name="wo")(nn.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(.)). [B, S, D] -> [B, S, D].

    Submodules: attn_norm, attn, mlp_norm, mlp. The residual stream is constrained to logical axes
    EMBED (batch over data x fsdp under `sharding.activation_sharding`). `__call__(x, *side)` returns
    (x, None), so the block can be used directly under `nn.scan`; `side` goes to `attention`, the one
    extension point (KV-cache decoding overrides it: models/decode.py). Here side is empty.
    """

    config: ModelConfig

    def attention(self, h: jax.Array, *side: Any) -> jax.Array:
        """attn(h): [B, S, D] -> [B, S, D], the submodule named "attn"."""
        return CausalSelfAttention(self.config, name="attn")(h)

    @nn.compact
    def __call__(self, x: jax.Array, *side: Any) -> tuple[jax.Array, None]:
        cfg = self.config
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        x = constrain(x, EMBED)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="attn_norm")(x)
        x = constrain(x + self.attention(h, *side), EMBED)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="mlp_norm")(x)
        x = constrain(x + SwiGLU(cfg, name="mlp")(h), EMBED)
        return x, None
