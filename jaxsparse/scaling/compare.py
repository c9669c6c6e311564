"""Which model size makes one law fit sparse and dense runs? Fit each size choice on the same runs.

The central claim of Jin et al., ICLR 2025: with N = N-bar (average parameter count over training)
one law fits sparse and dense runs; with the final (post-pruning) size it does not.
Errors are in nats (loss space); sizes in parameters.
"""
from __future__ import annotations

from typing import Any, Sequence

from jaxsparse.scaling.uncertainty import leave_one_out_points
from jaxsparse.scaling.fitting import fit_points, validate_points
from jaxsparse.scaling.io import SIZE_KEYS, SIZE_KINDS, Runs


def compare_sizes(runs: Runs, kinds: Sequence[str] | None = None, *, delta: float = 1e-3,
                  loo: bool = False) -> list[dict[str, Any]]:
    """Fit the law once per model-size kind on the same runs; rows sorted by in-sample MAE (best first).

    kinds: default every kind of io.SIZE_KINDS the inputs have. Each row holds kind, key (summary key),
    rank, the fit (E, A, B, alpha, beta, mae, rmse, max_error, n_points) and, when loo, loo_mae and loo_rmse.
    """
    if kinds is None:
        kinds = [k for k in SIZE_KINDS if k in runs.sizes]
    kinds = list(dict.fromkeys(kinds))
    if len(kinds) < 2:
        raise ValueError(f"compare needs at least two model-size kinds; inputs have {sorted(runs.sizes)}")
    sizes, tokens, loss, _ = runs.points(kinds)
    rows = []
    for kind in kinds:
        points = validate_points(sizes[kind], tokens, loss)  # once per kind's fit
        res = fit_points(points, delta=delta, n_kind=kind)
        row = {"kind": kind, "key": SIZE_KEYS.get(kind, kind), **res.to_dict()}
        if loo:
            held = leave_one_out_points(points, fit=res, delta=delta)
            row.update(loo_mae=held.mae, loo_rmse=held.rmse)
        rows.append(row)
    rows.sort(key=lambda r: r["mae"])
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of compare_sizes rows."""
    cols = ["rank", "kind", "key", "n_points", "mae", "rmse", "max_error", "E", "A", "B", "alpha", "beta"]
    if rows and "loo_mae" in rows[0]:
        cols[7:7] = ["loo_mae", "loo_rmse"]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) >= 1e3 or abs(value) < 1e-2 else f"{value:.4f}"
        return str(value)

    table = [cols] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table)
