"""ROOT/report.md of a sweep: the runs, the scaling-law fits with N̄ and with the final (and
initial) size, a dense-only law predicting the sparse runs, matched pairs, and the figures.

Errors are absolute differences of eval loss in nats/token; sizes are parameters; D is tokens.
The text states what the numbers show; it does not interpret beyond them.
"""
from __future__ import annotations

import json
import os
from typing import Any

from jaxsparse import scaling
from jaxsparse.sweep import analysis, figures
from jaxsparse.sweep.local import HISTORY
from jaxsparse.sweep.spec import RunSpec
from jaxsparse.train.loop.console import format_duration


def _fmt(x: float) -> str:
    if abs(x) >= 1e4 or (abs(x) < 1e-3 and x != 0):
        return f"{x:.4g}"
    return f"{x:.4f}"


def _runs_table(p: analysis.Points) -> list[str]:
    lines = ["| run | kind | final sparsity | N̄ | final size | initial size | D (tokens) | "
             "eval loss |", "|---|---|---|---|---|---|---|---|"]
    for i, name in enumerate(p.names):
        lines.append(f"| {name} | {p.kind[i]} | {p.sparsity[i]:.3f} | {p.sizes['avg'][i]:,.0f} | "
                     f"{p.sizes['final'][i]:,.0f} | {p.sizes['initial'][i]:,.0f} | "
                     f"{p.d[i]:,.0f} | {p.loss[i]:.4f} |")
    return lines


def _fits_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| N used in the law | E | A | α | B | β | MAE | max error | leave-one-out MAE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {analysis.SIZE_LABELS[r['kind']]} | {_fmt(r['E'])} | {_fmt(r['A'])} | "
                     f"{_fmt(r['alpha'])} | {_fmt(r['B'])} | {_fmt(r['beta'])} | "
                     f"{_fmt(r['mae'])} | {_fmt(r['max_error'])} | {_fmt(r['loo_mae'])} |")
    return lines


def _dense_section(dense: dict[str, Any] | None) -> list[str]:
    if dense is None:
        return ["Not computed: it needs at least 5 dense runs and one sparse run."]
    f = dense["fit"]
    lines = [f"Law fitted on the {dense['n_dense']} dense runs only: L = {_fmt(f.E)} + "
             f"{_fmt(f.A)}/N^{_fmt(f.alpha)} + {_fmt(f.B)}/D^{_fmt(f.beta)} (in-sample MAE "
             f"{_fmt(f.mae)}). It then predicts the {dense['n_sparse']} sparse runs, with each "
             "choice of N for them (bias = mean of predicted - observed):", "",
             "| N of the sparse runs | MAE | max error | bias |", "|---|---|---|---|"]
    for kind, e in dense["errors"].items():
        lines.append(f"| {analysis.SIZE_LABELS[kind]} | {_fmt(e['mae'])} | "
                     f"{_fmt(e['max_error'])} | {_fmt(e['bias'])} |")
    return lines


def _sparse_runs_table(p: analysis.Points, dense: dict[str, Any] | None) -> list[str]:
    if dense is None:
        return []
    pred = dense["predictions"]
    lines = ["", "Per sparse run (residual = observed - predicted by the dense-only law):", "",
             "| run | final sparsity | observed | residual at N̄ | residual at final size |",
             "|---|---|---|---|---|"]
    idx = [i for i in range(len(p.names)) if p.sparse[i]]
    for j, i in sorted(enumerate(idx), key=lambda t: p.sparsity[t[1]]):
        lines.append(f"| {p.names[i]} | {p.sparsity[i]:.3f} | {p.loss[i]:.4f} | "
                     f"{p.loss[i] - pred['avg'][j]:+.4f} | {p.loss[i] - pred['final'][j]:+.4f} |")
    return lines


def _pairs_section(pairs: list[dict[str, Any]]) -> list[str]:
    if not pairs:
        return ["No run of this sweep is tagged as matched to a dense run."]
    lines = ["| sparse run | dense partner | sparsity | N̄ / dense N | final size / dense N | "
             "D equal | loss sparse | loss dense | sparse - dense |",
             "|---|---|---|---|---|---|---|---|---|"]
    for q in pairs:
        lines.append(f"| {q['sparse']} | {q['dense']} | {q['sparsity']:.3f} | "
                     f"{q['n_avg_sparse'] / q['n_dense']:.4f} | "
                     f"{q['n_final_sparse'] / q['n_dense']:.3f} | "
                     f"{'yes' if q['d_sparse'] == q['d_dense'] else 'no'} | "
                     f"{q['loss_sparse']:.4f} | {q['loss_dense']:.4f} | "
                     f"{q['delta_loss']:+.4f} |")
    return lines


def _by_sparsity(p: analysis.Points, dense: dict[str, Any]) -> str:
    """Mean residual (observed - predicted at N̄) of the sparse runs, by sparsity to 0.1."""
    sparsity = p.sparsity[p.sparse]
    residual = p.loss[p.sparse] - dense["predictions"]["avg"]
    groups: dict[float, list[float]] = {}
    for s, r in zip(sparsity, residual):
        groups.setdefault(round(float(s), 1), []).append(float(r))
    return "; ".join(f"{s:.1f}: {sum(v) / len(v):+.4f} ({len(v)} runs)"
                     for s, v in sorted(groups.items()))


