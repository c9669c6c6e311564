"""Gather the summary.json of every run of a sweep into one CSV for the scaling-law fitter.

Columns (one row per finished run; units: parameters are counts, d is tokens, loss is the final
eval loss in nats/token, flops are sparsity-aware training FLOPs):
  name, n (= n_avg, N̄ over all parameters), n_avg, n_avg_prunable, n_final (active at the end),
  n_initial and n_total (the dense size), n_prunable, d (= tokens), loss (= final_eval_loss),
  final_train_loss, final_sparsity, flops, steps, seed (config.seed: init and data order), workdir,
  then the runs' tags (sorted).
`python -m jaxsparse.scaling fit RESULTS.csv` reads n, d and loss (and the other n_* columns).

A run counts as finished only when its summary.json's config equals the run's current spec
(the config file + args + overrides, resolved) on every key but NOT_IDENTITY's: a sweep file
edited after a run finished is refused (SweepError naming the run and the changed fields), so
an old result is never collected under a new spec.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from typing import Any

from jaxsparse.errors import ConfigError
from jaxsparse.sweep.spec import RunSpec, SweepError
from jaxsparse.train.workdir import layout

COLUMNS = ("name", "n", "n_avg", "n_avg_prunable", "n_final", "n_initial", "n_total",
           "n_prunable", "d", "loss", "final_train_loss", "final_sparsity", "flops", "steps",
           "seed", "workdir")
# Config keys that say where outputs go or how often progress is reported, not what is
# trained: a summary that differs from the spec only in these still counts as the run's.
# (imports: where the code of a family or source comes from; model.family and data.dataset count.)
# (mesh.*: the checkpoint identity excludes it too; a run resumes on another mesh.)
NOT_IDENTITY = ("checkpoint.", "metrics.", "mesh.", "data.data_dir", "train.log_every_steps", "imports",
                "eval.every_steps")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted.key: value}, values normalised through JSON (tuples: lists)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.loads(json.dumps(value, default=str))
    return out


def config_changes(saved: dict, spec: dict) -> list[str]:
    """'key: summary has X, the spec now has Y' for every identity key that differs."""
    a, b = _flat(saved), _flat(spec)
    keys = sorted(k for k in set(a) | set(b) if not k.startswith(NOT_IDENTITY))
    return [f"config.{k}: summary has {a.get(k, '(missing)')!r}, the spec now has "
            f"{b.get(k, '(missing)')!r}" for k in keys if a.get(k, "(missing)") != b.get(k, "(missing)")]


def matching_summary(run: RunSpec, root: str) -> dict[str, Any] | None:
    """The run's summary.json (`layout.read_summary`) if it is this run's (its config equals the
    spec's resolved config up to NOT_IDENTITY keys); None if there is none yet. Raises SweepError
    naming the file and the changed fields if the spec was edited after the run finished, or if
    it is unreadable."""
    from jaxsparse.sweep.check import load_config  # imports the trainer's config (JAX)
    workdir = os.path.join(root, run.workdir)
    path = layout.summary_path(workdir)
    try:
        summary = layout.read_summary(workdir)
        if summary is None:
            return None
        saved = summary["config"]
    except KeyError as err:
        raise SweepError(f"run {run.name!r}: {path} is not a summary written by jaxsparse.train "
                         f"(KeyError: {err}); delete it to rerun the run") from None
    except ConfigError as err:  # its message names the file and why
        raise SweepError(f"run {run.name!r}: {err}; delete it to rerun the run") from None
    changes = config_changes(saved, load_config(run).to_dict())
    if changes:
        raise SweepError(
            f"run {run.name!r} finished with another config than the sweep file now gives it: "
            f"{'; '.join(changes[:3])}{' ...' if len(changes) > 3 else ''}. Its results "
            f"({path}) were left untouched: restore the run's spec, or give it a new name/workdir "
            f"(or delete {os.path.join(root, run.workdir)}) to rerun it")
    return summary


def finished(runs: list[RunSpec], root: str) -> dict[str, dict[str, Any]]:
    """{name: summary} of the runs finished with their current spec. Raises one SweepError
    listing every run whose summary does not match its spec (nothing is started or collected)."""
    done, problems = {}, []
    for run in runs:
        try:
            summary = matching_summary(run, root)
        except SweepError as err:
            problems.append(str(err))
            continue
        if summary is not None:
            done[run.name] = summary
    if problems:
        more = f" (and {len(problems) - 1} more run(s) like it)" if len(problems) > 1 else ""
        raise SweepError(problems[0] + more)
    return done


def row_of(run: RunSpec, root: str, summary: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The CSV row of `run`, or None if it has no summary.json yet."""
    workdir = os.path.join(root, run.workdir)
    path = layout.summary_path(workdir)
    s = summary if summary is not None else matching_summary(run, root)
    if s is None:
        return None
    try:
        row = {"name": run.name, "n": s["n_avg"], "n_avg": s["n_avg"],
               "n_avg_prunable": s["n_avg_prunable"], "n_final": s["n_final"],
               "n_initial": s["n_total"], "n_total": s["n_total"], "n_prunable": s["n_prunable"],
               "d": s["tokens"],
               "loss": s["final_eval_loss"], "final_train_loss": s.get("final_train_loss"),
               "final_sparsity": s["final_sparsity"], "flops": s["flops"], "steps": s["steps"],
               "seed": s["config"]["seed"], "workdir": workdir}
    except KeyError as err:
        raise SweepError(f"{path} has no key {err}; was it written by jaxsparse.train?") from err
    row.update(run.tags)
    return row


def collect(runs: list[RunSpec], root: str) -> tuple[list[dict[str, Any]], list[RunSpec]]:
    """(rows of finished runs with a finite loss, runs without a usable summary). Raises
    SweepError if a summary does not match its run's current spec (see `finished`)."""
    rows, missing = [], []
    done = finished(runs, root)
    for run in runs:
        row = row_of(run, root, done[run.name]) if run.name in done else None
        if row is None or row["loss"] is None or not math.isfinite(float(row["loss"])):
            missing.append(run)
        else:
            rows.append(row)
    return rows, missing


def write_csv(rows: list[dict[str, Any]], path: str) -> str:
    """Write `rows` with COLUMNS first, then every tag column (sorted); return the path."""
    tags = sorted({k for row in rows for k in row} - set(COLUMNS))
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=[*COLUMNS, *tags], restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)  # no partial file left behind
        raise SweepError(f"--collect {path}: cannot write the CSV there ({err})") from err
    return path
