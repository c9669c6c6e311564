"""Round 2's numbers (issue 28, items 3-6), from the store's rows and the sweep's design; no I/O.

`Design` is what the sweep planned (configs/sweeps/replication2.py): run names by (pair, kind, variant,
seed), each run's tags, and its parameter-count trajectory (round2_report.py builds it from the
pruning schedule). Rows are all_runs.csv's dicts (text values), keyed by run name.

Gaps are eval losses in nats/token: sparse - dense partner (equal N̄ and D: 0 where N̄ holds) and sparse
- dense run of the sparse run's final size (same D), mean ± standard error over seeds (s / sqrt(n),
ddof 1), with the 95% t-interval (n - 1 degrees of freedom). A regime gets a verdict only with every
planned run finished; else it is "pending, k of n runs".
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import stats

from jaxsparse.scaling.compare import compare_sizes, paired_by_group
from jaxsparse.scaling.io import Runs
from jaxsparse.scaling.lateweight import compare_late_weighted
from jaxsparse.scaling.paired import mean_se

KINDS = ("avg", "final")       # N̄ and the final size, as `scaling compare --kinds` names them
CONFIGURATION = ("layers", "width", "sparsity")   # one model size: what nested leave-one-out holds out


@dataclasses.dataclass
class Design:
    """names: (pair, kind, variant, seed) -> run name; tags: name -> the run's tags; trajectory:
    name -> float[T] parameters in force at each step (given n_total, n_prunable)."""

    names: dict[tuple[str, str, str, int], str]
    tags: dict[str, dict[str, Any]]
    trajectory: Any
    seeds: tuple[int, ...]
    lr_factors: tuple[float, ...]


def _loss(rows: dict, name: str) -> float:
    return float(rows[name]["loss"])


def pending(found: int, total: int) -> str:
    return f"pending, {found} of {total} runs"


def interval(mean: float, se: float | None, n: int) -> tuple[float, float] | None:
    """The 95% t-interval of a mean of n values (None below 2)."""
    if se is None or n < 2:
        return None
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return mean - half, mean + half


def _stat(values: list[float]) -> dict[str, Any]:
    mean, se = mean_se(values)
    return {"mean": mean, "se": se, "n": len(values), "ci95": interval(mean, se, len(values)),
            "values": values}


def pair_gaps(rows: dict, design: Design, pair: str) -> dict[str, Any]:
    """Gaps of one pair over the design's seeds (whatever seeds finished, `complete` says if all)."""
    need = [design.names[(pair, k, "base", s)] for s in design.seeds for k in ("dense", "matched", "final_size")]
    have = [n for n in need if n in rows]
    out: dict[str, Any] = {"pair": pair, "runs": len(have), "planned": len(need),
                           "complete": len(have) == len(need)}
    seeds = [s for s in design.seeds
             if all(design.names[(pair, k, "base", s)] in rows for k in ("dense", "matched", "final_size"))]
    if not seeds:
        return out
    m = np.array([_loss(rows, design.names[(pair, "matched", "base", s)]) for s in seeds])
    d = np.array([_loss(rows, design.names[(pair, "dense", "base", s)]) for s in seeds])
    f = np.array([_loss(rows, design.names[(pair, "final_size", "base", s)]) for s in seeds])
    out.update(seeds=seeds, partner=_stat(list(m - d)), final=_stat(list(m - f)),
               position=_stat(list((m - d) / (f - d))))
    return out


def regime(design: Design, rows: dict, pair: str) -> dict[str, Any]:
    """What a pair's regime is: depth, widths, final sparsity, N̄ (= the partner's size), D."""
    m = design.tags[design.names[(pair, "matched", "base", design.seeds[0])]]
    d = design.tags[design.names[(pair, "dense", "base", design.seeds[0])]]
    f = design.tags[design.names[(pair, "final_size", "base", design.seeds[0])]]
    out = {"layers": m["layers"], "sparse_width": m["width"], "partner_width": d["width"],
           "final_width": f["width"], "sparsity": m["sparsity"], "epochs": m.get("epochs"),
           "budget": m.get("budget")}
    name = design.names[(pair, "matched", "base", design.seeds[0])]
    if name in rows:
        out.update(n_avg=float(rows[name]["n_avg"]), d=float(rows[name]["d"]),
                   n_final=float(rows[name]["n_final"]))
    return out


