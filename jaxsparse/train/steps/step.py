"""The train and eval steps: pure functions, jitted by the trainer with explicit shardings.

A batch is {"inputs", "targets": int32[B, L], "weights": float32[B, L]} with B the global
batch, sharded over the mesh's (data, fsdp) axes. The model reads its `masks` collection from
the pruning state inside the optimizer state (one source of truth), so pruned weights get
exactly zero gradient. No host round-trips: every metric stays on the device.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsparse.models.sharding import (DEFAULT_RULES, Rules, batch_sharding, traced_with_activation_sharding,
                                       variable_shardings)
from jaxsparse.pruning import get_masks, mask_collection
from jaxsparse.pruning.state import find_pruning_states
from jaxsparse.train.steps.state import TrainState

Batch = dict[str, jax.Array]


def model_masks(opt_state: Any) -> dict:
    """The model's `masks` collection from the pruning state; {} (all kernels dense) when the
    optimizer has no pruning transform (a dense run)."""
    if not find_pruning_states(opt_state):
        return {}
    masks = get_masks(opt_state)  # the pruning events' checks first (raise or warn)
    return mask_collection(masks)


def _loss_sums(model: nn.Module, params: Any, masks: Any, batch: Batch) -> tuple[jax.Array,
                                                                                  jax.Array]:
    """(sum of weighted next-token cross-entropy in nats, sum of weights), by the model's loss
    path (models/loss.py: whole logits, or chunked with model.config.loss_chunk)."""
    return model.apply({"params": params, "masks": masks}, batch["inputs"], batch["targets"],
                       batch["weights"])


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, grad_accum: int = 1,
                    mesh: Optional[Mesh] = None, rules: Rules = DEFAULT_RULES,
                    param_shardings: Any = None) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """step(state, batch) -> (new_state, metrics{loss, grad_norm, weights}).

    With grad_accum = A > 1 the batch is split into A micro-batches (rows i, i+A, ...), their
    gradients summed in a scan, and one optimizer update made: the same update as one big batch.
    With `mesh`, the model's activations are constrained by `rules` (batch over data x fsdp;
    models/sharding.py), so each device holds only its share of the batch's activations, and the
    gradients are pinned to their parameters' shardings (`param_shardings`, the params'
    NamedShardings, when the caller has them; else derived by `rules`), so the optimizer update
    (and, with grad_accum > 1, the gradient sum) holds one shard per device.
    """
    if mesh is None:
        pin = _unpinned
    else:
        pin = _pin_to(param_shardings or variable_shardings(model, mesh, rules)[1]["params"])
    return traced_with_activation_sharding(_train_step(model, tx, grad_accum, pin), mesh, rules)


def _unpinned(tree: Any) -> Any:
    return tree


def _pin_to(shardings: Any) -> Callable[[Any], Any]:
    """g -> g constrained leaf by leaf to `shardings` (a tree like the params)."""
    return lambda tree: jax.tree.map(jax.lax.with_sharding_constraint, tree, shardings)


def _train_step(model: nn.Module, tx: optax.GradientTransformation, grad_accum: int,
                pin: Callable[[Any], Any]) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """The train step of `make_train_step`, its gradients passed through `pin`; traced as it is,
    without activation constraints (the caller wraps it for a mesh)."""
    def grads_of(params, masks, batch):
        def loss_fn(p):
            total, weight = _loss_sums(model, p, masks, batch)
            return total, weight
        sums, grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return sums, pin(grads)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        masks = model_masks(state.opt_state)
        if grad_accum == 1:
            (total, weight), grads = grads_of(state.params, masks, batch)
        else:
            micro = _micro_batches(batch, grad_accum)

            def body(carry, mb):
                (t, w), g = grads_of(state.params, masks, mb)
                return jax.tree.map(jnp.add, carry, ((t, w), g)), None
            zeros = ((jnp.zeros(()), jnp.zeros(())),
                     pin(jax.tree.map(jnp.zeros_like, state.params)))
            ((total, weight), grads), _ = jax.lax.scan(body, zeros, micro)
        denom = jnp.maximum(weight, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": total / denom, "grad_norm": optax.tree.norm(grads), "weights": weight}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def _micro_batches(batch: Batch, grad_accum: int) -> Batch:
    """[B, ...] -> [grad_accum, B / grad_accum, ...], micro-batch i holding rows i, i+A, ..."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:])
                        .swapaxes(0, 1), batch)


def make_eval_step(model: nn.Module, grad_accum: int = 1, mesh: Optional[Mesh] = None,
                   rules: Rules = DEFAULT_RULES) -> Callable[[TrainState, Batch], dict]:
    """eval(state, batch) -> {"loss_sum", "weights"} (sum these over batches, then divide).
    Runs the batch in `grad_accum` pieces, like training, so it fits the same memory; `mesh` and
    `rules` shard activations as in `make_train_step`."""
    return traced_with_activation_sharding(_eval_step(model, grad_accum), mesh, rules)


def _eval_step(model: nn.Module, grad_accum: int) -> Callable[[TrainState, Batch], dict]:
    """The eval step of `make_eval_step`, without activation constraints."""
    def eval_step(state: TrainState, batch: Batch) -> dict:
        masks = model_masks(state.opt_state)
        if grad_accum == 1:
            total, weight = _loss_sums(model, state.params, masks, batch)
        else:
            def body(carry, mb):
                t, w = _loss_sums(model, state.params, masks, mb)
                return (carry[0] + t, carry[1] + w), None
            (total, weight), _ = jax.lax.scan(body, (jnp.zeros(()), jnp.zeros(())),
                                              _micro_batches(batch, grad_accum))
        return {"loss_sum": total, "weights": weight}
    return eval_step


def jit_steps(model: nn.Module, tx: optax.GradientTransformation, grad_accum: int, mesh: Mesh,
              shardings: TrainState) -> tuple[Callable, Callable]:
    """(train_step, eval_step) jitted for `mesh`: the state in `shardings` (a TrainState of
    NamedShardings, donated to the train step; the gradients pinned to `shardings.params`), the
    batch over (data, fsdp), activations by DEFAULT_RULES, metrics replicated: `make_train_step`
    and `make_eval_step` for `mesh`. The one program both the trainer runs and `--compile_for` /
    grad_accum="auto" compile (by `jaxsparse.train.steps.compiled`, once per grad_accum tried)."""
    train_step = _train_step(model, tx, grad_accum, _pin_to(shardings.params))
    eval_step = _eval_step(model, grad_accum)
    batch, replicated = batch_sharding(mesh), NamedSharding(mesh, PartitionSpec())
    train = jax.jit(traced_with_activation_sharding(train_step, mesh), in_shardings=(shardings, batch),
                    out_shardings=(shardings, replicated), donate_argnums=(0,))
    evaluate = jax.jit(traced_with_activation_sharding(eval_step, mesh), in_shardings=(shardings, batch),
                       out_shardings=replicated)
    return train, evaluate


def active_params(state: TrainState) -> jax.Array:
    """int32: kept weights of the masked kernels (sum of the masks; 0 for a dense run)."""
    return sum((jnp.sum(m, dtype=jnp.int32) for m in jax.tree.leaves(model_masks(state.opt_state))),
               jnp.zeros((), jnp.int32))
