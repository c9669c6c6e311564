"""The resolved run: the config read once into typed objects that everything else takes.

`prepare(config)` validates the config, then builds, exactly once each, the mesh, the model config,
the model (through `jaxsparse.models.build`) and the step count (`parts.build_parts`), the pruning
`Schedule` and the optax transform (`optimizer.resolve_optimizer`) and the `Plan`
(`plan.make_plan`), and returns them as a frozen `Run`. The loop, the checkpoint
identity, the report, the dry run and the sweep all read the Run (or its Plan).
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import ml_collections
import optax
from jax.sharding import Mesh

from jaxsparse import models
from jaxsparse.errors import ConfigError
from jaxsparse.pruning import Schedule
from jaxsparse.train.resolve import train_config
from jaxsparse.train.resolve import parts as parts_lib
from jaxsparse.train.resolve.optimizer import resolve_optimizer
from jaxsparse.train.resolve.parts import model_config
from jaxsparse.train.resolve.plan import Plan, make_plan, memory_estimate

__all__ = ["COMPUTE_ONLY_FIELDS", "Run", "identity", "model_identity", "plan_for_mesh", "prepare",
           "resolve_saved", "with_grad_accum"]

# ModelConfig fields that change how the step computes, not what the train state holds: a
# checkpoint resumes across a change of these.
COMPUTE_ONLY_FIELDS = ("remat", "remat_policy", "attention", "loss_chunk")  # change compute, not the state


def _setting(key: str, kind: Callable[[Any], Any] | None = None) -> property:
    """A read-only view of config.<key> (dotted), converted by `kind` when given."""

    def get(run: Run) -> Any:
        value = run.config
        for part in key.split("."):
            value = value[part]
        return value if kind is None else kind(value)

    return property(get, doc=f"config.{key}")


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """One resolved training run: `config` (validated) and what was built from it. `steps`:
    optimizer steps; `learning_rate`: step -> rate (the one the transform `tx` uses); `mesh` is
    None when planned for another machine.

    The loop's settings are read from `config` (one source; properties below, units as named):
    grad_accum: micro-batches per step, or None for train.grad_accum="auto" (decided by compiling:
    `with_grad_accum`). batch_size: sequences per step (global); seq_len: tokens per sequence.
    Every *_every is in steps, 0 meaning never (a checkpoint and an eval still end the run).
    data: config.data, handed to `jaxsparse.data`; init_from: '' or 'hf:/path' (model.init_from).
    """

    config: ml_collections.ConfigDict
    model_config: models.ModelConfig
    model: nn.Module
    schedule: Schedule
    steps: int
    learning_rate: optax.Schedule
    tx: optax.GradientTransformation
    mesh: Mesh | None
    plan: Plan

    @property
    def grad_accum(self) -> int | None:
        return train_config.grad_accum_of(self.config)

    batch_size = _setting("train.batch_size")
    seq_len = _setting("train.seq_len")
    seed = _setting("seed")
    data = _setting("data")
    init_from = _setting("model.init_from")
    log_every = _setting("train.log_every_steps")
    eval_every = _setting("eval.every_steps")
    eval_batches = _setting("eval.batches")
    checkpoint_every = _setting("checkpoint.every_steps")
    checkpoint_keep = _setting("checkpoint.keep")
    checkpoint_async = _setting("checkpoint.async_save", bool)
    tensorboard = _setting("metrics.tensorboard", bool)
    plots = _setting("metrics.plots", bool)
    peak_tflops_per_device = _setting("metrics.peak_tflops_per_device", float)

    @property
    def identity(self) -> dict[str, Any]:
        """What a checkpoint must share with this run to be resumed by it (dotted keys):
        every ModelConfig field that shapes the state, the pruning config, steps and batch."""
        return identity(self.config, self.model_config, self.steps)


def identity(config: ml_collections.ConfigDict, model_cfg: models.ModelConfig,
             steps: int) -> dict[str, Any]:
    """See `Run.identity`: `model_identity` (the family included), the model's size, the pruning config,
    steps and batch."""
    ident = model_identity(model_cfg)
    ident["model.size"] = config.model.size
    ident.update({f"pruning.{k}": v for k, v in config.pruning.to_dict().items()})
    ident.update({"train.steps": steps, "train.batch_size": config.train.batch_size,
                  "train.seq_len": config.train.seq_len,
                  "train.grad_clip > 0": config.train.grad_clip > 0})
    return ident


def model_identity(model_cfg: models.ModelConfig) -> dict[str, Any]:
    """The identity's model part: every ModelConfig field but COMPUTE_ONLY_FIELDS ("model.x" keys)."""
    return {f"model.{f.name}": getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg)
            if f.name not in COMPUTE_ONLY_FIELDS}


