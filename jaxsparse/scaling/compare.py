"""Which model size makes one law fit sparse and dense runs? Fit each size choice on the same runs.

The central claim of Jin et al., ICLR 2025: with N = N-bar (average parameter count over training)
one law fits sparse and dense runs; with the final (post-pruning) size it does not.
Errors are in nats (loss space); sizes in parameters.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxsparse.scaling.uncertainty import leave_one_out_points
from jaxsparse.scaling.fitting import fit_points, validate_points
from jaxsparse.scaling.io import SIZE_KEYS, SIZE_KINDS, Runs
from jaxsparse.scaling.paired import group_mae, paired_difference


def compare_sizes(runs: Runs, kinds: Sequence[str] | None = None, *, delta: float = 1e-3,
                  loo: bool = False, starts: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Fit the law once per model-size kind on the same runs; rows sorted by in-sample MAE (best first).

    kinds: default every kind of io.SIZE_KINDS the inputs have. Each row holds kind, key (summary key),
    rank, the fit (E, A, B, alpha, beta, mae, rmse, max_error, n_points) and, when loo, loo_mae, loo_rmse
    and loo_errors (prediction - observed per run, in the order of `runs.points(kinds)`). starts: the
    fits' (S, 5) starts (default the 4,500-point grid).
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
        res = fit_points(points, delta=delta, n_kind=kind, starts=starts)
        row = {"kind": kind, "key": SIZE_KEYS.get(kind, kind), **res.to_dict()}
        if loo:
            held = leave_one_out_points(points, fit=res, delta=delta)
            row.update(loo_mae=held.mae, loo_rmse=held.rmse, loo_errors=[float(e) for e in held.errors])
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


def paired_by_group(runs: Runs, rows: list[dict[str, Any]], kinds: Sequence[str],
                    by: Sequence[str] = ()) -> dict[str, Any]:
    """The leave-one-out errors of two size kinds (rows of `compare_sizes(..., loo=True)`), paired over
    the same held-out runs: {"kinds": [a, b], "paired": paired_difference(a, b) over all runs, "groups":
    [{"group", "n", "loo_mae": {a, b}, "paired"}]} with groups the distinct values of the CSV columns
    `by` (joined by "/"), in first-seen order. A negative paired mean: kind a predicts better."""
    a, b = list(kinds)[:2]
    errs = {r["kind"]: np.asarray(r["loo_errors"]) for r in rows}
    _, _, _, labels = runs.points(list(kinds))
    index = {lab: i for i, lab in enumerate(runs.labels)}
    runs.check_columns(by, f"--by {','.join(by)}")
    keys = ["/".join(runs.columns[c.lower()][index[lab]] or "-" for c in by) for lab in labels]
    out = {"kinds": [a, b], "paired": paired_difference(errs[a], errs[b]), "groups": []}
    if by:
        maes = {k: group_mae(errs[k], keys) for k in (a, b)}
        for g in maes[a]:
            mask = np.array([key == g for key in keys])
            out["groups"].append({"group": g, "n": maes[a][g]["n"],
                                  "loo_mae": {k: maes[k][g]["mae"] for k in (a, b)},
                                  "paired": paired_difference(errs[a][mask], errs[b][mask])})
    return out


def format_paired(result: dict[str, Any]) -> str:
    """Plain-text lines of paired_by_group."""
    a, b = result["kinds"]

    def diff(p: dict[str, Any]) -> str:
        se = "-" if p["se"] is None else f"{p['se']:.4f}"
        return f"{p['mean']:+.4f} ± {se}"

    lines = [f"leave-one-out |error {a}| - |error {b}| (nats), mean ± standard error over the "
             f"{result['paired']['n']} held-out runs: {diff(result['paired'])}"]
    if result["groups"]:
        w = max(len("group"), *(len(g["group"]) for g in result["groups"]))
        lines.append(f"{'group':<{w}}  runs  {'loo ' + a:>12}  {'loo ' + b:>12}  paired difference ± SE")
        lines += [f"{g['group']:<{w}}  {g['n']:>4}  {g['loo_mae'][a]:>12.4f}  {g['loo_mae'][b]:>12.4f}  "
                  f"{diff(g['paired'])}" for g in result["groups"]]
    return "\n".join(lines)


def compare_command(runs: Runs, kinds: Sequence[str] | None, *, delta: float, loo: bool, by: Sequence[str],
                    late_weighted: str | None = None, configuration: Sequence[str] = ()) -> tuple[dict, str]:
    """`python -m jaxsparse.scaling compare`: (JSON-ready result, text) of compare_sizes, with `loo`
    the paired errors (paired_by_group over `by`), and with `late_weighted` (a trajectories file)
    lateweight.compare_late_weighted over the `configuration` columns."""
    from jaxsparse.scaling.lateweight import compare_late_weighted, format_late
    if (by and not loo) or (late_weighted and not configuration):
        raise ValueError("--by pairs leave-one-out errors: give --loo with it" if by and not loo else
                         "--late_weighted holds out one configuration at a time: give --configuration COLUMNS")
    runs.check_columns(by, f"--by {','.join(by)}")
    rows = compare_sizes(runs, kinds, delta=delta, loo=loo)
    out, text = {"rows": rows, "notes": runs.notes}, format_table(rows)
    if loo:
        out["paired"] = paired_by_group(runs, rows, kinds or [k for k in SIZE_KINDS if k in runs.sizes], by)
        text += "\n" + format_paired(out["paired"])
    if late_weighted:
        out["late_weighted"] = compare_late_weighted(runs, late_weighted, configuration, delta=delta)
        text += "\n" + format_late(out["late_weighted"])
    return out, text
