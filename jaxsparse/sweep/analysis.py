"""The numbers of a sweep's report: scaling-law fits with N̄ and with other model sizes, how well
a law fitted on dense runs predicts the sparse ones, and matched (equal N̄, equal D) pairs.

Inputs are the rows of `jaxsparse.sweep.collect` (n_avg, n_final, n_initial in parameters, d in
tokens, loss in nats/token). A run is sparse when its final sparsity is above 1e-6.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxsparse import scaling

SIZE_COLUMNS = {"avg": "n_avg", "final": "n_final", "initial": "n_initial"}
SIZE_LABELS = {"avg": "N̄ (average over training)", "final": "final size (active at the end)",
               "initial": "initial (dense) size"}


@dataclasses.dataclass
class Points:
    """Arrays over the collected runs (same order as `names`)."""

    names: list[str]
    sizes: dict[str, np.ndarray]   # kind ("avg", "final", "initial") -> parameters
    d: np.ndarray                  # tokens
    loss: np.ndarray               # nats/token
    sparsity: np.ndarray           # realised final sparsity
    kind: list[str]                # "dense", "sparse" or "matched" (tag, else from sparsity)
    match: list[str]               # name of the dense partner, or ""

    @property
    def sparse(self) -> np.ndarray:
        return self.sparsity > 1e-6


def points_of(rows: list[dict[str, Any]]) -> Points:
    sparsity = np.array([float(r["final_sparsity"]) for r in rows])
    return Points(
        names=[r["name"] for r in rows],
        sizes={k: np.array([float(r[c]) for r in rows]) for k, c in SIZE_COLUMNS.items()},
        d=np.array([float(r["d"]) for r in rows]),
        loss=np.array([float(r["loss"]) for r in rows]),
        sparsity=sparsity,
        kind=[str(r.get("kind") or ("sparse" if s > 1e-6 else "dense"))
              for r, s in zip(rows, sparsity)],
        match=[str(r.get("match") or "") for r in rows])


def compare_all(p: Points) -> list[dict[str, Any]]:
    """Fit the law on all runs once per size kind (N̄, final, initial); in-sample and
    leave-one-out errors (nats), best first (`jaxsparse.scaling.compare_sizes`)."""
    runs = scaling.Runs(dict(p.sizes), p.d, p.loss, list(p.names))
    return scaling.compare_sizes(runs, list(SIZE_COLUMNS), loo=True)


def dense_to_sparse(p: Points) -> dict[str, Any] | None:
    """Fit on the dense runs only (there N̄ = final = initial size), then predict every sparse
    run with each size kind. None when there are fewer than 5 dense or no sparse runs."""
    dense, sparse = ~p.sparse, p.sparse
    if dense.sum() < 5 or not sparse.any():
        return None
    fit = scaling.fit(p.sizes["avg"][dense], p.d[dense], p.loss[dense], n_kind="dense")
    out: dict[str, Any] = {"fit": fit, "n_dense": int(dense.sum()), "n_sparse": int(sparse.sum()),
                           "errors": {}, "predictions": {}}
    for kind, sizes in p.sizes.items():
        pred = fit.predict(sizes[sparse], p.d[sparse])
        err = pred - p.loss[sparse]
        out["predictions"][kind] = pred
        out["errors"][kind] = {"mae": float(np.mean(np.abs(err))),
                               "max_error": float(np.max(np.abs(err))),
                               "bias": float(np.mean(err))}
    return out


def matched_pairs(p: Points) -> list[dict[str, Any]]:
    """Each run tagged match=<dense run> next to that dense run (same N̄ and D by design)."""
    index = {name: i for i, name in enumerate(p.names)}
    pairs = []
    for i, partner in enumerate(p.match):
        j = index.get(partner)
        if not partner or j is None:
            continue
        pairs.append({
            "sparse": p.names[i], "dense": partner, "sparsity": float(p.sparsity[i]),
            "n_avg_sparse": float(p.sizes["avg"][i]), "n_dense": float(p.sizes["avg"][j]),
            "n_final_sparse": float(p.sizes["final"][i]), "d_sparse": float(p.d[i]),
            "d_dense": float(p.d[j]), "loss_sparse": float(p.loss[i]),
            "loss_dense": float(p.loss[j]), "delta_loss": float(p.loss[i] - p.loss[j])})
    return pairs
