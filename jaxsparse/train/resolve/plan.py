"""The plan of a run (`Plan`), computed without allocating the model: what `--dry_run` prints.

Units: parameters are counts of scalars; tokens and steps are integers; FLOPs are training
FLOPs (forward + backward, see jaxsparse.models.flops_per_token); bytes are per device.
`Plan.to_json()` is the only place the plan becomes a dict (the dry run, summary.json, sweeps).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from jaxsparse import models
from jaxsparse.models.accounting import ParamCounts, train_flops_per_token
from jaxsparse.pruning import Schedule
from jaxsparse.pruning.structure import realised_densities

EVENTS_SHOWN = 50


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device: sharded train state, activations kept for the backward pass, total."""

    state: int
    activations: int

    @property
    def total(self) -> int:
        return self.state + self.activations


@dataclasses.dataclass(frozen=True)
class SchedulePlan:
    """The pruning schedule over this run: event steps and the densities it realises."""

    schedule: Schedule
    structure: str | None
    event_steps: tuple[int, ...]
    average_density: float
    average_density_closed_form: float
    final_density: float

    def to_json(self) -> dict[str, Any]:
        s = self.schedule
        return {"kind": s.kind, "final_sparsity": s.final_sparsity, "start": s.start,
                "end": s.end, "interval": s.interval, "structure": self.structure,
                "n_events": len(self.event_steps),
                "event_steps": list(self.event_steps[:EVENTS_SHOWN]),
                "event_steps_truncated": len(self.event_steps) > EVENTS_SHOWN,
                "average_density": self.average_density,
                "average_density_closed_form": self.average_density_closed_form,
                "final_density": self.final_density}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything known about a run before it starts.

    n_avg: N̄, the parameters active on average over the run (all parameters; paper section 2),
    from the densities the transform realises (`pruning.average_density`); n_final: active at the
    end; flops: sparsity-aware training FLOPs of the run; flops_dense: the same run without
    pruning (both computed from the model, `seq_len` and the densities, never stored); mesh:
    axis -> size ({} when planned for another machine).
    """

    size: str
    model: models.ModelConfig
    params: ParamCounts
    steps: int
    tokens_per_step: int
    seq_len: int
    pruning: SchedulePlan
    mesh: dict[str, int]
    memory: MemoryEstimate

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step

    @property
    def n_avg_prunable(self) -> float:
        """The prunable weights active on average over the run (N̄'s prunable part)."""
        return self.pruning.average_density * self.params.prunable

    @property
    def n_avg(self) -> float:
        """N̄ = other + average density x prunable (`jaxsparse.pruning.average_param_count`)."""
        return self.params.other + self.n_avg_prunable

    @property
    def n_final(self) -> float:
        return self.params.other + self.pruning.final_density * self.params.prunable

    @property
    def flops(self) -> float:
        """Sparsity-aware training FLOPs: per token at the run's average realised density."""
        per_token = train_flops_per_token(self.model, self.seq_len, self.params.prunable,
                                          self.pruning.average_density)
        return per_token * self.steps * self.tokens_per_step

    @property
    def flops_dense(self) -> float:
        """Training FLOPs of the same run without pruning."""
        return models.flops_per_token(self.model, self.seq_len) * self.steps * self.tokens_per_step

    def to_json(self) -> dict[str, Any]:
        """The plan as `--dry_run` prints it (stable keys: sweeps and users read them)."""
        m = self.model
        return {
            "model": {"size": self.size, "d_model": m.d_model, "n_layers": m.n_layers,
                      "n_heads": m.n_heads, "head_dim": m.head_dim, "mlp_dim": m.mlp_dim,
                      "vocab_size": m.vocab_size, "dtype": m.dtype},
            "params": {"total": self.params.total, "prunable": self.params.prunable,
                       "embedding": self.params.embedding, "other": self.params.other},
            "steps": self.steps, "tokens_per_step": self.tokens_per_step, "tokens": self.tokens,
            "tokens_per_param": self.tokens / self.params.total,
            "schedule": self.pruning.to_json(),
            "n_avg": self.n_avg, "n_avg_prunable": self.n_avg_prunable, "n_final": self.n_final,
            "flops": self.flops, "flops_dense": self.flops_dense, "mesh": dict(self.mesh),
            "memory_per_device_bytes": {"state": self.memory.state,
                                        "activations": self.memory.activations,
                                        "total": self.memory.total},
        }




def schedule_plan(schedule: Schedule, steps: int, structure: str | None) -> SchedulePlan:
    """The schedule over `steps` steps; the densities the transform realises computed once."""
    realised = realised_densities(schedule, steps, structure)
    return SchedulePlan(
        schedule=schedule, structure=structure,
        event_steps=tuple(int(e) for e in schedule.event_steps(steps)),
        average_density=float(schedule.average_density(steps, realised)),
        average_density_closed_form=float(schedule.average_density_closed_form(steps)),
        final_density=float(realised[-1]) if len(realised) else 1.0)


def make_plan(*, size: str, model_cfg: models.ModelConfig, params: ParamCounts, steps: int,
              batch_size: int, seq_len: int, grad_accum: int, schedule: Schedule,
              structure: str | None, mesh_shape: dict[str, int]) -> Plan:
    """The Plan of a resolved run (see `jaxsparse.train.resolve.run.prepare`, its one caller)."""
    tokens_per_step = batch_size * seq_len
    memory = memory_estimate(model_cfg, params, mesh_shape, batch_size // grad_accum, seq_len)
    pruning = schedule_plan(schedule, steps, structure)
    return Plan(size=size, model=model_cfg, params=params, steps=steps,
                tokens_per_step=tokens_per_step, seq_len=seq_len, pruning=pruning,
                mesh=dict(mesh_shape), memory=memory)


def memory_estimate(model_cfg: models.ModelConfig, params: ParamCounts,
                    mesh_shape: dict[str, int], micro_batch: int, seq_len: int,
                    backward: bool = True) -> MemoryEstimate:
    """A rough per-device estimate: sharded state plus activations kept for the backward pass.

    State: f32 params, Adam mu and nu, f32 grads (16 bytes/param) and bool masks (1 byte per
    prunable weight), split over fsdp x tensor. Activations: about 16 values of d_model per
    token per layer (2 with remat) plus the f32 logits, for the per-device micro-batch.
    `backward=False` (a forward pass only, e.g. `jaxsparse.evaluate`): f32 params and the masks,
    and the activations of one layer at a time plus the logits.
    """
    shards = max(1, mesh_shape.get("fsdp", 1) * mesh_shape.get("tensor", 1))
    state = ((16 if backward else 4) * params.total + params.prunable) // shards
    batch_shards = max(1, mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1))
    local_tokens = micro_batch // batch_shards * seq_len
    act_bytes = 2 if model_cfg.dtype == "bfloat16" else 4
    per_layer = (2 if model_cfg.remat and backward else 16) * model_cfg.d_model * act_bytes
    layers = model_cfg.n_layers if backward else 1
    activations = local_tokens * (layers * per_layer
                                  + 8 * model_cfg.vocab_size // max(1, mesh_shape.get("tensor", 1)))
    return MemoryEstimate(state=int(state), activations=int(activations))
