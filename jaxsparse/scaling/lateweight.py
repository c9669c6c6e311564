"""Beyond the paper: a late-weighted average parameter count, tested by nested leave-one-out.

Jin et al. (ICLR 2025, section 3) put N̄, the plain average of the parameter count over training, in
the law L(N, D) = E + A/N^α + B/D^β. Its natural family is the late-weighted average

    N_k = ∫ w_k(t) N(t) dt / ∫ w_k(t) dt,   w_k(t) = (t/T)^k,

with k = 0 giving N̄ and k → ∞ the final size. `nested_leave_group_out` chooses k inside each
leave-one-configuration-out fold (an inner leave-one-configuration-out over `ks`, on the training
fold only) and predicts the held-out configuration (every seed and budget of one model size) with
the law fitted at the chosen k, so the chosen k never sees the runs it is scored on.

Trajectories are float[T] arrays of the parameter count in force during each step t = 0 .. T-1
(piecewise constant over [t, t+1)); this module does not know how they were made (the caller builds
them from its pruning schedule). Sizes in parameters, tokens in tokens, losses and errors in nats.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxsparse.scaling import optim
from jaxsparse.scaling.fitting import fit_points, validate_points
from jaxsparse.scaling.io import Runs
from jaxsparse.scaling.paired import paired_difference
from jaxsparse.scaling.law import PARAM_NAMES

K_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)


def late_weighted_size(trajectory: Sequence[float], k: float) -> float:
    """N_k of one run: the (t/T)^k-weighted mean of its per-step parameter counts (exact for a count
    constant within each step: step t weighs ((t+1)/T)^(k+1) - (t/T)^(k+1)); k = inf: the last step's."""
    n = np.asarray(trajectory, dtype=np.float64).ravel()
    if n.size == 0 or not np.all(np.isfinite(n) & (n > 0)):
        raise ValueError("late_weighted_size: a trajectory must be a non-empty array of counts > 0")
    if not k >= 0:
        raise ValueError(f"late_weighted_size: k={k!r} must be >= 0 (or inf)")
    if math.isinf(k):
        return float(n[-1])
    weights = np.diff((np.arange(n.size + 1) / n.size) ** (k + 1.0))
    return float(weights @ n)


def late_weighted_sizes(trajectories: Sequence[Sequence[float]], k: float) -> np.ndarray:
    """float64[R]: N_k of each run."""
    return np.array([late_weighted_size(t, k) for t in trajectories])


@dataclasses.dataclass
class NestedResult:
    """Leave-one-configuration-out errors (prediction - observed, nats; one per run, in input order).

    ks: the grid; errors_fixed[i]: the errors with k = ks[i] in every fold (ks 0 and inf: N̄ and the
    final size under the same folds); errors: the nested errors, each run predicted at its fold's
    chosen k; chosen: {group: chosen k}; inner_mae: {group: [inner MAE per k]}.
    """

    ks: tuple[float, ...]
    groups: list[Any]
    errors: np.ndarray
    errors_fixed: np.ndarray
    chosen: dict[Any, float]
    inner_mae: dict[Any, list[float]]

    @property
    def mae(self) -> float:
        return float(np.mean(np.abs(self.errors)))

    def mae_fixed(self, k: float) -> float:
        return float(np.mean(np.abs(self.errors_fixed[self.ks.index(k)])))

    def to_dict(self) -> dict[str, Any]:
        key = [k if math.isfinite(k) else "inf" for k in self.ks]
        return {"ks": key, "mae": self.mae,
                "mae_fixed": {str(k): self.mae_fixed(v) for k, v in zip(key, self.ks)},
                "chosen": {str(g): (k if math.isfinite(k) else "inf") for g, k in self.chosen.items()},
                "errors": [float(e) for e in self.errors]}


