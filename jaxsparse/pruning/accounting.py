"""Counting what is pruned: per-tensor sparsity summaries and the average parameter count N̄."""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.pruning.schedule import Schedule
from jaxsparse.pruning.selection import named_leaves, prunable_flags
from jaxsparse.pruning.structure import realised_densities


@dataclasses.dataclass(frozen=True)
class TensorSparsity:
    """One prunable tensor: ``size`` weights, ``active`` of them kept (nonzero / mask True)."""

    size: int
    active: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.active / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class SparsitySummary:
    """Per-tensor and total sparsity of the prunable tensors (keyed by '/'-joined path)."""

    tensors: dict[str, TensorSparsity]

    @property
    def prunable(self) -> int:
        return sum(t.size for t in self.tensors.values())

    @property
    def active(self) -> int:
        return sum(t.active for t in self.tensors.values())

    @property
    def sparsity(self) -> float:
        return 1.0 - self.active / self.prunable if self.prunable else 0.0

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity

    def as_dict(self) -> dict[str, Any]:
        return {"prunable": self.prunable, "active": self.active, "sparsity": self.sparsity,
                "tensors": {k: {"size": t.size, "active": t.active, "sparsity": t.sparsity}
                            for k, t in self.tensors.items()}}

    def __str__(self) -> str:
        width = max([len(k) for k in self.tensors] + [5])
        rows = [f"{'tensor':<{width}}  {'size':>12}  {'active':>12}  sparsity"]
        for k, t in self.tensors.items():
            rows.append(f"{k:<{width}}  {t.size:>12,}  {t.active:>12,}  {t.sparsity:8.4f}")
        rows.append(f"{'TOTAL':<{width}}  {self.prunable:>12,}  {self.active:>12,}  "
                    f"{self.sparsity:8.4f}")
        return "\n".join(rows)


def sparsity_summary(params_or_masks: Any, *, include: str | None = None,
                     exclude: str | None = None) -> SparsitySummary:
    """Sparsity of a masks tree (bool leaves; None leaves are skipped: not prunable) or of a
    params tree (nonzero weights of the prunable leaves, chosen by the same rule and
    ``include``/``exclude`` patterns as the pruning transform)."""
    flat = [("/".join(names), x) for names, x in named_leaves(params_or_masks)]
    is_masks = bool(flat) and all(jnp.asarray(x).dtype == jnp.bool_ for _, x in flat)
    if is_masks:
        chosen = flat
    else:
        paths, flags = prunable_flags(params_or_masks, include, exclude)
        chosen = [(path, x) for path, (_, x), f in zip(paths, flat, flags) if f]
    counts = jax.device_get([jnp.count_nonzero(x) for _, x in chosen])
    return SparsitySummary({path: TensorSparsity(int(np.prod(x.shape)), int(c))
                            for (path, x), c in zip(chosen, counts)})


class AverageParamCount(NamedTuple):
    """N̄: parameters averaged over training steps (= over tokens at a constant batch).

    Attributes:
      total: N̄ over all parameters (non-prunable ones always count in full).
      prunable: N̄ over the prunable parameters alone.
    """

    total: float
    prunable: float


def average_param_count(schedule: Schedule, total_steps: int, n_prunable: int,
                        n_other: int, structure: str | None = None) -> AverageParamCount:
    """N̄ = (1/T) sum_t [n_other + density(t) * n_prunable] with the exact discrete density
    (as realised by an n:m ``structure`` when given)."""
    if n_prunable < 0 or n_other < 0:
        raise ValueError(f"n_prunable={n_prunable} and n_other={n_other} must be >= 0")
    dens = realised_densities(schedule, total_steps, structure)
    prunable = schedule.average_density(total_steps, dens) * n_prunable
    return AverageParamCount(total=n_other + prunable, prunable=prunable)
