"""The plan of a run, computed from the config alone (no model allocation): `--dry_run`.

Units: parameters are counts of scalars; tokens and steps are integers; FLOPs are training
FLOPs (forward + backward, see jaxsparse.models.flops_per_token); bytes are per device.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from jaxsparse import models
from jaxsparse.pruning import average_param_count
from jaxsparse.train import config as config_lib

_EVENTS_SHOWN = 50


def run_plan(config: ml_collections.ConfigDict, vocab_size: int,
             mesh_shape: dict[str, int]) -> dict[str, Any]:
    """Parameter counts, steps, tokens, schedule events, predicted N̄, FLOPs, memory estimate."""
    model_cfg = config_lib.model_config(config, vocab_size)
    counts = models.param_counts(model_cfg)
    steps = config_lib.total_steps(config, counts["total"])
    sched = config_lib.schedule(config)
    sched.check_fits(steps)
    tokens_per_step = config.train.batch_size * config.train.seq_len
    n_prunable = counts["prunable"]
    n_other = counts["total"] - n_prunable
    n_avg = average_param_count(sched, steps, n_prunable, n_other)
    events = sched.event_steps(steps)
    density_avg = sched.average_density(steps)
    final_density = float(sched.density_at(steps - 1, steps))
    seq = config.train.seq_len
    return {
        "model": {"size": config.model.size, "d_model": model_cfg.d_model,
                  "n_layers": model_cfg.n_layers, "n_heads": model_cfg.n_heads,
                  "head_dim": model_cfg.head_dim, "mlp_dim": model_cfg.mlp_dim,
                  "vocab_size": model_cfg.vocab_size, "dtype": model_cfg.dtype},
        "params": {k: counts[k] for k in ("total", "prunable", "embedding", "other")},
        "steps": steps,
        "tokens_per_step": tokens_per_step,
        "tokens": steps * tokens_per_step,
        "tokens_per_param": steps * tokens_per_step / counts["total"],
        "schedule": {
            "kind": sched.kind, "final_sparsity": sched.final_sparsity, "start": sched.start,
            "end": sched.end, "interval": sched.interval, "n_events": int(len(events)),
            "event_steps": [int(e) for e in events[:_EVENTS_SHOWN]],
            "event_steps_truncated": bool(len(events) > _EVENTS_SHOWN),
            "average_density": density_avg,
            "average_density_closed_form": sched.average_density_closed_form(steps),
            "final_density": final_density,
        },
        "n_avg": n_avg.total,
        "n_avg_prunable": n_avg.prunable,
        "n_final": n_other + final_density * n_prunable,
        "flops": models.flops_per_token(model_cfg, seq, density_avg) * steps * tokens_per_step,
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