def _predict(theta: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The law at (a, b, e, alpha, beta) in log space: a fold's fit may take A or B past a float's range
    (a degenerate fit, e.g. alpha in the hundreds) while its terms stay finite."""
    a, b, e, alpha, beta = theta
    return np.exp(e) + np.exp(a - alpha * np.log(n)) + np.exp(b - beta * np.log(d))


def _fold_weights(labels: list[Any], order: list[Any]) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
    """Weight rows (0 = left out): for each outer group g, all but g (key (g, None)); for each inner
    h != g, all but g and h (key (g, h))."""
    lab = np.array([order.index(x) for x in labels])
    rows, keys = [], []
    for gi, g in enumerate(order):
        rows.append(lab != gi)
        keys.append((g, None))
        for hi, h in enumerate(order):
            if hi != gi:
                rows.append((lab != gi) & (lab != hi))
                keys.append((g, h))
    return np.array(rows, np.float64), keys


def _base_starts(points_by_k: list, delta: float, starts: np.ndarray | None) -> np.ndarray:
    """Warm starts of every fold's fit: the best distinct optima of full fits at the grid's ends."""
    found = [fit_points(p, delta=delta, starts=starts).local_optima for p in (points_by_k[0], points_by_k[-1])]
    return np.unique(np.concatenate(found), axis=0)


def _fold_fits(points_by_k: list, weights: np.ndarray, warm: np.ndarray, delta: float) -> np.ndarray:
    """(K, F, 5): the law fitted under every k (K) and fold weighting (F), each from every warm start,
    best kept, all in one batched L-BFGS (scipy L-BFGS-B's default tolerances): the K copies of the runs
    are stacked and each fit weighs only its own copy."""
    n_k, n_f, n_r, n_s = len(points_by_k), weights.shape[0], weights.shape[1], warm.shape[0]
    logs = [np.concatenate([np.log(getattr(p, c)) for p in points_by_k]) for c in ("n", "d", "loss")]
    stacked = np.zeros((n_k, n_f, n_k * n_r))
    for i in range(n_k):
        stacked[i, :, i * n_r:(i + 1) * n_r] = weights
    w = np.repeat(stacked.reshape(n_k * n_f, -1), n_s, axis=0)
    x, f, _ = optim.minimize_batch(np.tile(warm, (n_k * n_f, 1)), *logs, delta=delta, weights=w)
    f = np.where(np.isfinite(f), f, np.inf).reshape(n_k * n_f, n_s)
    best = x.reshape(n_k * n_f, n_s, len(PARAM_NAMES))[np.arange(n_k * n_f), np.argmin(f, axis=1)]
    return best.reshape(n_k, n_f, len(PARAM_NAMES))


def _check_folds(weights: np.ndarray, keys: list) -> None:
    for row, key in zip(weights, keys):
        if row.sum() <= len(PARAM_NAMES):
            raise ValueError(f"nested leave-one-out: leaving out {key} keeps {int(row.sum())} runs; the law has "
                             f"{len(PARAM_NAMES)} parameters: give more runs or more configurations")


def nested_leave_group_out(trajectories: Sequence[Sequence[float]], d: Any, loss: Any, groups: Sequence[Any],
                           *, ks: Sequence[float] = K_GRID, delta: float = 1e-3,
                           starts: np.ndarray | None = None) -> NestedResult:
    """Nested leave-one-configuration-out test of N_k (module docstring).

    trajectories: R arrays of per-step parameter counts; d: (R,) tokens; loss: (R,) nats; groups: (R,)
    labels, one per configuration (at least 3). For each held-out group g: for each k, fit the law on
    the other groups minus one group h at a time and score h (inner MAE over those runs); choose the
    k of least inner MAE (ties: the smaller k), then predict g from the fit to all other groups at it.
    starts: (S, 5) starts of the two full-data fits that seed every fold's fit (default: the
    4,500-point grid). Raises ValueError on bad input or folds too small to fit.
    """
    ks = tuple(float(k) for k in ks)
    labels = list(groups)
    order = list(dict.fromkeys(labels))
    if len(order) < 3 or len(labels) != len(trajectories):
        raise ValueError(f"nested leave-one-out needs >= 3 configurations and one label per run; got "
                         f"{len(order)} configurations, {len(labels)} labels, {len(trajectories)} runs")
    if len(ks) < 2 or sorted(ks) != list(ks):
        raise ValueError(f"ks must be at least 2 ascending values, got {ks}")
    points_by_k = [validate_points(late_weighted_sizes(trajectories, k), d, loss, source=f"N_k, k={k:g}")
                   for k in ks]
    weights, keys = _fold_weights(labels, order)
    _check_folds(weights, keys)
    warm = _base_starts(points_by_k, delta, starts)
    lab = np.array([order.index(x) for x in labels])
    thetas = _fold_fits(points_by_k, weights, warm, delta)
    preds = np.array([[_predict(t, p.n, p.d) for t in thetas[i]] for i, p in enumerate(points_by_k)])
    obs = points_by_k[0].loss
    errors_fixed = np.empty((len(ks), len(labels)))
    errors, chosen, inner = np.empty(len(labels)), {}, {}
    for gi, g in enumerate(order):
        outer = keys.index((g, None))
        held = lab == gi
        errors_fixed[:, held] = preds[:, outer][:, held] - obs[held]
        inner_idx = [(j, lab == order.index(h)) for j, (gg, h) in enumerate(keys) if gg == g and h is not None]
        inner[g] = [float(np.mean(np.concatenate([np.abs(preds[i, j][m] - obs[m]) for j, m in inner_idx])))
                    for i in range(len(ks))]
        best = int(np.argmin(inner[g]))
        chosen[g] = ks[best]
        errors[held] = errors_fixed[best, held]
    return NestedResult(ks, labels, errors, errors_fixed, chosen, inner)


def write_trajectories(path: str | Path, trajectories: dict[str, np.ndarray]) -> str:
    """Write {run name: per-step counts} as JSON, each run as its steps and the (step, count) pairs where
    the count changes (a pruning schedule's events: a few per run)."""
    runs = {}
    for name, traj in trajectories.items():
        t = np.asarray(traj, np.float64)
        at = np.concatenate([[0], np.flatnonzero(np.diff(t)) + 1])
        runs[name] = {"steps": int(t.size), "change_steps": at.tolist(), "sizes": t[at].tolist()}
    lines = [f"{json.dumps(name)}: {json.dumps(r)}" for name, r in runs.items()]   # a run per line
    Path(path).write_text('{"what": "parameters in force at each step, piecewise constant", "runs": {\n'
                          + ",\n".join(lines) + "\n}}\n", encoding="utf-8")
    return str(path)


def read_trajectories(path: str | Path) -> dict[str, np.ndarray]:
    """Inverse of write_trajectories. ValueError naming the file when it is not such a JSON."""
    try:
        runs = json.loads(Path(path).read_text(encoding="utf-8"))["runs"]
        return {name: np.repeat(r["sizes"], np.diff(r["change_steps"] + [r["steps"]])).astype(np.float64)
                for name, r in runs.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a trajectories file of write_trajectories ({err})") from None


def compare_late_weighted(runs: Runs, path: str | Path, configuration: Sequence[str], *, delta: float = 1e-3,
                          starts: np.ndarray | None = None) -> dict[str, Any]:
    """`nested_leave_group_out` of CSV runs (a `name` column) with the trajectories of file `path`; a
    configuration is a distinct value of the CSV columns `configuration` (joined by "/"). Returns its
    to_dict() with the paired differences against N̄ and the final size (same folds) and `runs`."""
    runs.check_columns(["name", *configuration], "--late_weighted")
    trajs, names = read_trajectories(path), runs.columns["name"]
    missing = [n for n in names if n not in trajs]
    if missing:
        raise ValueError(f"{path}: no trajectory for run {missing[0]!r} ({len(missing)} of {len(names)} missing)")
    groups = ["/".join(runs.columns[c.lower()][i] for c in configuration) for i in range(len(names))]
    res = nested_leave_group_out([trajs[n] for n in names], runs.tokens, runs.loss, groups, delta=delta,
                                 starts=starts)
    return {**res.to_dict(), "runs": len(names),
            "paired_vs_nbar": paired_difference(res.errors, res.errors_fixed[res.ks.index(0.0)]),
            "paired_vs_final": paired_difference(res.errors, res.errors_fixed[res.ks.index(math.inf)])}


def format_late(out: dict[str, Any]) -> str:
    """Plain-text lines of compare_late_weighted."""
    def pm(p: dict[str, Any]) -> str:
        return f"{p['mean']:+.4f} ± {'-' if p['se'] is None else format(p['se'], '.4f')}"

    fixed = out["mae_fixed"]
    return "\n".join([f"late-weighted N_k, nested leave-one-configuration-out over {out['runs']} runs: MAE "
                      f"{out['mae']:.4f}; with k fixed on the same folds: " +
                      ", ".join(f"k={k} {v:.4f}" for k, v in fixed.items()),
                      f"paired |error N_k| - |error N̄| {pm(out['paired_vs_nbar'])}, - |error final| "
                      f"{pm(out['paired_vs_final'])}",
                      "chosen k per held-out configuration: " +
                      ", ".join(f"{g}: {k}" for g, k in out["chosen"].items())])
