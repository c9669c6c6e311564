"""The parts a validated config describes, each resolved once, in the order each needs the one
before: the vocabulary, the device mesh, the ModelConfig, the model (checked
against a `model.init_from` checkpoint), its abstract params, the prunable leaves, the parameter
counts and the step count.

`build_parts(config, grad_accum, local_devices)` resolves them all for
`jaxsparse.train.resolve.run.prepare`; the pieces are public for the callers that need one
(`--compile_for` builds a TPU slice's mesh, sweeps the model config and step count). Every
failure is a `ConfigError` naming the field: bad input, nothing computed.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.models import accounting
from jaxsparse.errors import ConfigError
from jaxsparse.pruning.selection import prunable_flags
from jaxsparse.train.resolve import train_config


@dataclasses.dataclass(frozen=True, eq=False)
class Parts:
    """What `build_parts` resolved. mesh: None when planned for another machine; abstract_params:
    `jax.ShapeDtypeStruct` leaves of the params tree; steps: optimizer steps."""

    vocab: int
    mesh: Mesh | None
    model_config: models.ModelConfig
    model: nn.Module
    abstract_params: Any
    params: models.ParamCounts
    steps: int


def build_parts(config: ml_collections.ConfigDict, grad_accum: int | None,
             local_devices: bool = True) -> Parts:
    """The Parts of a validated `config` (`config.validate`); `grad_accum` from
    `config.grad_accum_of` (None for "auto": the mesh is checked for one micro-batch);
    local_devices=False builds no mesh. The HF checkpoint of `model.init_from` is checked
    (architecture, every shape) before the params are shaped."""
    vocab = resolve_vocab(config)
    mesh = _mesh(config, grad_accum, None) if local_devices else None
    model_cfg = model_config(config, vocab)
    model = models.build(model_cfg)
    if config.model.init_from:  # the HF folder's architecture and every shape, before any write
        from jaxsparse.hf.load import check_folder, parse_init_from  # [hf] extra only when used
        folder = parse_init_from(config.model.init_from)
        check_folder(folder, model_cfg)
    abstract_params, params = measured(config, model_cfg)
    return Parts(vocab=vocab, mesh=mesh, model_config=model_cfg, model=model,
                 abstract_params=abstract_params, params=params,
                 steps=total_steps(config, params.total))


def resolve_vocab(config: ml_collections.ConfigDict) -> int:
    """config.model.vocab_size when set (it must hold the tokenizer's ids), else the tokenizer's."""
    fixed = config.model.vocab_size
    if fixed and not os.path.exists(os.path.expanduser(str(config.data.tokenizer))) \
            and config.data.tokenizer not in ("bytes", "embedded"):
        return fixed  # e.g. a remote tokenizer on a TPU VM: trust the configured vocabulary
    try:
        tokenizer = data_lib.get_tokenizer(config.data)
    except (ValueError, OSError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"config.data.tokenizer={config.data.tokenizer}: {err}") from err
    if fixed and tokenizer.vocab_size > fixed:
        raise ConfigError(f"config.model.vocab_size={fixed} is smaller than the tokenizer's "
                          f"vocabulary ({tokenizer.vocab_size}, data.tokenizer="
                          f"{config.data.tokenizer}); use 0 (the tokenizer's) or a larger value")
    return fixed or tokenizer.vocab_size


def _mesh_sizes(config: ml_collections.ConfigDict, n: int) -> dict[str, int]:
    sizes = {a: config.mesh[a] for a in ("data", "fsdp", "tensor")}
    free = [a for a, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ConfigError(f"config.mesh: only one axis may be -1, got {sizes}")
    fixed = 1
    for a, v in sizes.items():
        if v != -1:
            fixed *= v
    if free:
        if n % fixed:
            raise ConfigError(f"config.mesh={sizes}: {fixed} devices on the fixed axes do not "
                              f"divide the {n} devices")
        sizes[free[0]] = n // fixed
    if sizes["data"] * sizes["fsdp"] * sizes["tensor"] != n:
        raise ConfigError(f"config.mesh={sizes} needs "
                          f"{sizes['data'] * sizes['fsdp'] * sizes['tensor']} devices, but there "
                          f"are {n}; set one axis to -1 to use them all")
    return sizes


def build_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over `devices` (default: all, e.g. a TPU slice's abstract
    devices for --compile_for); -1 on one axis takes the rest.

    Raises ConfigError naming config.mesh.* when the axes do not match the device count, or
    config.train.batch_size when the batch does not split over data x fsdp (per micro-batch).
    """
    return _mesh(config, train_config.grad_accum_of(config), devices)


def _mesh(config: ml_collections.ConfigDict, grad_accum: int | None, devices: list | None) -> Mesh:
    """`build_mesh` with train.grad_accum given (None for "auto": searched from 1 micro-batch)."""
    sizes = _mesh_sizes(config, jax.device_count() if devices is None else len(devices))
    shards = sizes["data"] * sizes["fsdp"]
    micro = config.train.batch_size // (grad_accum or 1)
    if micro % shards:
        raise ConfigError(
            f"config.train.batch_size={config.train.batch_size} (per micro-batch "
            f"{micro} with train.grad_accum={config.train.grad_accum}) is not divisible by the "
            f"{shards} data-parallel shards (mesh data={sizes['data']} x fsdp={sizes['fsdp']})")
    if config.train.batch_size % jax.process_count():
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} is not divisible "
                          f"by the {jax.process_count()} processes")
    return models.make_mesh(sizes["data"], sizes["fsdp"], sizes["tensor"], devices)