def _verdict(p: analysis.Points, fits: dict[str, Any], dense: dict[str, Any] | None,
             pairs: list[dict[str, Any]]) -> list[str]:
    avg, final = fits["avg"], fits["final"]
    out = [f"- Fitted on all runs, the law with N̄ has MAE {_fmt(avg['mae'])} "
           f"(leave-one-out {_fmt(avg['loo_mae'])}); with the final size, MAE "
           f"{_fmt(final['mae'])} (leave-one-out {_fmt(final['loo_mae'])}). "
           + ("N̄ fits better." if avg["loo_mae"] < final["loo_mae"]
              else "N̄ does NOT fit better here.")]
    low_e = [r["kind"] for r in fits.values() if r["E"] < 1e-3 * min(r["mae"], 1.0) + 1e-6]
    if low_e:
        out.append(f"- Caution: E (the irreducible loss) went to ~0 in the fit(s) with N = "
                   f"{', '.join(analysis.SIZE_LABELS[k] for k in low_e)}: these runs do not pin E down, "
                   "so α, β, A, B trade off "
                   "against it and are not comparable to the paper's values.")
    if dense is not None:
        e = dense["errors"]
        out.append(f"- From the dense-only law, N̄ predicts the sparse runs with MAE "
                   f"{_fmt(e['avg']['mae'])} (bias {_fmt(e['avg']['bias'])}); the final size "
                   f"gives MAE {_fmt(e['final']['mae'])} (bias {_fmt(e['final']['bias'])}), the "
                   f"initial size {_fmt(e['initial']['mae'])} (bias {_fmt(e['initial']['bias'])}).")
        out.append("- Mean residual (observed - predicted at N̄ by the dense-only law) by final "
                   f"sparsity: {_by_sparsity(p, dense)}.")
    if pairs:
        deltas = [q["delta_loss"] for q in pairs]
        out.append(f"- Matched pairs (same N̄ and D, so the same training FLOPs): sparse minus "
                   f"dense loss ranges from {min(deltas):+.4f} to {max(deltas):+.4f} nats, "
                   "with a final model of "
                   f"{min(q['n_final_sparse'] / q['n_dense'] for q in pairs):.2f}-"
                   f"{max(q['n_final_sparse'] / q['n_dense'] for q in pairs):.2f}x the dense size.")
    return out


def _run_wall_time(root: str) -> tuple[float, int]:
    """(summed wall seconds, count) of the trainer processes the local runner recorded."""
    path = os.path.join(root, HISTORY)
    if not os.path.exists(path):
        return 0.0, 0
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return float(sum(r["wall_s"] for r in records)), len(records)


def write_report(rows: list[dict[str, Any]], runs: list[RunSpec], root: str,
                 wall_s: float | None = None, out_dir: str | None = None) -> str:
    """Fit, compare, plot; write OUT/report.md, OUT/report.json and OUT/plots/ (OUT: `out_dir`,
    default the sweep root `root`, whose runner history gives the summed wall time); return the
    report's path."""
    out = out_dir or root
    os.makedirs(out, exist_ok=True)
    p = analysis.points_of(rows)
    compared = analysis.compare_all(p)
    fits = {r["kind"]: {**r, "law": scaling.ScalingLawFit.from_dict(r)} for r in compared}
    dense = analysis.dense_to_sparse(p)
    pairs = analysis.matched_pairs(p)
    paths = figures.write_figures(p, fits, dense, os.path.join(out, "plots"))
    rel = [os.path.relpath(x, out) for x in paths]
    wall = f"{format_duration(wall_s)} for this invocation" if wall_s else "not measured here"
    run_s, n_proc = _run_wall_time(root)
    if n_proc:
        wall += (f"; {format_duration(run_s)} summed over the {n_proc} trainer process(es) the "
                 "local runner has recorded for this sweep (all invocations)")
    lines = [
        f"# Sweep report: {os.path.basename(root)}", "",
        f"{len(rows)} of {len(runs)} runs finished. Wall time: {wall}. Loss is the final eval "
        "loss in nats/token; N̄ is the average parameter count over training (all parameters).",
        "", "## What it shows", "", *_verdict(p, fits, dense, pairs), "",
        "## Scaling-law fits on all runs", "",
        "L(N, D) = E + A/N^α + B/D^β, fitted by the Chinchilla approach-3 recipe "
        "(jaxsparse.scaling), once per choice of N:", "", *_fits_table(compared), "",
        "## Dense-only law, applied to the sparse runs", "", *_dense_section(dense),
        *_sparse_runs_table(p, dense), "",
        "## Matched pairs", "", *_pairs_section(pairs), "",
        "## Figures", "", *[f"- [{r}]({r})" for r in rel], "",
        "## Runs", "", *_runs_table(p), ""]
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    summary = {"fits": [{k: v for k, v in r.items()} for r in compared],
               "dense_only": None if dense is None else {
                   "fit": dense["fit"].to_dict(), "errors": dense["errors"]},
               "matched_pairs": pairs, "figures": rel, "wall_s": wall_s,
               "runner_wall_s": run_s, "runner_processes": n_proc}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=float)
    return path
