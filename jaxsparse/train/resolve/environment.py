"""Checks and resolutions done before any compute: vocabulary, device mesh, memory (the
workdir's: `jaxsparse.train.workdir.check`).

Every failure is a `ConfigError` (bad input: the command line exits 2, nothing computed).
"""
from __future__ import annotations

import os

import jax
import ml_collections
from jax.sharding import Mesh

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.errors import ConfigError
from jaxsparse.train.resolve import config as config_lib


def device_bytes_limit() -> int | None:
    """The smallest `bytes_limit` of the local devices' memory_stats(), or None when no device
    reports one (the CPU)."""
    limits = []
    for device in jax.local_devices():
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 - some backends do not implement it
            stats = {}
        if stats.get("bytes_limit"):
            limits.append(int(stats["bytes_limit"]))
    return min(limits) if limits else None


def device_memory_limit() -> tuple[int, str]:
    """(bytes one device may use, where the figure comes from): `device_bytes_limit()`, else (CPU)
    the host's physical memory / local devices."""
    limit = device_bytes_limit()
    if limit is not None:
        return limit, f"memory_stats() of {jax.local_devices()[0].device_kind}"
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    n = max(1, jax.local_device_count())
    return physical // n, f"host memory {physical / 2**30:.1f} GiB shared by {n} local device(s)"


def check_memory(estimate_bytes: int, local_devices: bool = True) -> None:
    """Refuse a run whose per-device memory plan exceeds what a device has (ConfigError)."""
    if not local_devices:
        return
    limit, source = device_memory_limit()
    if estimate_bytes > limit:
        raise ConfigError(
            f"the memory plan needs about {estimate_bytes / 2**30:.2f} GiB per device, more than "
            f"the {limit / 2**30:.2f} GiB limit ({source}); lower train.batch_size, raise "
            "train.grad_accum or mesh.fsdp, set model.remat=True, or pass --force to try anyway")


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
    sizes = _mesh_sizes(config, jax.device_count() if devices is None else len(devices))
    shards = sizes["data"] * sizes["fsdp"]
    accum = config_lib.grad_accum_of(config) or 1  # "auto" searches from 1 micro-batch
    micro = config.train.batch_size // accum
    if micro % shards:
        raise ConfigError(
            f"config.train.batch_size={config.train.batch_size} (per micro-batch "
            f"{micro} with train.grad_accum={config.train.grad_accum}) is not divisible by the "
            f"{shards} data-parallel shards (mesh data={sizes['data']} x fsdp={sizes['fsdp']})")
    if config.train.batch_size % jax.process_count():
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} is not divisible "
                          f"by the {jax.process_count()} processes")
    return models.make_mesh(sizes["data"], sizes["fsdp"], sizes["tensor"], devices)
