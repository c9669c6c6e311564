"""N:M structure: parsing "n:m" and the densities an n:m schedule actually realises.

With structure "n:m" every group of m consecutive fan-in weights keeps ``ceil(density * m)``
weights at each event (never fewer than n), so the realised density is a multiple of 1/m. This
module is the one place that rule lives: the transform and the N̄ accounting both use it.
"""
from __future__ import annotations

import numpy as np

from jaxsparse.pruning.schedule import Schedule


def parse_structure(structure: str | None) -> tuple[int, int] | None:
    """``None`` or ``(n, m)`` from "n:m"; ValueError naming ``structure`` otherwise."""
    if structure is None:
        return None
    try:
        n_str, m_str = str(structure).split(":")
        n, m = int(n_str), int(m_str)
    except ValueError:
        raise ValueError(f"structure={structure!r} must be None or 'n:m' such as '2:4'") from None
    if not 0 < n < m:
        raise ValueError(f"structure={structure!r}: need 0 < n < m (got n={n}, m={m})")
    return n, m


def realised_densities(schedule: Schedule, total_steps: int,
                       structure: str | None = None) -> np.ndarray:
    """float64[n_events]: the density after each event as the transform realises it (the
    schedule's own densities when unstructured)."""
    nm = parse_structure(structure)
    return _realised(schedule, total_steps, nm)


def kept_per_group(schedule: Schedule, total_steps: int, nm: tuple[int, int]) -> np.ndarray:
    """int32[n_events]: weights kept per group of m at each event."""
    return np.rint(_realised(schedule, total_steps, nm) * nm[1]).astype(np.int32)


def _realised(schedule: Schedule, total_steps: int, nm: tuple[int, int] | None) -> np.ndarray:
    """The schedule's event densities; under n:m each rounded up to whole weights per group of m
    (at least n, at most m kept)."""
    dens = schedule.event_densities(total_steps)
    if nm is None:
        return dens
    n, m = nm
    return np.clip(np.ceil(dens * m - 1e-9), n, m) / m