def lr_check(rows: dict, design: Design, pair: str) -> dict[str, Any]:
    """Seed 0 of each side at each learning-rate factor (1 = the base pair): the best factor per side
    and the gap (sparse - dense) at each side's best rate."""
    factors = sorted((1.0, *design.lr_factors))
    variant = {f: "base" if f == 1.0 else f"lrx{f:g}" for f in factors}
    names = {(side, f): design.names[(pair, side, variant[f], 0)] for side in ("dense", "matched") for f in factors}
    have = {key: _loss(rows, n) for key, n in names.items() if n in rows}
    out: dict[str, Any] = {"pair": pair, "runs": len(have), "planned": len(names),
                           "loss": {f"{side}@{f:g}": v for (side, f), v in have.items()}}
    if len(have) < len(names):
        return out
    best = {side: min(factors, key=lambda f: have[(side, f)]) for side in ("dense", "matched")}
    out.update(best={s: best[s] for s in best},
               gap_at_best=have[("matched", best["matched"])] - have[("dense", best["dense"])],
               gap_at_1x=have[("matched", 1.0)] - have[("dense", 1.0)])
    return out


def repetition(rows: dict, design: Design, pair: str = "2L_small") -> dict[str, Any]:
    """The repetition check: seed 0 of the pair at 4 epochs against its <= 1 epoch twin."""
    names = {(k, v): design.names[(pair, k, v, 0)] for k in ("dense", "matched") for v in ("base", "4ep")}
    if not all(n in rows for n in names.values()):
        return {"pair": pair, "runs": sum(n in rows for n in names.values()), "planned": len(names)}
    loss = {key: _loss(rows, n) for key, n in names.items()}
    return {"pair": pair, "runs": 4, "planned": 4,
            "gap_1ep": loss[("matched", "base")] - loss[("dense", "base")],
            "gap_4ep": loss[("matched", "4ep")] - loss[("dense", "4ep")],
            "epochs": {v: float(rows[names[("dense", v)]]["epochs"]) for v in ("base", "4ep")}}


def depth_fits(runs: Runs, design: Design, layers: int, trajectories: str, starts: np.ndarray | None = None,
               late_starts: np.ndarray | None = None) -> dict[str, Any]:
    """The law fitted per N choice on one depth's fit runs (`runs`: all_runs.csv read by
    scaling.load_runs, any rows): leave-one-out MAE, the paired N̄ - final-size difference ± SE, per
    (pair, kind) group; and the late-weighted N_k's nested leave-one-configuration-out (`trajectories`:
    the file of the runs' N(t); a configuration is (layers, width, final sparsity): every seed and D of
    one model size is held out together). starts,
    late_starts: (S, 5) starts of the two (default: the 4,500-point grid, as `scaling compare`)."""
    where = {"fit": "1", "layers": str(layers)}
    planned = [n for n, t in design.tags.items() if int(t.get("fit", 0)) and int(t["layers"]) == layers]
    try:
        mine = runs.select(where)
        have = set(mine.columns["name"])
    except ValueError:   # no finished run of this depth yet
        mine, have = None, set()
    out: dict[str, Any] = {"layers": layers, "runs": len(have & set(planned)), "planned": len(planned),
                           "where": where}
    if mine is None or set(planned) - have:
        return out
    rows = compare_sizes(mine, list(KINDS), loo=True, starts=starts)
    by_kind = {r["kind"]: r for r in rows}
    out["loo_mae"] = {k: by_kind[k]["loo_mae"] for k in KINDS}
    out["paired"] = paired_by_group(mine, rows, KINDS, ["pair", "kind"])
    out["late_weighted"] = compare_late_weighted(mine, trajectories, CONFIGURATION, starts=late_starts)
    return out
