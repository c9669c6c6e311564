"""Round 2's verdict by regime (issue 28, items 3-6) from the committed store, in one command:

    python3 results/replication/round2_report.py            # --store results/replication/round2

reads STORE/all_runs.csv (the finished runs of configs/sweeps/replication2.py, as `round2.py save`
writes them) and the sweep's design, and writes STORE/report.md, STORE/report.json, STORE/gaps.png and
STORE/trajectories.json:
per regime (depth, size, sparsity) the gaps with standard errors over seeds, per depth the law's
leave-one-out MAE with N̄ and with the final size (paired difference ± SE, overall and per regime),
the late-weighted size N_k's nested leave-one-configuration-out, the learning-rate check and the
repetition check. A regime with any planned run missing is "pending, k of n runs", not a verdict.
The fits' numbers are the ones `python -m jaxsparse.scaling compare` prints (the command is in the
report). N(t) of each run comes from its pruning schedule (jaxsparse.pruning.Schedule), checked
against the trainer's N̄ in the CSV.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import round2_verdict as V  # noqa: E402  (beside this script)
from round2_text import report_lines  # noqa: E402

SWEEP = "configs/sweeps/replication2.py"
STORE = os.path.join(HERE, "round2")
PAIRS = ("2L_small", "2L_large", "4L_small", "4L_large")


def load_design(corpus: str = "runs/corpus/gcide") -> V.Design:
    """The sweep's planned runs (no corpus needed: its path is only written into the configs)."""
    from jaxsparse.pruning import Schedule
    from jaxsparse.sweep.check import load_config
    from jaxsparse.sweep.spec import load_module, load_sweep
    runs = load_sweep(f"{os.path.join(REPO, SWEEP)}:corpus={corpus}")
    sweep = load_module(os.path.join(REPO, SWEEP))
    names, tags, plans = {}, {}, {}
    for run in runs:
        t = run.tags
        if "pair" in t:
            names[(t["pair"], t["kind"], t["variant"], int(run.overrides.get("seed", 0)))] = run.name
        tags[run.name] = t
        c = load_config(run)
        p = c.pruning
        plans[run.name] = (Schedule(p.schedule, float(p.final_sparsity), float(p.start), float(p.end),
                                    int(p.interval)), int(c.train.steps))

    def trajectory(name: str, n_total: float, n_prunable: float) -> np.ndarray:
        schedule, steps = plans[name]
        return n_total - n_prunable * (1.0 - schedule.density_at(np.arange(steps), steps))

    return V.Design(names, tags, trajectory, tuple(sweep.SEEDS), tuple(sweep.LR_FACTORS))


def load_rows(store: str) -> dict[str, dict[str, str]]:
    path = os.path.join(store, "all_runs.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def check_trajectories(rows: dict, design: V.Design) -> int:
    """Every finished run's trajectory must average to the trainer's N̄ (CSV n_avg); returns how many
    were checked. ValueError naming the first that does not."""
    for name, r in rows.items():
        traj = design.trajectory(name, float(r["n_total"]), float(r["n_prunable"]))
        if abs(float(np.mean(traj)) - float(r["n_avg"])) > 1e-6 * float(r["n_avg"]):
            raise ValueError(f"{name}: the schedule's N(t) averages {np.mean(traj):.2f}, the trainer's n_avg is "
                             f"{r['n_avg']}; the design and the store disagree")
    return len(rows)


def analyse(store: str, design: V.Design, starts: np.ndarray | None = None,
            late_starts: np.ndarray | None = None) -> dict[str, Any]:
    """Every number of the report, JSON-ready; writes STORE/trajectories.json (the finished runs' N(t),
    read by `scaling compare --late_weighted`). starts, late_starts: the starts of the size kinds' fits
    and of the late-weighted law's (default the 4,500-point grid, as `scaling compare` uses)."""
    from jaxsparse.scaling import load_runs
    from jaxsparse.scaling.lateweight import write_trajectories
    rows = {n: r for n, r in load_rows(store).items() if n in design.tags}   # the sweep's runs only
    inside = os.path.abspath(store).startswith(REPO + os.sep)
    out: dict[str, Any] = {"store": os.path.relpath(store, REPO) if inside else os.path.abspath(store),
                           "finished": len(rows),
                           "planned": len(design.tags), "checked_trajectories": check_trajectories(rows, design)}
    out["regimes"] = [{**V.pair_gaps(rows, design, p), "regime": V.regime(design, rows, p)} for p in PAIRS]
    out["lr"] = [V.lr_check(rows, design, p) for p in PAIRS]
    out["repetition"] = V.repetition(rows, design)
    runs = load_runs([os.path.join(store, "all_runs.csv")]) if rows else None
    trajectories = write_trajectories(os.path.join(store, "trajectories.json"), {
        name: design.trajectory(name, float(r["n_total"]), float(r["n_prunable"])) for name, r in rows.items()})
    out["depths"] = [V.depth_fits(runs, design, layers, trajectories, starts, late_starts) if runs else
                     {"layers": layers, "runs": 0,
                      "planned": sum(int(t["fit"]) and t["layers"] == layers for t in design.tags.values())}
                     for layers in (2, 4)]
    return out


def write_plot(result: dict[str, Any], path: str) -> str:
    """gaps.png: each regime's gaps (sparse - partner at equal N̄, sparse - dense at the final size),
    mean ± SE over the finished seeds; pending regimes marked."""
    from jaxsparse.sweep.figures import _pyplot
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.2), layout="constrained")
    x = np.arange(len(result["regimes"]))
    for off, key, label, colour in ((-0.1, "partner", "sparse - dense partner (equal N̄)", "C3"),
                                    (0.1, "final", "sparse - dense at its final size", "C0")):
        pts = [(i, g[key]) for i, g in enumerate(result["regimes"]) if key in g]
        if pts:
            ax.errorbar([i + off for i, _ in pts], [s["mean"] for _, s in pts],
                        yerr=[s["se"] or 0.0 for _, s in pts], fmt="o", color=colour, capsize=4, label=label)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlim(-0.5, len(x) - 0.5)
    ax.set_xticks(x, [g["pair"] + ("" if g["complete"] else f"\n(pending {g['runs']}/{g['planned']})")
                      for g in result["regimes"]])
    ax.set_ylabel("eval loss gap (nats/token), mean ± SE")
    ax.set_title("Round 2: sparsity ≈ 0.79, 100 tokens per N̄ parameter, GCIDE")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(store: str, design: V.Design | None = None, **starts: np.ndarray | None) -> list[str]:
    """Analyse the store (`starts`: analyse's) and write report.json, report.md and gaps.png into it;
    returns the paths."""
    result = analyse(store, design or load_design(), **starts)
    paths = [os.path.join(store, n) for n in ("report.json", "report.md", "gaps.png")]
    with open(paths[0] + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=float)
    os.replace(paths[0] + ".tmp", paths[0])
    with open(paths[1] + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(report_lines(result)) + "\n")
    os.replace(paths[1] + ".tmp", paths[1])
    write_plot(result, paths[2])
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="results/replication/round2_report.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=STORE, help="the round-2 store (all_runs.csv; default: round2/ here)")
    args = ap.parse_args(argv)
    for path in write(args.store):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
