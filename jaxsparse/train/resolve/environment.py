"""Checks and resolutions done before any compute: workdir, vocabulary, device mesh, memory.

Every failure is a `ConfigError` (bad input: the command line exits 2, nothing computed).
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid

import jax
import ml_collections
from jax.sharding import Mesh

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.errors import ConfigError
from jaxsparse.train.resolve import config as config_lib
from jaxsparse.train.workdir import layout as ckpt_layout

# What a run writes into its workdir; `--restart` moves these aside (never deletes them).
RUN_OUTPUTS = (ckpt_layout.CHECKPOINTS, "metrics.jsonl", "summary.json", "training.png", "tensorboard")
PREVIOUS = "previous"


def check_workdir(workdir: str, restart: bool = False) -> bool:
    """Create `workdir` if needed and prove it (and its checkpoints/, if there) writable with a
    probe file that is always removed. Returns whether the trainer must move the outputs of an
    earlier attempt aside (`move_previous_outputs`) before it starts from step 0.

    A workdir holding summary.json but no checkpoint cannot be resumed, nor one whose every
    checkpoint was set aside as damaged: refused unless `restart`. metrics.jsonl with no intact or
    damaged checkpoint (a kill before the first one, or a divergence whose every checkpoint was set
    aside as not good) is safe to move aside: True, and the trainer says so. With `restart`: True.
    """
    _check_path(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--workdir={workdir} is not a writable directory: {err}") from err
    for where in (workdir, ckpt_layout.checkpoint_dir(workdir)):
        if os.path.isdir(where) or where == workdir:
            _probe(where, workdir)
    outputs = [n for n in RUN_OUTPUTS if os.path.exists(os.path.join(workdir, n))]
    if restart or ckpt_layout.saved_steps(workdir):
        return restart and bool(outputs)
    damaged = ckpt_layout.set_aside_entries(workdir)
    if damaged:
        raise ConfigError(
            f"--workdir={workdir}: every checkpoint was set aside as damaged ({', '.join(damaged)} in "
            f"{ckpt_layout.checkpoint_dir(workdir)}), so there is nothing to resume from; pass --restart "
            f"to start over from step 0 (it moves the old outputs to {os.path.join(workdir, PREVIOUS)}/)")
    if "summary.json" in outputs:
        raise ConfigError(
            f"--workdir={workdir} holds summary.json but no checkpoint to resume from; use a new "
            f"--workdir, or pass --restart to start over (it moves the old outputs to "
            f"{os.path.join(workdir, PREVIOUS)}/)")
    return "metrics.jsonl" in outputs


def _check_path(workdir: str) -> None:
    if not workdir:
        raise ConfigError("--workdir is required: the directory for checkpoints, metrics and summary")
    if "://" in workdir:
        raise ConfigError(f"--workdir={workdir}: URLs are not supported; mount the bucket "
                          "(e.g. gcsfuse BUCKET /mnt/gcs, as launch/setup.sh does) and pass the "
                          "local path, e.g. /mnt/gcs/runs/NAME")
    try:
        os.path.abspath(workdir).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"--workdir={workdir!r} holds a byte that is not UTF-8; the checkpoint "
                          "library cannot write there. Use a UTF-8 (e.g. ASCII) path") from None


def _probe(directory: str, workdir: str) -> None:
    """Write and remove a probe file in `directory` (removed even when the write fails)."""
    probe = os.path.join(directory, f".write_probe_{uuid.uuid4().hex}")
    try:
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        where = "" if directory == workdir else f" (its {os.path.basename(directory)}/)"
        raise ConfigError(f"--workdir={workdir}{where} is not a writable directory: {err}") from err
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)


def move_previous_outputs(workdir: str, why: str = "--restart") -> None:
    """`--restart`: move every output of a previous run (RUN_OUTPUTS) to
    WORKDIR/previous/<UTC time>/ (process 0 moves, the others wait; nothing is deleted)."""
    outputs = [n for n in RUN_OUTPUTS if os.path.exists(os.path.join(workdir, n))]
    if jax.process_index() == 0 and outputs:
        target = os.path.join(workdir, PREVIOUS, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        os.makedirs(target, exist_ok=True)
        for name in outputs:
            os.replace(os.path.join(workdir, name), os.path.join(target, name))
        print(f"{why}: moved {', '.join(outputs)} to {target}", flush=True)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("jaxsparse --restart: previous outputs moved")


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
