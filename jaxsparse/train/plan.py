"""The plan of a run, computed from the config alone (no model allocation): `--dry_run`.

Units: parameters are counts of scalars; tokens and steps are integers; FLOPs are training
FLOPs (forward + backward, see jaxsparse.models.flops_per_token); bytes are per device.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsparse import models
from jaxsparse.pruning import average_param_count, prunable_flags, realised_densities
from jaxsparse.train import config as config_lib
from jaxsparse.train.optimizer import make_optimizer

_EVENTS_SHOWN = 50


def masked_param_count(config: ml_collections.ConfigDict, model_cfg: models.ModelConfig,
                       total_steps: int) -> int:
    """Number of weights the pruning transform masks (its include/exclude rules applied to the
    abstract params). Building the optimizer's state abstractly also validates the pruning
    arguments (patterns that match nothing, n:m groups that do not divide a kernel)."""
    tokens = jax.ShapeDtypeStruct((1, config.train.seq_len), jnp.int32)
    params = jax.eval_shape(lambda: nn.unbox(models.Transformer(model_cfg).init(
        jax.random.key(0), jnp.zeros(tokens.shape, tokens.dtype)))["params"])
    p = config.pruning
    try:
        _, flags = prunable_flags(params, p.include or None, p.exclude or None)
        jax.eval_shape(make_optimizer(config, total_steps).init, params)
    except ValueError as err:
        raise ValueError(f"config.pruning: {err}") from err
    return int(sum(np.prod(x.shape) for x, f in zip(jax.tree.leaves(params), flags) if f))


def train_flops_per_token(model_cfg: models.ModelConfig, seq_len: int, n_masked: int,
                          density: float) -> float:
    """Sparsity-aware training FLOPs per token: the dense count less 6 x the pruned weights."""
    return models.flops_per_token(model_cfg, seq_len) - 6.0 * (1.0 - density) * n_masked


def run_plan(config: ml_collections.ConfigDict, vocab_size: int,
             mesh_shape: dict[str, int]) -> dict[str, Any]:
    """Parameter counts, steps, tokens, schedule events, predicted N̄, FLOPs, memory estimate.

    ``params.prunable`` counts the weights the pruning transform masks (with the config's
    include/exclude rules); N̄ uses the densities the transform realises (n:m rounds them).
    """
    model_cfg = config_lib.model_config(config, vocab_size)
    counts = models.param_counts(model_cfg)
    steps = config_lib.total_steps(config, counts["total"])
    sched = config_lib.schedule(config)
    sched.check_fits(steps)
    structure = config.pruning.structure or None
    tokens_per_step = config.train.batch_size * config.train.seq_len
    n_prunable = masked_param_count(config, model_cfg, steps)
    n_other = counts["total"] - n_prunable
    n_avg = average_param_count(sched, steps, n_prunable, n_other, structure)
    events = sched.event_steps(steps)
    realised = realised_densities(sched, steps, structure)
    density_avg = sched.average_density(steps, realised)
    final_density = float(realised[-1]) if len(realised) else 1.0
    seq = config.train.seq_len
    return {
        "model": {"size": config.model.size, "d_model": model_cfg.d_model,
                  "n_layers": model_cfg.n_layers, "n_heads": model_cfg.n_heads,
                  "head_dim": model_cfg.head_dim, "mlp_dim": model_cfg.mlp_dim,
                  "vocab_size": model_cfg.vocab_size, "dtype": model_cfg.dtype},
        "params": {"total": counts["total"], "prunable": n_prunable,
                   "embedding": counts["embedding"], "other": n_other},
        "steps": steps,
        "tokens_per_step": tokens_per_step,
        "tokens": steps * tokens_per_step,
        "tokens_per_param": steps * tokens_per_step / counts["total"],
        "schedule": {
            "kind": sched.kind, "final_sparsity": sched.final_sparsity, "start": sched.start,
            "end": sched.end, "interval": sched.interval, "structure": structure,
            "n_events": int(len(events)),
            "event_steps": [int(e) for e in events[:_EVENTS_SHOWN]],
            "event_steps_truncated": bool(len(events) > _EVENTS_SHOWN),
            "average_density": density_avg,
            "average_density_closed_form": sched.average_density_closed_form(steps),
            "final_density": final_density,
        },
        "n_avg": n_avg.total,
        "n_avg_prunable": n_avg.prunable,
        "n_final": n_other + final_density * n_prunable,
        "flops": train_flops_per_token(model_cfg, seq, n_prunable, density_avg)
        * steps * tokens_per_step,
        "flops_dense": models.flops_per_token(model_cfg, seq) * steps * tokens_per_step,
        "mesh": mesh_shape,
        "memory_per_device_bytes": memory_estimate(config, model_cfg, counts, mesh_shape),
    }


def memory_estimate(config: ml_collections.ConfigDict, model_cfg: models.ModelConfig,
                    counts: dict[str, int], mesh_shape: dict[str, int]) -> dict[str, int]:
    """A rough per-device estimate: sharded state plus activations kept for the backward pass.

    State: f32 params, Adam mu and nu, f32 grads (16 bytes/param) and bool masks (1 byte per
    prunable weight), split over fsdp x tensor. Activations: about 16 values of d_model per
    token per layer (2 with remat) plus the f32 logits, for the per-device micro-batch.
    """
    shards = max(1, mesh_shape.get("fsdp", 1) * mesh_shape.get("tensor", 1))
    state = (16 * counts["total"] + counts["prunable"]) // shards
    batch_shards = max(1, mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1))
    local_tokens = (config.train.batch_size // config.train.grad_accum // batch_shards
                    * config.train.seq_len)
    act_bytes = 2 if model_cfg.dtype == "bfloat16" else 4
    per_layer = (2 if model_cfg.remat else 16) * model_cfg.d_model * act_bytes
    activations = local_tokens * (model_cfg.n_layers * per_layer
                                  + 8 * model_cfg.vocab_size // max(1, mesh_shape.get("tensor", 1)))
    return {"state": int(state), "activations": int(activations),
            "total": int(state + activations)}
