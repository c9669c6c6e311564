"""Fitting L(N, D) = E + A/N^alpha + B/D^beta by the Chinchilla approach-3 recipe (Hoffmann et al. 2022, approach 3).

Huber loss (delta = 1e-3) on log-loss residuals of the log-sum-exp form, L-BFGS from every point of the
4,500-start grid, best optimum kept. `fit` runs all starts at once with the batched L-BFGS of optim.py
(scipy's L-BFGS-B stopping rules), then polishes the best few endpoints with tight tolerances.
`fit_reference` is the plain recipe (scipy L-BFGS-B, one start at a time), kept for benchmarks and checks.
Units: n in parameters, d in tokens, loss in nats per token.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from jaxsparse.scaling import optim
from jaxsparse.scaling.law import PARAM_NAMES, ScalingLawFit, init_grid, loss_errors, theta_to_params

N_PARAMS = len(PARAM_NAMES)
_POLISH = dict(ftol=1e-14, gtol=1e-12, f_floor=0.0)


class FitPoints(NamedTuple):
    """Runs as `validate_points` returns them: float64[count] each (n parameters, d tokens, loss nats),
    all finite and > 0. The public fitting functions validate their input once, into this, and pass it
    inward (`fit_points`, `uncertainty.bootstrap_points`, `uncertainty.leave_one_out_points`)."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray


def validate_points(n: Any, d: Any, loss: Any, *, source: str = "input") -> FitPoints:
    """Check and convert runs to float64 arrays; raise ValueError naming the row and column of bad values.

    Every value must be finite and > 0; there must be at least 5 points (one per parameter) and at least
    2 distinct values of n and of d (else A/N^alpha, or B/D^beta, cannot be told apart from E).
    Messages name the array index of the first bad value ("index 7") and its column. Duplicate runs (same
    n, d and loss) are fitted as given, with a `DuplicateRunsWarning` (they weigh as many runs).
    """
    cols = {}
    for name, values in (("n", n), ("d", d), ("loss", loss)):
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"{source}: column {name!r} must be 1-D, got shape {arr.shape}")
        cols[name] = arr
    sizes = {name: arr.shape[0] for name, arr in cols.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{source}: columns have different lengths {sizes}")
    for name, arr in cols.items():
        bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{source}: index {i}: column {name!r} is {arr[i]!r}; must be finite and > 0 "
                             f"({bad.size} bad value(s) in this column)")
    count = cols["n"].shape[0]
    if count < N_PARAMS:
        raise ValueError(f"{source}: {count} point(s) but the law has {N_PARAMS} parameters "
                         f"{list(PARAM_NAMES)}; need at least {N_PARAMS}")
    for name, what in (("n", "model sizes"), ("d", "token counts")):
        distinct = np.unique(cols[name])
        if distinct.size < 2:
            raise ValueError(f"{source}: column {name!r} has {distinct.size} distinct value ({distinct[0]:.6g}) in "
                             f"{count} points; the law needs at least 2 distinct {what} (and 5 points) to fit "
                             "its exponents")
    rows = np.stack([cols["n"], cols["d"], cols["loss"]], axis=1)
    duplicates = count - np.unique(rows, axis=0).shape[0]
    if duplicates:
        warnings.warn(f"{source}: {duplicates} of {count} runs duplicate another run (same n, d and loss); each "
                      "copy counts as a separate run in the fit and its intervals", DuplicateRunsWarning,
                      stacklevel=2)
    return FitPoints(cols["n"], cols["d"], cols["loss"])


class DuplicateRunsWarning(UserWarning):
    """Some runs given to the fitter are exact copies of others."""


def distinct_best(thetas: np.ndarray, objectives: np.ndarray, k: int, tol: float = 1e-3) -> np.ndarray:
    """Up to k endpoints, best objective first, no two within `tol` (max-abs, log-parameter space)."""
    kept: list[np.ndarray] = []
    for i in np.argsort(objectives):
        if not np.isfinite(objectives[i]):
            break
        if all(np.max(np.abs(thetas[i] - t)) > tol for t in kept):
            kept.append(thetas[i])
            if len(kept) == k:
                break
    return np.asarray(kept).reshape(-1, N_PARAMS)


