"""Small statistics of the replication's verdicts: mean and standard error, the paired difference of
two error vectors over the same held-out runs, and errors summarised per group of runs.

Units are those of the inputs (loss differences and errors in nats).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, standard error of the mean) = (x̄, s / sqrt(n)) with s the sample standard deviation
    (ddof = 1); the standard error is None for fewer than 2 values. ValueError when empty."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_se: no values")
    if x.size < 2:
        return float(x[0]), None
    return float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(x.size))


def paired_difference(errors_a: Sequence[float], errors_b: Sequence[float]) -> dict[str, Any]:
    """|errors_a| - |errors_b| over the same held-out runs (a negative mean: `a` predicts better).

    Returns {"mean", "se", "n"}: the mean paired difference of absolute errors and its standard error
    (mean_se). Leave-one-out errors of different folds share most of their training runs, so they are
    not independent and this standard error is a rough, likely optimistic, guide.
    """
    a, b = np.abs(np.asarray(errors_a, np.float64)), np.abs(np.asarray(errors_b, np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.shape} errors against {b.shape}; pair the same runs")
    mean, se = mean_se(a - b)
    return {"mean": mean, "se": se, "n": int(a.size)}


def group_mae(errors: Sequence[float], groups: Sequence[Any]) -> dict[Any, dict[str, Any]]:
    """{group: {"mae", "n"}}: the mean absolute error of each group's runs, in first-seen order."""
    err = np.abs(np.asarray(errors, np.float64))
    labels = list(groups)
    if len(labels) != err.size:
        raise ValueError(f"group_mae: {err.size} errors but {len(labels)} group labels")
    out: dict[Any, dict[str, Any]] = {}
    for g in dict.fromkeys(labels):
        mask = np.array([lab == g for lab in labels])
        out[g] = {"mae": float(np.mean(err[mask])), "n": int(mask.sum())}
    return out
