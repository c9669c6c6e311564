"""PNG figures of a sweep's report (matplotlib, Agg backend).

Sizes are parameters (log axes), losses nats/token. Markers: o dense, ^ sparse, s matched.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxsparse.sweep.analysis import SIZE_LABELS, Points

_MARKERS = {"dense": "o", "sparse": "^", "matched": "s"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _groups(p: Points):
    for kind, marker in _MARKERS.items():
        idx = np.array([i for i, k in enumerate(p.kind) if k == kind], dtype=int)
        if idx.size:
            yield kind, marker, idx


def fit_quality(p: Points, fits: dict[str, Any], path: str) -> str:
    """Observed vs predicted loss, one panel per size kind (each fitted on all runs)."""
    plt = _pyplot()
    kinds = [k for k in ("avg", "final", "initial") if k in fits]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4.8), squeeze=False,
                             layout="constrained")
    lo, hi = p.loss.min() - 0.03, p.loss.max() + 0.03
    for ax, kind in zip(axes[0], kinds):
        row = fits[kind]
        pred = row["law"].predict(p.sizes[kind], p.d)
        for group, marker, idx in _groups(p):
            sc = ax.scatter(p.loss[idx], pred[idx], c=p.sparsity[idx], vmin=0, vmax=1,
                            cmap="viridis", marker=marker, s=40, edgecolors="k", linewidths=0.4,
                            label=group)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="observed eval loss (nats/token)",
               ylabel="predicted (nats/token)",
               title=f"N = {SIZE_LABELS[kind]}\nMAE {row['mae']:.4f}, "
                     f"leave-one-out {row.get('loo_mae', float('nan')):.4f}")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.colorbar(sc, ax=axes[0].tolist(), label="final sparsity")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def size_term(p: Points, law: Any, title: str, path: str) -> str:
    """loss - B/D^beta (the law's size part) against size: dense runs at N, sparse runs at N̄
    (filled) and at their final size (hollow), with the curve E + A/N^alpha of `law`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    part = p.loss - law.B / p.d ** law.beta
    all_sizes = np.concatenate([p.sizes["avg"], p.sizes["final"]])
    grid = np.geomspace(all_sizes.min() * 0.8, all_sizes.max() * 1.25, 200)
    ax.plot(grid, law.E + law.A / grid ** law.alpha, "k-", lw=1.2,
            label=f"E + A/N^α  (α = {law.alpha:.3f})")
    for group, marker, idx in _groups(p):
        sparse = idx[p.sparse[idx]]
        dense = idx[~p.sparse[idx]]
        if dense.size:
            ax.scatter(p.sizes["avg"][dense], part[dense], marker=marker, s=45, c="tab:blue",
                       edgecolors="k", linewidths=0.4, label=f"{group} (N)", zorder=3)
        if sparse.size:
            ax.scatter(p.sizes["avg"][sparse], part[sparse], marker=marker, s=45, c="tab:red",
                       edgecolors="k", linewidths=0.4, label=f"{group} at N̄", zorder=3)
            ax.scatter(p.sizes["final"][sparse], part[sparse], marker=marker, s=45,
                       facecolors="none", edgecolors="tab:red", label=f"{group} at final size",
                       zorder=3)
            for i in sparse:
                ax.plot([p.sizes["final"][i], p.sizes["avg"][i]], [part[i], part[i]], ":",
                        c="tab:red", lw=0.8)
    ax.set(xscale="log", xlabel="model size (parameters)",
           ylabel="eval loss - B/D^β (nats/token)", title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_figures(p: Points, fits: dict[str, Any], dense_fit: dict[str, Any] | None,
                  out_dir: str) -> list[str]:
    """fit_quality.png, size_term.png and the scaling toolkit's plots of the N̄ fit."""
    from jaxsparse.scaling.plots import write_plots
    os.makedirs(out_dir, exist_ok=True)
    paths = [fit_quality(p, fits, os.path.join(out_dir, "fit_quality.png"))]
    if dense_fit is not None:
        law = dense_fit["fit"]
        title = "law fitted on the dense runs only; sparse runs placed by size"
    else:
        law, title = fits["avg"]["law"], "law fitted on all runs with N̄"
    paths.append(size_term(p, law, title, os.path.join(out_dir, "size_term.png")))
    nbar_dir = os.path.join(out_dir, "nbar_fit")
    paths += [str(x) for x in write_plots(fits["avg"]["law"], p.sizes["avg"], p.d, p.loss,
                                          nbar_dir)]
    return paths


def loss_against_nbar(rows: list[dict[str, Any]], path: str) -> str:
    """Final eval loss (nats) against N̄ (parameters, log axis) of a sweep's finished runs (`--collect`
    rows) with the method's defaults (rows whose `variant` is one of the investigation's changes are left
    out): dense runs as circles, sparse ones as triangles coloured by final sparsity, each matched run
    joined to its dense partner (same N̄ and D) by a dashed line, so the gap the paper says is 0 shows."""
    rows = [r for r in rows if r.get("variant") in (None, "", "base")]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.8), layout="constrained")
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        partner = by_name.get(str(r.get("match") or ""))
        if partner is not None:
            ax.plot([float(partner["n"]), float(r["n"])], [float(partner["loss"]), float(r["loss"])],
                    "k--", lw=0.8, alpha=0.6)
    dense = [r for r in rows if float(r["final_sparsity"]) < 1e-6]
    sparse = [r for r in rows if float(r["final_sparsity"]) >= 1e-6]
    ax.scatter([float(r["n"]) for r in dense], [float(r["loss"]) for r in dense], marker="o", c="k",
               label="dense (N̄ = N)")
    if sparse:
        points = ax.scatter([float(r["n"]) for r in sparse], [float(r["loss"]) for r in sparse], marker="^",
                            c=[float(r["final_sparsity"]) for r in sparse], cmap="viridis", vmin=0, vmax=1,
                            s=60, label="sparse (25%→75% of training)")
        fig.colorbar(points, ax=ax, label="final sparsity")
    ax.set_xscale("log")
    ax.set(xlabel="N̄: parameters averaged over training", ylabel="final eval loss (nats/token)",
           title="Sparse and dense runs against N̄ (dashed: a matched pair, same N̄ and D)")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
