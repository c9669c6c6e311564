"""The resolved run: the config read once into typed objects that everything else takes.

`prepare(config, workdir)` validates the config, then builds, exactly once each, the model
config, the model (through `jaxsparse.models.build`), the step count, the pruning `Schedule`,
the optax transform, the mesh and the `Plan`, and returns them as a frozen `Run`. The loop,
the checkpoint identity, the report, the dry run and the sweep all read the Run (or its Plan).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from jaxsparse import models
from jaxsparse.errors import ConfigError
from jaxsparse.pruning import Schedule, prunable_flags
from jaxsparse.train.resolve import config as config_lib
from jaxsparse.train.resolve import environment as run_setup
from jaxsparse.train.workdir.check import check_workdir
from jaxsparse.train.resolve.optimizer import learning_rate_schedule, make_optimizer
from jaxsparse.train.resolve.plan import Plan, make_plan, param_counts

# ModelConfig fields that change how the step computes, not what the train state holds: a
# checkpoint resumes across a change of these.
COMPUTE_ONLY_FIELDS = ("remat", "remat_policy", "attention", "loss_chunk")  # change compute, not the state


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """One resolved training run. `steps`: optimizer steps; `learning_rate`: step -> rate (the
    one the transform `tx` uses); `mesh` is None when planned for another machine."""

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
    def seq_len(self) -> int:
        return self.config.train.seq_len

    @property
    def identity(self) -> dict[str, Any]:
        """What a checkpoint must share with this run to be resumed by it (dotted keys):
        every ModelConfig field that shapes the state, the pruning config, steps and batch."""
        return identity(self.config, self.model_config, self.steps)


def identity(config: ml_collections.ConfigDict, model_cfg: models.ModelConfig,
             steps: int) -> dict[str, Any]:
    """See `Run.identity`: derived from the ModelConfig's fields (all but COMPUTE_ONLY_FIELDS)."""
    ident: dict[str, Any] = {f"model.{f.name}": getattr(model_cfg, f.name)
                             for f in dataclasses.fields(model_cfg)
                             if f.name not in COMPUTE_ONLY_FIELDS}
    ident["model.size"] = config.model.size
    ident["model.family"] = config.model.family
    ident.update({f"pruning.{k}": v for k, v in config.pruning.to_dict().items()})
    ident.update({"train.steps": steps, "train.batch_size": config.train.batch_size,
                  "train.seq_len": config.train.seq_len,
                  "train.grad_clip > 0": config.train.grad_clip > 0})
    return ident


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> models.ModelConfig:
    """The ModelConfig of a training config: the size's preset with the config's overrides
    (a 0 / '' / None key keeps the size's value), the vocabulary padded up to a multiple of
    model.vocab_multiple (the extra ids are never produced by the tokenizer)."""
    multiple = config.model.vocab_multiple
    overrides: dict[str, Any] = dict(vocab_size=-(-vocab_size // multiple) * multiple,
                                     max_seq_len=config.train.seq_len)
    for key in ("d_model", "n_layers", "n_heads", "dtype", "scan_layers", "remat", "remat_policy",
                "attention", "loss_chunk"):
        value = config.model[key]
        if value not in (0, "", None) or value is False:
            overrides[key] = value
    try:
        return models.get_config(config.model.size, **overrides)
    except ValueError as err:
        raise ConfigError(f"config.model: {err}") from err


def schedule(config: ml_collections.ConfigDict) -> Schedule:
    """The pruning Schedule of a training config (built once, by `prepare`)."""
    p = config.pruning
    try:
        return Schedule(p.schedule, float(p.final_sparsity), float(p.start), float(p.end),
                        p.interval)
    except ValueError as err:
        raise ConfigError(f"config.pruning: {err}") from err


def total_steps(config: ml_collections.ConfigDict, n_total: int) -> int:
    """train.steps, or ceil(budget * n_total / tokens per step) when steps is 0."""
    if config.train.steps > 0:
        return config.train.steps
    tokens_per_step = config.train.batch_size * config.train.seq_len
    return max(1, math.ceil(config.train.budget * n_total / tokens_per_step))


def _pruning_checked(config, abstract_params, tx) -> list[bool]:
    """The transform's prunable flags; building its state abstractly also validates the pruning
    arguments (patterns that match nothing, n:m groups that do not divide a kernel)."""
    p = config.pruning
    try:
        _, flags = prunable_flags(abstract_params, p.include or None, p.exclude or None)
        jax.eval_shape(tx.init, abstract_params)
    except ValueError as err:
        raise ConfigError(f"config.pruning: {err}") from err
    return list(flags)


def prepare(config: ml_collections.ConfigDict, workdir: str | None = None, *,
            local_devices: bool = True, force: bool = False) -> Run:
    """Validate `config` and resolve it into a Run, before any compute.

    workdir: None for a plan only (nothing is created); else it is checked (writable; its outputs
    are checked by the trainer once it holds the workdir's lock) and the memory plan is checked
    against the devices (unless `force`). local_devices=False plans for another machine: no
    mesh, `plan.mesh` is {}. Raises ConfigError naming the field on bad input.
    """
    config_lib.validate(config)
    if config.train.grad_accum == "auto":  # the fewest micro-batches whose step fits these devices
        from jaxsparse.train.steps import compiled
        accum = 1  # no device memory limit known (the CPU; or planning for another machine)
        limit = run_setup.device_bytes_limit() if local_devices else None
        if limit:
            accum = compiled.auto_grad_accum(prepare(compiled.resolved(config, 1), None), limit)
        return prepare(compiled.resolved(config, accum), workdir, local_devices=local_devices,
                       force=force)
    vocab = run_setup.resolve_vocab(config)
    model_cfg = model_config(config, vocab)
    model = models.build(model_cfg, config.model.family)
    if config.model.init_from:  # the HF folder's architecture and every shape, before any write
        from jaxsparse.hf import load as hf_load  # [hf] extra only when used
        hf_load.check_folder(hf_load.parse_init_from(config.model.init_from), model_cfg)
    abstract_params = jax.eval_shape(lambda: nn.unbox(model.init(
        jax.random.key(0), jnp.zeros((1, config.train.seq_len), jnp.int32)))["params"])
    n_total = param_counts(abstract_params, [False] * len(jax.tree.leaves(abstract_params))).total
    steps = total_steps(config, n_total)
    sched = schedule(config)
    try:
        sched.check_fits(steps)
    except ValueError as err:
        raise ConfigError(f"config.pruning: {err}") from err
    learning_rate = learning_rate_schedule(config, steps)
    try:  # the pruning library raises ValueError for its arguments (structure, scope, patterns)
        tx = make_optimizer(config, steps, sched, learning_rate)
    except ValueError as err:
        raise ConfigError(f"config.pruning: {err}") from err
    params = param_counts(abstract_params, _pruning_checked(config, abstract_params, tx))
    mesh = run_setup.build_mesh(config) if local_devices else None
    plan = _plan(config, model_cfg, params, steps, sched, dict(mesh.shape) if mesh is not None else {})
    if workdir is not None:
        if not force:
            run_setup.check_memory(plan.memory.total, local_devices)
        check_workdir(workdir, restart=True)  # writable; its outputs: once locked
    return Run(config=config, model_config=model_cfg, model=model, schedule=sched, steps=steps,
               learning_rate=learning_rate, tx=tx, mesh=mesh, plan=plan)


def _plan(config: ml_collections.ConfigDict, model_cfg: models.ModelConfig, params: Any, steps: int,
          sched: Schedule, mesh_shape: dict[str, int]) -> Plan:
    return make_plan(size=config.model.size, model_cfg=model_cfg, params=params, steps=steps,
                     batch_size=config.train.batch_size, seq_len=config.train.seq_len,
                     grad_accum=config.train.grad_accum, schedule=sched,
                     structure=config.pruning.structure or None, mesh_shape=mesh_shape)


def plan_for_mesh(run: Run, mesh_shape: dict[str, int]) -> Plan:
    """`run`'s Plan on another mesh (e.g. a TPU slice's, for `--dry_run --compile_for`)."""
    return _plan(run.config, run.model_config, run.plan.params, run.steps, run.schedule, mesh_shape)
