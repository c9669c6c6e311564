"""Uncertainty of a scaling-law fit: bootstrap intervals (resampling runs) and leave-one-out error.

Both reuse the batched fitter with point weights: a bootstrap resample is a vector of multinomial counts,
leaving a run out is a zero weight. Each refit starts from the full-data fit's best distinct optima
(`ScalingLawFit.local_optima`) rather than the whole 4,500-point grid, which keeps 100 resamples cheap.
Units: n parameters, d tokens, loss nats.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from jaxsparse.scaling.fitting import FitPoints, fit_log_space, fit_points, validate_points
from jaxsparse.scaling.law import PARAM_NAMES, ScalingLawFit, theta_to_params

Progress = Callable[[int, int], None]


@dataclasses.dataclass
class BootstrapResult:
    """samples: (n_boot, 5) refitted (E, A, B, alpha, beta); intervals: name -> (low, high) percentile
    interval at `confidence`."""

    samples: np.ndarray
    intervals: dict[str, tuple[float, float]]
    confidence: float
    seed: int

    def contains(self, params: dict[str, float]) -> dict[str, bool]:
        """For each parameter: is params[name] inside its interval?"""
        return {k: bool(lo <= params[k] <= hi) for k, (lo, hi) in self.intervals.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"n_boot": int(self.samples.shape[0]), "confidence": self.confidence, "seed": self.seed,
                "intervals": {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()},
                "std": {k: float(np.std(self.samples[:, i])) for i, k in enumerate(PARAM_NAMES)}}


@dataclasses.dataclass
class LeaveOneOutResult:
    """predictions: (n,) loss (nats) predicted for each run by the fit without it; errors = prediction -
    observed; mae, rmse, max_error summarise |errors| in nats."""

    predictions: np.ndarray
    errors: np.ndarray
    mae: float
    rmse: float
    max_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"mae": self.mae, "rmse": self.rmse, "max_error": self.max_error,
                "errors": [float(e) for e in self.errors]}


def _refit(n: np.ndarray, d: np.ndarray, loss: np.ndarray, weights: np.ndarray, base: ScalingLawFit,
           chunk: int, progress: Progress | None) -> np.ndarray:
    """Refit under each weight row (R, n); returns (R, 5) rows (a, b, e, alpha, beta)."""
    starts = base.local_optima
    if starts is None:
        p = base.params()
        starts = np.array([[np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]]])
    logs = (np.log(n), np.log(d), np.log(loss))
    out = np.empty((weights.shape[0], len(PARAM_NAMES)))
    for lo in range(0, weights.shape[0], chunk):
        theta, _, _, _ = fit_log_space(*logs, delta=base.delta, weights=weights[lo:lo + chunk],
                                       starts=starts, n_polish=2)
        out[lo:lo + chunk] = theta
        if progress is not None:
            progress(min(lo + chunk, weights.shape[0]), weights.shape[0])
    return out


def _base(points: FitPoints, fit: ScalingLawFit | None, delta: float) -> ScalingLawFit:
    return fit if fit is not None else fit_points(points, delta=delta)


def bootstrap(n: Any, d: Any, loss: Any, *, fit: ScalingLawFit | None = None, n_boot: int = 100,
              confidence: float = 0.95, seed: int = 0, delta: float = 1e-3, chunk: int = 25,
              progress: Progress | None = None) -> BootstrapResult:
    """Percentile bootstrap intervals of E, A, B, alpha, beta from n_boot resamples of the runs.

    fit: the full-data fit (its optima seed the refits); computed when None. progress(done, total) is
    called after each chunk of resamples. Bad input raises ValueError and duplicate runs warn, once
    (`fitting.validate_points`).
    """
    return bootstrap_points(validate_points(n, d, loss), fit=fit, n_boot=n_boot, confidence=confidence,
                            seed=seed, delta=delta, chunk=chunk, progress=progress)


def bootstrap_points(points: FitPoints, *, fit: ScalingLawFit | None = None, n_boot: int = 100,
                     confidence: float = 0.95, seed: int = 0, delta: float = 1e-3, chunk: int = 25,
                     progress: Progress | None = None) -> BootstrapResult:
    """`bootstrap` of runs already checked by `fitting.validate_points`."""
    n, d, loss = points
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    base = _base(points, fit, delta)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n.size, np.full(n.size, 1.0 / n.size), size=n_boot).astype(np.float64)
    thetas = _refit(n, d, loss, weights, base, chunk, progress)
    samples = np.array([[theta_to_params(t)[k] for k in PARAM_NAMES] for t in thetas])
    q = [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]
    intervals = {k: tuple(float(v) for v in np.quantile(samples[:, i], q)) for i, k in enumerate(PARAM_NAMES)}
    return BootstrapResult(samples, intervals, confidence, seed)


def leave_one_out(n: Any, d: Any, loss: Any, *, fit: ScalingLawFit | None = None, delta: float = 1e-3,
                  chunk: int = 50, progress: Progress | None = None) -> LeaveOneOutResult:
    """Predict each run's loss from a fit to all the other runs (needs at least 6 runs). Bad input raises
    ValueError and duplicate runs warn, once (`fitting.validate_points`)."""
    return leave_one_out_points(validate_points(n, d, loss), fit=fit, delta=delta, chunk=chunk,
                                progress=progress)


def leave_one_out_points(points: FitPoints, *, fit: ScalingLawFit | None = None, delta: float = 1e-3,
                         chunk: int = 50, progress: Progress | None = None) -> LeaveOneOutResult:
    """`leave_one_out` of runs already checked by `fitting.validate_points`."""
    n, d, loss = points
    if n.size <= len(PARAM_NAMES):
        raise ValueError(f"leave-one-out needs more than {len(PARAM_NAMES)} runs, got {n.size}")
    base = _base(points, fit, delta)
    weights = 1.0 - np.eye(n.size)
    thetas = _refit(n, d, loss, weights, base, chunk, progress)
    preds = np.array([ScalingLawFit(**theta_to_params(t)).predict(n[i], d[i]) for i, t in enumerate(thetas)])
    errors = preds - loss
    return LeaveOneOutResult(preds, errors, float(np.mean(np.abs(errors))), float(np.sqrt(np.mean(errors**2))),
                             float(np.max(np.abs(errors))))