def resolve_saved(config: ml_collections.ConfigDict, saved_identity: dict[str, Any],
                  where: str) -> tuple[models.ModelConfig, nn.Module, optax.GradientTransformation]:
    """(ModelConfig, model, optax transform) of a checkpoint's saved config and identity, resolved
    as `prepare` resolves a run (the saved padded vocabulary and steps), for restoring its state.
    Raises ConfigError when the config describes no model or a model the identity does not."""
    train_config.import_extensions(config)  # the families and data sources the run used
    try:
        model_cfg = model_config(config, int(saved_identity["model.vocab_size"]))
        steps = int(saved_identity["train.steps"])
    except (KeyError, ValueError) as err:
        raise ConfigError(f"{where}: the checkpoint's config does not describe a model: {err}") from None
    diffs = [f"{key}: config gives {value!r}, identity has {saved_identity[key]!r}"
             for key, value in model_identity(model_cfg).items()
             if key in saved_identity and saved_identity[key] != value]
    if diffs:
        raise ConfigError(f"{where}: the checkpoint's config and identity disagree: " + "; ".join(diffs))
    model = models.build(model_cfg)
    return model_cfg, model, resolve_optimizer(config, steps)[2]


def prepare(config: ml_collections.ConfigDict, *, local_devices: bool = True) -> Run:
    """Validate `config` and resolve it into a Run, once each, before any compute: nothing is
    compiled and no file is touched. train.grad_accum="auto" stays None in `Run.grad_accum`: the
    trainer decides it by compiling (`jaxsparse.train.steps.compiled.for_run`, `with_grad_accum`).

    local_devices=False plans for another machine: no mesh, `plan.mesh` is {}. The memory plan is
    checked against the devices by `train`. Raises ConfigError naming the field on bad input.
    """
    grad_accum = train_config.validate(config)  # None: "auto"
    parts = parts_lib.build_parts(config, grad_accum, local_devices)
    sched, learning_rate, tx = resolve_optimizer(config, parts.steps, parts.abstract_params)
    plan = make_plan(size=config.model.size, model_cfg=parts.model_config, params=parts.params,
                     steps=parts.steps, batch_size=config.train.batch_size,
                     seq_len=config.train.seq_len, grad_accum=grad_accum or 1, schedule=sched,
                     structure=config.pruning.structure or None,
                     mesh_shape=dict(parts.mesh.shape) if parts.mesh is not None else {})
    return Run(config=config, model_config=parts.model_config, model=parts.model, schedule=sched,
               steps=parts.steps, learning_rate=learning_rate, tx=tx, mesh=parts.mesh, plan=plan)


def with_grad_accum(run: Run, grad_accum: int) -> Run:
    """`run` with train.grad_accum decided (what "auto" chose): its config (as checkpoints and
    summary.json record it), `grad_accum` and the plan's memory estimate say `grad_accum`."""
    config = copy.deepcopy(run.config)
    config.train.grad_accum = grad_accum
    return dataclasses.replace(run, config=config, plan=_replanned(run, run.plan.mesh, grad_accum))


def plan_for_mesh(run: Run, mesh_shape: dict[str, int]) -> Plan:
    """`run`'s Plan on another mesh (e.g. a TPU slice's, for `--dry_run --compile_for`)."""
    return _replanned(run, mesh_shape, run.grad_accum or 1)


def _replanned(run: Run, mesh_shape: dict[str, int], grad_accum: int) -> Plan:
    """`run.plan` on `mesh_shape` with `grad_accum` micro-batches: only the mesh and memory change."""
    memory = memory_estimate(run.model_config, run.plan.params, mesh_shape, run.batch_size // grad_accum,
                             run.seq_len)
    return dataclasses.replace(run.plan, mesh=dict(mesh_shape), memory=memory)
