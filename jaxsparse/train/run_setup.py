"""Checks and resolutions done before any compute: workdir, vocabulary, device mesh."""
from __future__ import annotations

import os
import uuid

import jax
import ml_collections
from jax.sharding import Mesh

from jaxsparse import data as data_lib
from jaxsparse import models


def check_workdir(workdir: str) -> None:
    """Create `workdir` if needed and prove it is writable (a probe file, then removed)."""
    if not workdir:
        raise ValueError("--workdir is required: the directory for checkpoints, metrics and summary")
    if "://" in workdir:
        raise ValueError(f"--workdir={workdir!r}: URLs are not supported; mount the bucket "
                         "(e.g. gcsfuse BUCKET /mnt/gcs, as launch/setup.sh does) and pass the "
                         "local path, e.g. /mnt/gcs/runs/NAME")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{uuid.uuid4().hex}")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"--workdir={workdir!r} is not a writable directory: {err}") from err


def resolve_vocab(config: ml_collections.ConfigDict) -> int:
    """config.model.vocab_size when set (it must hold the tokenizer's ids), else the tokenizer's."""
    fixed = config.model.vocab_size
    if fixed and not os.path.exists(os.path.expanduser(str(config.data.tokenizer))) \
            and config.data.tokenizer not in ("bytes", "embedded"):
        return fixed  # e.g. a remote tokenizer on a TPU VM: trust the configured vocabulary
    tokenizer = data_lib.get_tokenizer(config.data)
    if fixed and tokenizer.vocab_size > fixed:
        raise ValueError(f"config.model.vocab_size={fixed} is smaller than the tokenizer's "
                         f"vocabulary ({tokenizer.vocab_size}, data.tokenizer="
                         f"{config.data.tokenizer!r}); use 0 (the tokenizer's) or a larger value")
    return fixed or tokenizer.vocab_size


def build_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over `devices` (default: all); -1 on one axis takes the rest.

    Raises ValueError naming config.mesh.* when the axes do not match the device count, or
    config.train.batch_size when the batch does not split over data x fsdp (per micro-batch).
    """
    n = jax.device_count() if devices is None else len(devices)
    sizes = {a: config.mesh[a] for a in ("data", "fsdp", "tensor")}
    free = [a for a, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ValueError(f"config.mesh: only one axis may be -1, got {sizes}")
    fixed = 1
    for a, v in sizes.items():
        if v != -1:
            fixed *= v
    if free:
        if n % fixed:
            raise ValueError(f"config.mesh={sizes}: {fixed} devices on the fixed axes do not "
                             f"divide the {n} devices")
        sizes[free[0]] = n // fixed
    if sizes["data"] * sizes["fsdp"] * sizes["tensor"] != n:
        raise ValueError(f"config.mesh={sizes} needs {sizes['data'] * sizes['fsdp'] * sizes['tensor']}"
                         f" devices, but there are {n}; set one axis to -1 to use them all")
    shards = sizes["data"] * sizes["fsdp"]
    micro = config.train.batch_size // config.train.grad_accum
    if micro % shards:
        raise ValueError(
            f"config.train.batch_size={config.train.batch_size} (per micro-batch "
            f"{micro} with train.grad_accum={config.train.grad_accum}) is not divisible by the "
            f"{shards} data-parallel shards (mesh data={sizes['data']} x fsdp={sizes['fsdp']})")
    if config.train.batch_size % jax.process_count():
        raise ValueError(f"config.train.batch_size={config.train.batch_size} is not divisible by "
                         f"the {jax.process_count()} processes")
    return models.make_mesh(sizes["data"], sizes["fsdp"], sizes["tensor"], devices)
