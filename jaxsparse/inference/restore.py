"""Load a trained model from a training workdir: config, parameters, masks and tokenizer.

Everything comes from the checkpoint itself: the resolved training config and identity stored in its
`meta` item give the ModelConfig (vocabulary already padded), the optimizer structure (to restore the
state through `Checkpointer.restore`) and the tokenizer (`data.*`). Nothing is written to the workdir.
Bad input (no checkpoints, a missing step, a checkpoint whose meta and arrays disagree) raises
`ConfigError` before any compute.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import ml_collections
from jax.sharding import Mesh

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.errors import ConfigError

IDENTITY_MODEL_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "head_dim", "mlp_dim", "dtype",
                         "param_dtype", "scan_layers")


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


def saved_steps(workdir: str) -> list[int]:
    """The steps of the complete checkpoints in WORKDIR/checkpoints (orbax's temporary dirs excluded)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory)
                  if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def pick_step(workdir: str, step: Optional[int]) -> int:
    """`step` if it was saved, else the latest one (step None); ConfigError naming what exists."""
    if not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir!r}: no such directory")
    steps = saved_steps(workdir)
    if not steps:
        raise ConfigError(f"--workdir={workdir!r} holds no checkpoints (expected {workdir}/checkpoints/<step>); "
                          "train first: python -m jaxsparse.train --config=... --workdir=" + workdir)
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ConfigError(f"--step={step}: no checkpoint of that step in {workdir}/checkpoints; saved steps: "
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


def model_config_of(meta: dict, where: str) -> tuple[ml_collections.ConfigDict, models.ModelConfig]:
    """(training config, ModelConfig) from a checkpoint's meta; ConfigError if they disagree."""
    from jaxsparse.train import run as run_lib

    if "config" not in meta or "identity" not in meta:
        raise ConfigError(f"{where}: the checkpoint's meta has no config/identity; it was not written by "
                          "jaxsparse.train")
    config = ml_collections.ConfigDict(meta["config"])
    ident = meta["identity"]
    try:
        model_cfg = run_lib.model_config(config, int(ident["model.vocab_size"]))
    except (KeyError, ValueError) as err:
        raise ConfigError(f"{where}: the checkpoint's config does not describe a model: {err}") from None
    diffs = [f"model.{k}: config gives {getattr(model_cfg, k)!r}, identity has {ident.get('model.' + k)!r}"
             for k in IDENTITY_MODEL_FIELDS if ident.get(f"model.{k}") != getattr(model_cfg, k)]
    if diffs:
        raise ConfigError(f"{where}: the checkpoint's config and identity disagree: " + "; ".join(diffs))
    return config, model_cfg


def load_run(workdir: str, step: Optional[int] = None, with_tokenizer: bool = True,
             mesh_shape: Optional[tuple[int, int, int]] = None) -> RestoredRun:
    """Restore params and masks of checkpoint `step` (default: the latest) of `workdir`, sharded by the
    training rules on the inference mesh (or a (data, fsdp, tensor) `mesh_shape` over all devices)."""
    from jaxsparse.train.checkpointing import Checkpointer
    from jaxsparse.train import run as run_lib
    from jaxsparse.train.optimizer import learning_rate_schedule, make_optimizer
    from jaxsparse.train.state import abstract_state
    from jaxsparse.train.step import model_masks

    step = pick_step(workdir, step)
    where = f"{workdir}/checkpoints/{step}"
    ckpt = Checkpointer(workdir, keep=1_000_000, async_save=False)
    try:
        meta = ckpt.read_meta(step)
        config, model_cfg = model_config_of(meta, where)
        tokenizer = data_lib.get_tokenizer(config.data) if with_tokenizer else None
        if tokenizer is not None and tokenizer.vocab_size > model_cfg.vocab_size:
            raise ConfigError(f"{where}: data.tokenizer={config.data.tokenizer!r} has {tokenizer.vocab_size} ids, "
                              f"more than the model's vocabulary of {model_cfg.vocab_size}")
        mesh = inference_mesh(config) if mesh_shape is None else models.make_mesh(*mesh_shape)
        steps = int(meta["identity"]["train.steps"])
        tx = make_optimizer(config, steps, run_lib.schedule(config), learning_rate_schedule(config, steps))
        model = models.build(model_cfg, config.model.get("family", models.DEFAULT_FAMILY))
        abstract, shardings = abstract_state(model, tx, mesh, models.DEFAULT_RULES, 1)
        try:
            state, _ = ckpt.restore(step, abstract)
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{where}: the saved arrays do not match the model its config describes "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:300]})") from None
    finally:
        ckpt.close()
    return RestoredRun(workdir=workdir, step=step, config=config, model_cfg=model_cfg, params=state.params,
                       masks=model_masks(state.opt_state), tokenizer=tokenizer, mesh=mesh, meta=meta,
                       param_shardings=shardings.params)
