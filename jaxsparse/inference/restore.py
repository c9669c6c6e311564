"""Load a trained model from a training workdir: config, parameters, masks and tokenizer.

Everything comes from the checkpoint itself: the resolved training config and identity stored in its
`meta` item give the ModelConfig (vocabulary already padded), the optimizer structure (to restore the
state) and the tokenizer (`data.*`). Nothing is written to the workdir.

Every read goes through the trainer's verification and fallback (`Checkpointer.restore_newest_intact`):
a damaged newest checkpoint (checksum mismatch in its arrays, data or meta; a missing or truncated
file) is reported by path and step and the next older intact one is read, the damaged one left in
place. An explicit step that is damaged is refused. Bad input (no checkpoints, a missing or damaged
step, every checkpoint damaged, a checkpoint this user may not read) raises `ConfigError` before any
compute.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Optional

import jax
import ml_collections
from jax.sharding import Mesh

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.data.data_config import with_defaults
from jaxsparse.errors import ConfigError
from jaxsparse.train.workdir import layout
from jaxsparse.train.workdir.fallback import named_step_damaged


@dataclasses.dataclass
class RestoredRun:
    """A trained model. params / masks: the model's collections (masks {} for a dense run), placed on
    `mesh` like training; meta: the checkpoint's meta item (config, identity, progress)."""

    workdir: str
    step: int
    config: ml_collections.ConfigDict
    model_cfg: models.ModelConfig
    params: Any
    masks: Any
    tokenizer: Any
    mesh: Mesh
    meta: dict
    param_shardings: Any = None


def pick_step(workdir: str, step: Optional[int]) -> int:
    """`step` if it was saved, else the latest one (step None); ConfigError naming what exists,
    or naming the damage when checkpoints/ or the entry of `step` is not a directory."""
    if not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir!r}: no such directory")
    layout.check_checkpoints(workdir)
    steps = layout.saved_steps(workdir)
    if step is not None and step in layout.stray_files(workdir):
        raise named_step_damaged(layout.step_dir(workdir, step), step, layout.stray_reason(workdir, step))
    if not steps:
        raise ConfigError(f"--workdir={workdir!r} holds no checkpoints (expected "
                          f"{layout.checkpoint_dir(workdir)}/<step>); train first: "
                          "python -m jaxsparse.train --config=... --workdir=" + workdir)
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ConfigError(f"--step={step}: no checkpoint of that step in "
                          f"{layout.checkpoint_dir(workdir)}; saved steps: "
                          f"{', '.join(map(str, steps))}")
    return step


def inference_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """The training config's fsdp x tensor axes when they divide the devices here (data takes the rest),
    else all devices on data: the same logical-axis sharding as training, on whatever machine this is."""
    n = jax.device_count()
    fsdp, tensor = max(1, int(config.mesh.fsdp)), max(1, int(config.mesh.tensor))
    if n % (fsdp * tensor):
        fsdp = tensor = 1
    return models.make_mesh(n // (fsdp * tensor), fsdp, tensor)


def saved_config(meta: dict, where: str) -> ml_collections.ConfigDict:
    """The training config in a checkpoint's meta; ConfigError if it has no config/identity."""
    if "config" not in meta or "identity" not in meta:
        raise ConfigError(f"{where}: the checkpoint's meta has no config/identity; it was not written by "
                          "jaxsparse.train")
    config = ml_collections.ConfigDict(meta["config"])
    if "data" in config:  # data keys added since the checkpoint was written take their defaults
        config.data = with_defaults(config.data)
    return config


def load_run(workdir: str, step: Optional[int] = None, with_tokenizer: bool = True,
             mesh_shape: Optional[tuple[int, int, int]] = None) -> RestoredRun:
    """Restore params and masks of checkpoint `step` (default: the newest intact one) of `workdir`,
    verified, sharded by the training rules on the inference mesh (or a (data, fsdp, tensor)
    `mesh_shape` over all devices)."""
    from jaxsparse.train.workdir.checkpoints import Checkpointer
    from jaxsparse.train.steps.step import model_masks

    pick_step(workdir, step)  # no checkpoints, or no such step: named before anything is read
    built: dict[str, Any] = {}
    ckpt = Checkpointer(workdir, keep=1_000_000, async_save=False)
    try:
        abstract = functools.partial(_abstract_for, workdir, mesh_shape, built)
        restored = (ckpt.restore_newest_intact(abstract, None, set_aside=False) if step is None
                    else ckpt.restore_step(step, abstract))
    finally:
        ckpt.close()
    if restored is None:  # every step vanished while it was read
        pick_step(workdir, step)
        raise ConfigError(f"--workdir={workdir!r}: its checkpoints were removed while they were read")
    config, model_cfg = built["config"], built["model_cfg"]
    where = layout.step_dir(workdir, restored.step)
    tokenizer = data_lib.get_tokenizer(config.data) if with_tokenizer else None
    if tokenizer is not None and tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(f"{where}: data.tokenizer={config.data.tokenizer!r} has {tokenizer.vocab_size} ids, "
                          f"more than the model's vocabulary of {model_cfg.vocab_size}")
    state = restored.state
    return RestoredRun(workdir=workdir, step=restored.step, config=config, model_cfg=model_cfg,
                       params=state.params, masks=model_masks(state.opt_state), tokenizer=tokenizer,
                       mesh=built["mesh"], meta=restored.meta, param_shardings=built["shardings"].params)


def _abstract_for(workdir: str, mesh_shape: Optional[tuple[int, int, int]], built: dict, meta: dict) -> Any:
    """The abstract TrainState a checkpoint's (verified) meta describes, resolved as the trainer
    resolves a run (`jaxsparse.train.resolve.run.resolve_saved`); what was built goes into `built`."""
    from jaxsparse.train.resolve import run as run_lib
    from jaxsparse.train.steps.state import abstract_state

    where = layout.checkpoint_dir(workdir)
    config = saved_config(meta, where)
    model_cfg, model, tx = run_lib.resolve_saved(config, meta["identity"], where)
    mesh = inference_mesh(config) if mesh_shape is None else models.make_mesh(*mesh_shape)
    abstract, shardings = abstract_state(model, tx, mesh, models.DEFAULT_RULES, 1)
    built.update(config=config, model_cfg=model_cfg, mesh=mesh, shardings=shardings)
    return abstract
