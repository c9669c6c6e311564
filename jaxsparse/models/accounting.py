"""Parameter and FLOP accounting from a `ModelConfig` alone: parameter counts measured from the
init of the config's family (`jax.eval_shape`: nothing allocated, any size), FLOPs from them.

Counts are numbers of scalar parameters; FLOPs are floating-point operations (a multiply-add is 2).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from .model_config import ModelConfig
from .layers import MASKS
from .registry import build


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    """Counts of scalar parameters, measured from the model's init. total: all parameters; prunable:
    the weights pruning masks (by default every kernel that carries a mask); embedding: the token
    table (the top-level "embed" module's); other = total - prunable."""

    total: int
    prunable: int
    embedding: int

    @property
    def other(self) -> int:
        return self.total - self.prunable


@functools.lru_cache(maxsize=64)
def abstract_variables(config: ModelConfig) -> dict[str, Any]:
    """Every collection of `build(config)`'s init ("params", "masks"), as unboxed
    `jax.ShapeDtypeStruct` leaves (`jax.eval_shape`: nothing is allocated), for a [1, max_seq_len]
    batch of tokens. Cached per config: the tree is shared, read it, never change it."""
    model = build(config)
    tokens = jnp.zeros((1, config.max_seq_len), jnp.int32)
    return jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), tokens)))


def count_params(abstract_params: Any, flags: Optional[list[bool]] = None,
                 masks: Any = None) -> ParamCounts:
    """Counts of a params tree (e.g. `abstract_variables(config)["params"]`): prunable are the
    leaves `flags` marks (one per leaf, `jax.tree` order), or, without flags, those with a leaf of
    the same path in `masks` (the model's `masks` collection)."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    sizes = [math.prod(leaf.shape) for _, leaf in flat]
    if flags is None:
        masked = {path for path, _ in jax.tree_util.tree_flatten_with_path(masks or {})[0]}
        flags = [path in masked for path, _ in flat]
    embedding = sum(n for (path, _), n in zip(flat, sizes) if getattr(path[0], "key", None) == "embed")
    return ParamCounts(total=sum(sizes), embedding=embedding,
                       prunable=sum(n for n, f in zip(sizes, flags) if f))


def param_counts(config: ModelConfig) -> ParamCounts:
    """The counts of the model `config` describes (its family's, `config.family`), measured from its
    init (`abstract_variables`); prunable: every kernel that carries a mask. Masks are a separate
    collection and are not counted."""
    variables = abstract_variables(config)
    return count_params(variables["params"], masks=variables.get(MASKS, {}))


def attention_flops_per_token(config: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token of the attention score/value products: 12 * n_layers * seq_len * n_heads * head_dim.

    Forward: q.k^T and probs.v are each 2 * seq_len * head_dim FLOPs per token per head; the backward
    pass costs twice the forward (x3 in all). The full seq_len x seq_len score matrix is counted (the
    model computes it and masks it), as in the PaLM paper's MFU formula (Chowdhery et al. 2022, app. B).
    """
    return 12 * config.n_layers * seq_len * config.qkv_dim


def flops_per_token(config: ModelConfig, seq_len: int, density: float = 1.0) -> int:
    """Training (forward + backward) FLOPs per token at sequence length `seq_len` (tokens).

        flops = 6 * density * prunable + 12 * n_layers * seq_len * n_heads * head_dim

    The first term is 2 FLOPs per multiply-add x 3 (forward, backward to activations, backward to
    weights) over the linear kernels (`param_counts(config).prunable`) that are active: `density`
    (fraction of prunable weights kept, in [0, 1]) scales the prunable part, as a sparse kernel would
    skip pruned weights. The second term is `attention_flops_per_token`, independent of density. The
    embedding lookup, norms, RoPE, softmax, mask multiply and loss are elementwise work and are not
    counted. Result rounded to int.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r}: must be an integer >= 1 (tokens)")
    if not isinstance(density, (int, float)) or not 0.0 <= float(density) <= 1.0:
        raise ValueError(f"density={density!r}: must be a number in [0, 1] (fraction of prunable weights kept)")
    linear = 6.0 * float(density) * param_counts(config).prunable
    return int(round(linear)) + attention_flops_per_token(config, seq_len)


def train_flops_per_token(config: ModelConfig, seq_len: int, n_masked: int, density: float) -> float:
    """Sparsity-aware training FLOPs per token of a run that masks `n_masked` weights (its pruning
    patterns' choice) at `density` (fraction of them kept): `flops_per_token` dense, less 6 x the
    pruned weights."""
    return flops_per_token(config, seq_len) - 6.0 * (1.0 - density) * n_masked