# config.model keys that are ModelConfig fields override the size's preset (model.family included)
_MODEL_KEYS = {f.name for f in dataclasses.fields(models.ModelConfig)}


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> models.ModelConfig:
    """The ModelConfig of a training config: the size's preset with the config's overrides (every
    config.model key named as a ModelConfig field; a 0 / '' / None value keeps the size's), the
    vocabulary padded up to a multiple of model.vocab_multiple (the extra ids are never produced by the tokenizer)."""
    multiple = config.model.vocab_multiple
    overrides: dict[str, Any] = dict(vocab_size=-(-vocab_size // multiple) * multiple,
                                     max_seq_len=config.train.seq_len)
    for key in _MODEL_KEYS & set(config.model.keys()) - set(overrides):
        value = config.model[key]
        if value not in (0, "", None) or value is False:
            overrides[key] = value
    try:
        return models.get_config(config.model.size, **overrides)
    except ValueError as err:
        raise ConfigError(f"config.model: {err}") from err


def prunable(config: ml_collections.ConfigDict, abstract_params: Any) -> list[bool]:
    """Which leaves (in `jax.tree` order) the pruning transform masks (config.pruning.include /
    exclude patterns)."""
    p = config.pruning
    try:
        return list(prunable_flags(abstract_params, p.include or None, p.exclude or None).flags)
    except ValueError as err:
        raise ConfigError(f"config.pruning: {err}") from err


def measured(config: ml_collections.ConfigDict, model_cfg: models.ModelConfig
             ) -> tuple[Any, models.ParamCounts]:
    """(abstract params, their counts with config.pruning's prunable leaves) of `model_cfg`'s
    model: the one measurement the plan and N̄ matching (`jaxsparse.sweep.matching`) read."""
    abstract_params = accounting.abstract_variables(model_cfg)["params"]
    return abstract_params, accounting.count_params(abstract_params, prunable(config, abstract_params))


def total_steps(config: ml_collections.ConfigDict, n_total: int) -> int:
    """train.steps, or ceil(budget * n_total / tokens per step) when steps is 0."""
    if config.train.steps > 0:
        return config.train.steps
    tokens_per_step = config.train.batch_size * config.train.seq_len
    return max(1, math.ceil(config.train.budget * n_total / tokens_per_step))