def fit_log_space(log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, *, delta: float = 1e-3,
                  weights: np.ndarray | None = None, starts: np.ndarray | None = None,
                  n_polish: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit R weightings of the same points at once, each from every start.

    weights: (R, n) point weights (None: one fit with unit weights). starts: (S, 5) rows (a, b, e, alpha,
    beta), default the 4,500-point grid. Returns (theta (R, 5), objective (R,), endpoints (R, S, 5),
    endpoint objectives (R, S)); theta is the best polished endpoint of each weighting.
    """
    starts = init_grid() if starts is None else np.asarray(starts, np.float64).reshape(-1, N_PARAMS)
    n_w = 1 if weights is None else weights.shape[0]
    n_s = starts.shape[0]
    w_rep = None if weights is None else np.repeat(weights, n_s, axis=0)
    ends, objs, _ = optim.minimize_batch(np.tile(starts, (n_w, 1)), log_n, log_d, log_l, delta=delta,
                                         weights=w_rep)
    ends, objs = ends.reshape(n_w, n_s, N_PARAMS), objs.reshape(n_w, n_s)
    n_pol = max(1, min(n_polish, n_s))
    top = np.argsort(np.where(np.isfinite(objs), objs, np.inf), axis=1)[:, :n_pol]  # (R, P)
    pol0 = np.take_along_axis(ends, top[:, :, None], axis=1).reshape(-1, N_PARAMS)
    w_pol = None if weights is None else np.repeat(weights, n_pol, axis=0)
    pol, pol_f, _ = optim.minimize_batch(pol0, log_n, log_d, log_l, delta=delta, weights=w_pol, **_POLISH)
    pol, pol_f = pol.reshape(n_w, n_pol, N_PARAMS), pol_f.reshape(n_w, n_pol)
    best = np.argmin(np.where(np.isfinite(pol_f), pol_f, np.inf), axis=1)
    rows = np.arange(n_w)
    return pol[rows, best], pol_f[rows, best], ends, objs


def _result(theta: np.ndarray, objective: float, n: np.ndarray, d: np.ndarray, loss: np.ndarray,
            delta: float, n_kind: str | None) -> ScalingLawFit:
    if not np.isfinite(objective):
        raise ValueError("the fit did not converge from any start (objective is not finite)")
    res = ScalingLawFit(**theta_to_params(theta), n_points=int(n.shape[0]), n_kind=n_kind,
                        objective=float(objective), delta=float(delta))
    for key, value in loss_errors(res, n, d, loss).items():
        setattr(res, key, value)
    return res


def fit(n: Any, d: Any, loss: Any, *, delta: float = 1e-3, n_kind: str | None = None,
        starts: np.ndarray | None = None, source: str = "input") -> ScalingLawFit:
    """Fit E, A, B, alpha, beta to runs (n parameters, d tokens, loss nats) by the approach-3 recipe.

    starts: optional (S, 5) starts (a, b, e, alpha, beta); default the 4,500-point grid of Hoffmann et al. 2022.
    The result's `local_optima` holds the best distinct endpoints (used to warm-start bootstrap fits).
    Bad input raises ValueError and duplicate runs warn (`validate_points`, `source` names the input).
    """
    return fit_points(validate_points(n, d, loss, source=source), delta=delta, n_kind=n_kind, starts=starts)


def fit_points(points: FitPoints, *, delta: float = 1e-3, n_kind: str | None = None,
               starts: np.ndarray | None = None) -> ScalingLawFit:
    """`fit` of runs already checked by `validate_points`."""
    n, d, loss = points
    theta, obj, ends, objs = fit_log_space(np.log(n), np.log(d), np.log(loss), delta=delta, starts=starts)
    res = _result(theta[0], obj[0], n, d, loss, delta, n_kind)
    res.local_optima = distinct_best(np.concatenate([theta, ends[0]]), np.concatenate([obj, objs[0]]), 8,
                                     tol=0.05)
    return res


def fit_reference(n: Any, d: Any, loss: Any, *, delta: float = 1e-3, n_kind: str | None = None,
                  starts: np.ndarray | None = None, gradient: str = "analytic") -> ScalingLawFit:
    """The reference recipe: scipy L-BFGS-B (default tolerances) from each start in turn, best kept.

    gradient: "analytic" (jac supplied) or "numeric" (scipy's finite differences, as a plain script
    would do). Slow (one scipy call per start); for benchmarks and cross-checks of `fit`.
    """
    from scipy.optimize import minimize

    n, d, loss = validate_points(n, d, loss)
    logs = (np.log(n), np.log(d), np.log(loss))
    starts = init_grid() if starts is None else np.asarray(starts, np.float64).reshape(-1, N_PARAMS)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = optim.value_and_grad(theta[None, :], *logs, delta)
        return float(f[0]), g[0]

    if gradient not in ("analytic", "numeric"):
        raise ValueError(f"gradient must be 'analytic' or 'numeric', got {gradient!r}")
    analytic = gradient == "analytic"
    best_x, best_f = None, np.inf
    for start in starts:
        with np.errstate(over="ignore", invalid="ignore"):  # overflowing trial points are just rejected
            res = minimize(fun if analytic else (lambda th: fun(th)[0]), start, jac=analytic, method="L-BFGS-B")
        if np.isfinite(res.fun) and res.fun < best_f:
            best_x, best_f = res.x, float(res.fun)
    if best_x is None:
        raise ValueError("the reference fit did not converge from any start")
    return _result(best_x, best_f, n, d, loss, delta, n_kind)
