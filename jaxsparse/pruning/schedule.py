"""Pruning schedules: how the density of the prunable weights falls over training.

Units used throughout this module:

* ``step``: an integer training step, ``0 <= step < total_steps``: one optimizer update (one
  ``tx.update`` of the chain holding the transform). Under ``optax.MultiSteps(k)`` that is ``k``
  micro-steps, so ``total_steps`` is micro-steps // k (multi_steps.py warns when it sees the wrapper).
* ``start``/``end``: FRACTIONS of ``total_steps`` in [0, 1]; they become the event steps
  ``t_s = round(start * T)`` and ``t_e = round(end * T)`` (round half up), clamped so that
  ``t_e <= T - 1`` (an event at step ``T`` would never run) and ``t_s <= t_e``.
* ``interval``: steps between pruning events.
* density: the fraction of prunable weights KEPT (1 = dense); sparsity = 1 - density.

Events happen at ``t_s, t_s + interval, ...`` and always at ``t_e``, the last one, where the
density reaches exactly ``1 - final_sparsity``. An event at step ``t`` acts *before* the forward
pass of step ``t``, so ``density_at(t)`` already includes it (Jin et al., ICLR 2025).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

KINDS = ("geometric", "cubic", "linear", "one_shot", "dense")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A pruning schedule (see module docstring for units).

    Attributes:
      kind: "geometric" (the paper's released code: every event removes the same fraction of
        the remaining weights), "cubic" (Zhu & Gupta 2017), "linear", "one_shot" (everything at
        ``start``) or "dense" (never prune; ``final_sparsity`` must then be 0).
      final_sparsity: target sparsity after the last event, in [0, 1).
      start: fraction of training at which pruning starts, in [0, 1].
      end: fraction of training at which pruning ends, in [start, 1].
      interval: steps between events, >= 1.
    """

    kind: str = "geometric"
    final_sparsity: float = 0.0
    start: float = 0.25
    end: float = 0.75
    interval: int = 100

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Schedule.kind={self.kind!r} is unknown; allowed: {', '.join(KINDS)}")
        _check_fraction("final_sparsity", self.final_sparsity, hi_open=True)
        _check_fraction("start", self.start)
        _check_fraction("end", self.end)
        if self.start > self.end:
            raise ValueError(
                f"Schedule.start={self.start} is after Schedule.end={self.end}; need start <= end")
        if isinstance(self.interval, bool) or not isinstance(self.interval, (int, np.integer)) \
                or self.interval < 1:
            raise ValueError(f"Schedule.interval={self.interval!r} must be an integer >= 1 (steps)")
        if self.kind == "dense" and self.final_sparsity != 0:
            raise ValueError(
                f"Schedule.final_sparsity={self.final_sparsity} with kind='dense'; a dense schedule "
                "never prunes, so final_sparsity must be 0")

    # ----------------------------------------------------------------- event table (host)
    def window(self, total_steps: int) -> tuple[int, int]:
        """The first and last event steps ``(t_s, t_e)`` for a run of ``total_steps`` steps."""
        _check_total(total_steps)
        t_e = min(_round_half_up(self.end * total_steps), total_steps - 1)
        t_s = min(_round_half_up(self.start * total_steps), t_e)
        return t_s, t_e

    def event_steps(self, total_steps: int) -> np.ndarray:
        """int64[n_events]: the steps at which masks are recomputed, ascending."""
        if self.kind == "dense":
            return np.zeros((0,), np.int64)
        t_s, t_e = self.window(total_steps)
        if self.kind == "one_shot":
            return np.array([t_s], np.int64)
        steps = list(range(t_s, t_e, self.interval))
        steps.append(t_e)
        return np.asarray(steps, np.int64)

    def event_densities(self, total_steps: int) -> np.ndarray:
        """float64[n_events]: the density in force from each event on (after that event)."""
        events = self.event_steps(total_steps)
        n = len(events)
        s = float(self.final_sparsity)
        if n == 0:
            return np.zeros((0,), np.float64)
        if self.kind == "one_shot":
            return np.array([1.0 - s])
        if self.kind == "geometric":
            dens = (1.0 - s) ** (np.arange(1, n + 1) / n)
        else:
            t_s, t_e = events[0], events[-1]
            frac = (events - t_s) / (t_e - t_s) if t_e > t_s else np.ones(n)
            if self.kind == "cubic":
                dens = 1.0 - s * (1.0 - (1.0 - frac) ** 3)
            else:  # linear
                dens = 1.0 - s * frac
        dens[-1] = 1.0 - s  # exact at the last event, free of rounding
        return dens

    def check_fits(self, total_steps: int) -> None:
        """Raise ValueError when the schedule cannot play out as asked in ``total_steps``.

        A gradual schedule (geometric, cubic, linear) whose pruning window ``t_e - t_s`` is
        non-empty but shorter than ``interval`` would collapse into one event.
        """
        _check_total(total_steps)
        if self.kind in ("geometric", "cubic", "linear") and self.final_sparsity > 0:
            t_s, t_e = self.window(total_steps)
            if 0 < t_e - t_s < self.interval:
                raise ValueError(
                    f"Schedule.interval={self.interval} steps is longer than the pruning window "
                    f"[{t_s}, {t_e}] of a {total_steps}-step run (start={self.start}, "
                    f"end={self.end}); use an interval <= {t_e - t_s} or more steps")

    # ----------------------------------------------------------------- per-step queries
    def density_at(self, step: Any, total_steps: int) -> Any:
        """Density in force during ``step`` (after any event at ``step``).

        ``step`` may be a Python/NumPy integer or array (NumPy float64 result) or a JAX array,
        traced or not (float32 result, usable inside ``jit``).
        """
        events = self.event_steps(total_steps)
        dens = self.event_densities(total_steps)
        xp = jnp if _is_jax(step) else np
        if len(events) == 0:
            return xp.ones_like(xp.asarray(step), dtype=xp.float32 if xp is jnp else np.float64)
        table = xp.concatenate([xp.ones((1,)), xp.asarray(dens)])
        idx = xp.searchsorted(xp.asarray(events), step, side="right")
        return table[idx]

    def is_event(self, step: Any, total_steps: int) -> Any:
        """Whether masks are recomputed before ``step`` (same array rules as ``density_at``)."""
        events = self.event_steps(total_steps)
        xp = jnp if _is_jax(step) else np
        if len(events) == 0:
            return xp.zeros_like(xp.asarray(step), dtype=bool)
        ev = xp.asarray(events)
        idx = xp.searchsorted(ev, step, side="right")
        return (idx > 0) & (ev[xp.maximum(idx - 1, 0)] == step)

    # ----------------------------------------------------------------- averages
    def average_density(self, total_steps: int, densities: np.ndarray | None = None) -> float:
        """Exact mean of ``density_at(t)`` over ``t = 0 .. total_steps - 1``.

        ``densities`` (one per event) replaces the scheduled ones, e.g. the densities an n:m
        structure realises (``jaxsparse.pruning.structure.realised_densities``).
        """
        _check_total(total_steps)
        events = self.event_steps(total_steps)
        if len(events) == 0:
            return 1.0
        dens = self.event_densities(total_steps) if densities is None else np.asarray(densities)
        spans = np.diff(np.append(events, total_steps))  # steps each density is in force
        total = float(events[0]) + float(np.sum(spans * dens))
        return total / total_steps

    def average_density_closed_form(self, total_steps: int | None = None) -> float:
        """Continuous closed form of the average density (Jin et al., ICLR 2025).

        With ``a = t_s/T``, ``b = t_e/T`` (the rounded event steps when ``total_steps`` is
        given, else ``start``/``end``) and ``delta = 1 - S``:

        * geometric: ``a + (b-a) (1-delta) / ln(1/delta) + (1-b) delta``
        * cubic: ``1 - S (3/4 (b-a) + (1-b))``
        * linear: ``1 - S (1/2 (b-a) + (1-b))``
        * one_shot: ``a + (1-a) delta``; dense: 1.

        It differs from ``average_density`` by O(interval / total_steps).
        """
        if total_steps is None:
            a, b = float(self.start), float(self.end)
        else:
            t_s, t_e = self.window(total_steps)
            a, b = t_s / total_steps, t_e / total_steps
        s = float(self.final_sparsity)
        delta = 1.0 - s
        if self.kind == "dense" or s == 0.0:
            return 1.0
        if self.kind == "one_shot":
            return a + (1.0 - a) * delta
        if self.kind == "geometric":
            # (1 - delta) / ln(1/delta) written as S / -log1p(-S): stable for tiny S
            return a + (b - a) * (s / -math.log1p(-s)) + (1.0 - b) * delta
        if self.kind == "cubic":
            return 1.0 - s * (0.75 * (b - a) + (1.0 - b))
        return 1.0 - s * (0.5 * (b - a) + (1.0 - b))


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _is_jax(x: Any) -> bool:
    return isinstance(x, jnp.ndarray) and not isinstance(x, np.ndarray)


def _check_fraction(name: str, value: Any, hi_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    ok = ok and 0.0 <= float(value) and (float(value) < 1.0 if hi_open else float(value) <= 1.0)
    if not ok:
        allowed = "[0, 1)" if hi_open else "[0, 1]"
        raise ValueError(f"Schedule.{name}={value!r} must be a number in {allowed}")


def _check_total(total_steps: Any) -> None:
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) \
            or total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r} must be an integer >= 1")
