"""The decoder-only transformer (paper.md section 4): embed -> blocks -> final RMSNorm -> LM head.

Variables (non-scanned; with `scan_layers` the blocks are one module "layers" whose leaves have a
leading n_layers axis, logical axis "layers"):

  params/embed/embedding               [V, D]      ("vocab", "embed")   N(0, 1); no mask
  params/layers_i/attn_norm/scale      [D]         ("norm",)            ones; no mask
  params/layers_i/attn/{q,k,v}/kernel  [D, H*K]    ("embed", "heads")
  params/layers_i/attn/o/kernel        [H*K, D]    ("heads", "embed")
  params/layers_i/mlp_norm/scale       [D]         ("norm",)
  params/layers_i/mlp/{wi_0,wi_1}/kernel [D, F]    ("embed", "mlp")
  params/layers_i/mlp/wo/kernel        [F, D]      ("mlp", "embed")
  params/final_norm/scale              [D]         ("norm",)
  params/lm_head/kernel                [D, V]      ("embed", "vocab")
  masks/<same path as each kernel>     bool, same shape and axes as the kernel

Apply as `Transformer(cfg).apply({'params': params, 'masks': masks}, tokens)`; `masks` may omit any
kernel (or be left out entirely): that kernel is then used unmasked. At training time the masks are
`jaxsparse.pruning.get_masks(opt_state)` with its None leaves dropped (one source of truth).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from .model_config import ModelConfig
from .layers import EMBED, MASKS, Block, ShardedMaskedDense, RMSNorm
from .loss import cross_entropy_sums, logits_of
from .sharding import constrain, gathered

# ModelConfig.remat_policy -> the jax.checkpoint policy of a rematerialised block (None: save nothing).
REMAT_POLICY = {"full": None, "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class TokenEmbed(nn.Module):
    """Token lookup: int tokens [B, S] -> [B, S, D] in `dtype`. Param `embedding` [V, D], N(0, 1)."""

    vocab_size: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        table = self.param("embedding",
                           nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
                           (self.vocab_size, self.features), self.param_dtype)
        return jnp.take(gathered(jnp.asarray(table, self.dtype), ("vocab", "embed")), tokens, axis=0)


def decoder_trunk(cfg: ModelConfig, tokens: jax.Array, block: Any, side: tuple = (),
                  collections: tuple[str, ...] = (), **block_kwargs: Any) -> tuple[jax.Array, jax.Array]:
    """embed -> n_layers x `block` -> final RMSNorm, in the calling module's scope (call it from a
    compact `__call__`: the variables "embed", "layers" (scanned) or "layers_i", "final_norm" and
    "lm_head" belong to that module).

    Args:
      tokens: int [B, S]. block: a `layers.Block` class (or its `nn.remat`), built as
        `block(cfg, name=..., **block_kwargs)` and called as `(x, *side)`; `side` is the same for every
        layer (broadcast under `nn.scan`). collections: variable collections besides params and masks
        that the blocks hold one per layer (stacked on axis 0 when scanned), e.g. a KV cache.
    Returns (x [B, S, D] in the compute dtype, the masked LM-head kernel [D, V]); the logits are
    `loss.logits_of(x, kernel)`.
    """
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    x = constrain(TokenEmbed(cfg.vocab_size, cfg.d_model, dtype, pdtype, name="embed")(tokens), EMBED)
    if cfg.scan_layers:
        stack = nn.scan(block, variable_axes={"params": 0, MASKS: 0, **{c: 0 for c in collections}},
                        split_rngs={"params": True}, in_axes=(nn.broadcast,) * len(side),
                        length=cfg.n_layers, metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = stack(cfg, name="layers", **block_kwargs)(x, *side)
    else:
        for i in range(cfg.n_layers):
            x, _ = block(cfg, name=f"layers_{i}", **block_kwargs)(x, *side)
    x = constrain(RMSNorm(cfg.norm_eps, dtype, pdtype, name="final_norm")(x), EMBED)
    kernel = ShardedMaskedDense(cfg.vocab_size, ("embed", "vocab"), dtype, pdtype, out_dtype=jnp.float32,
                         name="lm_head")(x, return_kernel=True)
    return x, kernel


class Transformer(nn.Module):
    """LLaMA-style causal language model.

    __call__(tokens: int32[B, S]) -> float32 logits [B, S, vocab_size]; logits at position t depend
    only on tokens[:, :t+1]. Requires 1 <= S <= config.max_seq_len (checked at trace time).
    __call__(tokens, targets int[B, S], weights [B, S] (default ones)) -> (sum of weights x next-token
    cross-entropy in nats, sum of weights), float32 scalars, by `models.loss.cross_entropy_sums` with
    `config.loss_chunk` (chunked: the [B, S, V] logits are never all alive at once).
    Activations carry logical-axis constraints (sharding.constrain): inert unless traced inside
    `sharding.activation_sharding(mesh)`.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, targets: Optional[jax.Array] = None,
                 weights: Optional[jax.Array] = None) -> Any:
        cfg = self.config
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens: expected an integer array [batch, seq], got {tokens.dtype}{list(tokens.shape)}")
        if not 1 <= tokens.shape[1] <= cfg.max_seq_len:
            raise ValueError(f"tokens: sequence length {tokens.shape[1]} must be in [1, max_seq_len="
                             f"{cfg.max_seq_len}]")
        block = Block
        if cfg.remat and cfg.remat_policy != "none":
            block = nn.remat(block, prevent_cse=not cfg.scan_layers, policy=REMAT_POLICY[cfg.remat_policy])
        x, kernel = decoder_trunk(cfg, tokens, block)
        if targets is None:
            return logits_of(x, kernel)
        if weights is None:
            weights = jnp.ones(targets.shape, jnp.float32)
        if targets.shape != tokens.shape or weights.shape != tokens.shape:
            raise ValueError(f"targets {list(targets.shape)} and weights {list(weights.shape)} must have the "
                             f"tokens' shape {list(tokens.shape)}")
        return cross_entropy_sums(x, kernel, targets, weights, cfg.loss_chunk)
