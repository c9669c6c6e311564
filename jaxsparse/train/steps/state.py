"""The train state, its shardings, and its creation directly on the mesh.

`TrainState` holds params, the optimizer state (whose pruning part holds the masks: the one
source of truth), the step and the rng. Every optimizer-state leaf that mirrors a parameter
(Adam moments, masks) is sharded exactly like that parameter; everything else is replicated.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsparse import models
from jaxsparse.pruning.state import params_like_masks


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar (steps done); params: the model's 'params' collection;
    opt_state: the optax state (masks inside, see jaxsparse.pruning.get_masks); rng: uint32[2]
    raw key data (checkpoint-friendly; wrap with jax.random.wrap_key_data)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def _key_str(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def like_params_shardings(tree: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for `tree`: a leaf whose path ends with a parameter's path and whose shape is
    that parameter's gets the parameter's sharding, as does each mask of a pruning state (its
    kernel's: `params_like_masks`); other leaves are replicated."""
    table = {}
    for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                      jax.tree.leaves(param_shardings)):
        table[tuple(_key_str(k) for k in path)] = (tuple(leaf.shape), sharding)
    replicated = NamedSharding(mesh, PartitionSpec())
    longest = max((len(k) for k in table), default=0)

    def pick(path, leaf):
        keys = tuple(_key_str(k) for k in path)
        for n in range(min(longest, len(keys)), 0, -1):
            hit = table.get(keys[-n:])
            if hit is not None and hit[0] == tuple(leaf.shape):
                return hit[1]
        return replicated

    return params_like_masks(jax.tree_util.tree_map_with_path(pick, tree), param_shardings)


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh,
                   rules: Any, seq_len: int) -> tuple[TrainState, TrainState]:
    """(abstract TrainState of ShapeDtypeStructs, TrainState of NamedShardings), no allocation."""
    abstract_vars, var_shardings = models.variable_shardings(model, mesh, rules, (1, seq_len))
    params, p_shard = abstract_vars["params"], var_shardings["params"]
    opt_shapes = jax.eval_shape(tx.init, params)
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = TrainState(
        step=replicated, params=p_shard,
        opt_state=like_params_shardings(opt_shapes, params, p_shard, mesh), rng=replicated)
    shapes = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                        opt_state=opt_shapes,
                        rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            shapes, shardings)
    return abstract, shardings


def create_state(model: nn.Module, tx: optax.GradientTransformation, seed: int, seq_len: int,
                 shardings: TrainState) -> TrainState:
    """Initialise params and optimizer state under jit, each leaf created already sharded."""
    def init(key):
        init_key, state_key = jax.random.split(key)
        variables = nn.unbox(model.init(init_key, jnp.zeros((1, seq_len), jnp.int32)))
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=tx.init(params), rng=jax.random.key_data(state_key))
    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
