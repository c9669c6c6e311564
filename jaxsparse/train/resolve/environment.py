"""The devices' memory, and the check of a run's memory plan against it, done before any compute
(the workdir's check: `jaxsparse.train.workdir.check`; the vocabulary and the device mesh:
`jaxsparse.train.resolve.parts`, whose `resolve_vocab` and `build_mesh` stay importable from here).

Every failure is a `ConfigError` (bad input: the command line exits 2, nothing computed).
"""
from __future__ import annotations

import os

import jax

from jaxsparse.errors import ConfigError


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


TRAIN_ADVICE = ("lower train.batch_size, raise train.grad_accum or mesh.fsdp, set model.remat=True, "
                "or pass --force to try anyway")


def check_memory(estimate_bytes: int, local_devices: bool = True, advice: str = TRAIN_ADVICE) -> None:
    """Refuse a command whose per-device memory plan exceeds what a device has (ConfigError);
    `advice`: what to change (default: the trainer's)."""
    if not local_devices:
        return
    limit, source = device_memory_limit()
    if estimate_bytes > limit:
        raise ConfigError(
            f"the memory plan needs about {estimate_bytes / 2**30:.2f} GiB per device, more than "
            f"the {limit / 2**30:.2f} GiB limit ({source}); {advice}")
