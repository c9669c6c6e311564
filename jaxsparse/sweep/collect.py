"""Gather the summary.json of every run of a sweep into one CSV for the scaling-law fitter.

Columns (one row per finished run; units: parameters are counts, d is tokens, loss is the final
eval loss in nats/token, flops are sparsity-aware training FLOPs):
  name, n (= n_avg, N̄ over all parameters), n_avg, n_avg_prunable, n_final (active at the end),
  n_initial and n_total (the dense size), n_prunable, d (= tokens), loss (= final_eval_loss),
  final_train_loss, final_sparsity, flops, steps, workdir, then the runs' tags (sorted).
`python -m jaxsparse.scaling fit RESULTS.csv` reads n, d and loss (and the other n_* columns).
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

from jaxsparse.sweep.local import SUMMARY
from jaxsparse.sweep.spec import Run

COLUMNS = ("name", "n", "n_avg", "n_avg_prunable", "n_final", "n_initial", "n_total",
           "n_prunable", "d", "loss", "final_train_loss", "final_sparsity", "flops", "steps",
           "workdir")


def row_of(run: Run, root: str) -> dict[str, Any] | None:
    """The CSV row of `run`, or None if it has no summary.json yet."""
    workdir = os.path.join(root, run.workdir)
    path = os.path.join(workdir, SUMMARY)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        s = json.load(f)
    try:
        row = {"name": run.name, "n": s["n_avg"], "n_avg": s["n_avg"],
               "n_avg_prunable": s["n_avg_prunable"], "n_final": s["n_final"],
               "n_initial": s["n_total"], "n_total": s["n_total"], "n_prunable": s["n_prunable"],
               "d": s["tokens"],
               "loss": s["final_eval_loss"], "final_train_loss": s.get("final_train_loss"),
               "final_sparsity": s["final_sparsity"], "flops": s["flops"], "steps": s["steps"],
               "workdir": workdir}
    except KeyError as err:
        raise ValueError(f"{path} has no key {err}; was it written by jaxsparse.train?") from err
    row.update(run.tags)
    return row


def collect(runs: list[Run], root: str) -> tuple[list[dict[str, Any]], list[Run]]:
    """(rows of finished runs with a finite loss, runs without a usable summary)."""
    rows, missing = [], []
    for run in runs:
        row = row_of(run, root)
        if row is None or not math.isfinite(float(row["loss"])):
            missing.append(run)
        else:
            rows.append(row)
    return rows, missing


def write_csv(rows: list[dict[str, Any]], path: str) -> str:
    """Write `rows` with COLUMNS first, then every tag column (sorted); return the path."""
    tags = sorted({k for row in rows for k in row} - set(COLUMNS))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, *tags], restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    os.replace(tmp, path)
    return path
