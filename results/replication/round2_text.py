"""report.md of round 2 from round2_report.analyse's result: the verdict text and the tables.

The verdict reaches no further than the runs: each regime is named by its depth, widths, sparsity,
N̄, D and epochs, and gets "holds"/"fails" only with all its planned runs finished (else "pending, k
of n runs"); "holds" means the 95% t-interval of the gap to the equal-N̄ dense partner (3 seeds, 2
degrees of freedom) contains 0.
"""
from __future__ import annotations

from typing import Any


def _pm(stat: dict[str, Any] | None, digits: int = 4) -> str:
    if not stat:
        return "-"
    se = "-" if stat["se"] is None else f"{stat['se']:.{digits}f}"
    return f"{stat['mean']:+.{digits}f} ± {se}"


def _ci(stat: dict[str, Any]) -> str:
    return "-" if not stat.get("ci95") else f"[{stat['ci95'][0]:+.4f}, {stat['ci95'][1]:+.4f}]"


def regime_name(g: dict[str, Any]) -> str:
    r = g["regime"]
    text = (f"{g['pair']} ({r['layers']} layers, d{r['sparse_width']} pruned to sparsity {r['sparsity']:.3f} "
            f"against dense d{r['partner_width']}")
    if "n_avg" in r:
        text += (f": N̄ = {r['n_avg'] / 1e3:.1f}k parameters, final size {r['n_final'] / 1e3:.1f}k "
                 f"(dense d{r['final_width']} beside it), D = {r['d'] / 1e6:.2f}M tokens = "
                 f"{r['budget']:g} per N̄ parameter, {r['epochs']:g} epochs of GCIDE")
    return text + ")"


def _loo_of(result: dict[str, Any], pair: str) -> dict[str, Any] | None:
    for depth in result["depths"]:
        for g in depth.get("paired", {}).get("groups", []):
            if g["group"] == f"{pair}/matched":
                return g
    return None


def verdict_line(g: dict[str, Any], result: dict[str, Any]) -> str:
    if not g["complete"]:
        return f"- **{g['pair']}**: pending, {g['runs']} of {g['planned']} runs."
    p, lo = g["partner"], g["partner"]["ci95"]
    if lo[0] <= 0.0 <= lo[1]:
        word = "N̄ holds (the interval contains 0)"
    elif lo[0] > 0:
        word = "N̄ fails: the sparse run is worse than its equal-N̄ dense partner"
    else:
        word = "the sparse run beats its equal-N̄ dense partner"
    line = (f"- **{regime_name(g)}**: {word}. Sparse - partner {_pm(p)} nats (SE, {p['n']} seeds; 95% "
            f"interval {_ci(p)}); sparse - dense at its final size {_pm(g['final'])}; position "
            f"{_pm(g['position'], 2)} (0 = N̄, 1 = final size).")
    loo = _loo_of(result, g["pair"])
    if loo:
        line += (f" Leave-one-out MAE of its {loo['n']} sparse runs: N̄ {loo['loo_mae']['avg']:.4f}, final "
                 f"size {loo['loo_mae']['final']:.4f} (paired {_pm(loo['paired'])}).")
    return line


def depth_verdict(depth: dict[str, Any]) -> str:
    """One line per depth: the law's leave-one-out with N̄ and the final size, and the late-weighted law."""
    if "loo_mae" not in depth:
        return f"- **{depth['layers']} layers, the law**: pending, {depth['runs']} of {depth['planned']} runs."
    lw, p = depth["late_weighted"], depth["paired"]["paired"]
    better = "N̄" if p["mean"] < 0 else "the final size"
    return (f"- **{depth['layers']} layers, the law** (its {p['n']} fit runs: dense ladder, partners, final-size "
            f"and sparse runs): leave-one-out MAE N̄ {depth['loo_mae']['avg']:.4f}, final size "
            f"{depth['loo_mae']['final']:.4f} nats; paired difference {_pm(p)} ({better} predicts better on "
            f"average). Late-weighted N_k, nested, held-out sizes: MAE {lw['mae']:.4f} against N̄ "
            f"{lw['mae_fixed']['0.0']:.4f} and final size {lw['mae_fixed']['inf']:.4f} (same folds; chosen k: "
            f"{', '.join(str(k) for k in lw['chosen'].values())}).")


def _gap_table(result: dict[str, Any]) -> list[str]:
    lines = ["| regime | runs | seeds | sparse - partner (equal N̄) ± SE | 95% interval | "
             "sparse - dense at final size ± SE | position ± SE |", "|---|---|---|---|---|---|---|"]
    for g in result["regimes"]:
        status = "" if g["complete"] else " (partial)"
        lines.append(f"| {g['pair']}{status} | {g['runs']} of {g['planned']} | {len(g.get('seeds', []))} | "
                     f"{_pm(g.get('partner'))} | {_ci(g['partner']) if 'partner' in g else '-'} | "
                     f"{_pm(g.get('final'))} | {_pm(g.get('position'), 2)} |")
    return lines


def command(result: dict[str, Any], layers: int) -> str:
    """The `scaling compare` command that prints a depth's fit numbers (leave-one-out and late-weighted)."""
    return (f"python -m jaxsparse.scaling compare --loo --kinds avg final --where fit=1 --where layers={layers} "
            f"--by pair,kind --late_weighted {result['store']}/trajectories.json --configuration "
            f"layers,width,sparsity {result['store']}/all_runs.csv")


def _depth_lines(result: dict[str, Any], depth: dict[str, Any]) -> list[str]:
    head = [f"### {depth['layers']} layers", ""]
    if "loo_mae" not in depth:
        return head + [f"Pending, {depth['runs']} of {depth['planned']} runs of the fit.", ""]
    p = depth["paired"]
    lines = head + [f"`{command(result, depth['layers'])}`", "",
                    f"Leave-one-out MAE over the {p['paired']['n']} fit runs: N̄ {depth['loo_mae']['avg']:.4f}, "
                    f"final size {depth['loo_mae']['final']:.4f} nats; paired |error N̄| - |error final| "
                    f"{_pm(p['paired'])} (SE over held-out runs; folds share training runs, so it is a guide).",
                    "", "| group (pair/kind) | runs | LOO MAE N̄ | LOO MAE final | paired ± SE |",
                    "|---|---|---|---|---|"]
    lines += [f"| {g['group']} | {g['n']} | {g['loo_mae']['avg']:.4f} | {g['loo_mae']['final']:.4f} | "
              f"{_pm(g['paired'])} |" for g in p["groups"]]
    return lines + [""] + _late_lines(depth["late_weighted"]) + [""]


def _late_lines(lw: dict[str, Any]) -> list[str]:
    fixed = lw["mae_fixed"]
    best = min(fixed["0.0"], fixed["inf"])
    verdict = "beats" if lw["mae"] < best else "does not beat"
    chosen = ", ".join(f"{g}: {k}" for g, k in lw["chosen"].items())
    return [f"Late-weighted N_k, nested leave-one-configuration-out ({lw['runs']} runs; every seed and D "
            f"of one size held out together; k from {lw['ks']} chosen inside each fold): MAE "
            f"{lw['mae']:.4f} against N̄ {fixed['0.0']:.4f} and the final size {fixed['inf']:.4f} on the "
            f"same folds; it {verdict} the better of the two. Paired |error N_k| - |error N̄| "
            f"{_pm(lw['paired_vs_nbar'])}, - |error final| {_pm(lw['paired_vs_final'])}. "
            f"Chosen k per held-out configuration: {chosen}."]


def _lr_lines(result: dict[str, Any]) -> list[str]:
    lines = ["| pair | dense x0.5 / x1 / x2 | sparse x0.5 / x1 / x2 | best (dense, sparse) | gap at x1 | "
             "gap at each side's best |", "|---|---|---|---|---|---|"]
    for x in result["lr"]:
        if "best" not in x:
            lines.append(f"| {x['pair']} | pending, {x['runs']} of {x['planned']} runs | | | | |")
            continue
        cells = {s: " / ".join(f"{x['loss'][f'{s}@{f:g}']:.4f}" for f in (0.5, 1.0, 2.0))
                 for s in ("dense", "matched")}
        lines.append(f"| {x['pair']} | {cells['dense']} | {cells['matched']} | x{x['best']['dense']:g}, "
                     f"x{x['best']['matched']:g} | {x['gap_at_1x']:+.4f} | {x['gap_at_best']:+.4f} |")
    return lines


def _repetition_lines(rep: dict[str, Any]) -> list[str]:
    if "gap_4ep" not in rep:
        return [f"Pending, {rep['runs']} of {rep['planned']} runs."]
    return [f"{rep['pair']}, seed 0: sparse - partner {rep['gap_1ep']:+.4f} at {rep['epochs']['base']:g} epochs "
            f"and {rep['gap_4ep']:+.4f} at {rep['epochs']['4ep']:g} epochs (one seed each: no standard error)."]


def report_lines(result: dict[str, Any]) -> list[str]:
    done = [g for g in result["regimes"] if g["complete"]]
    lines = ["# Replication round 2: the verdict by regime", "",
             f"Generated by `python3 results/replication/round2_report.py` from `{result['store']}/all_runs.csv`: "
             f"{result['finished']} of {result['planned']} runs of `configs/sweeps/replication2.py` finished. "
             "Eval loss in nats/token; ± is the standard error over seeds (s/√n); intervals are 95% t-intervals.",
             "", "## Verdict", "",
             "Every regime is at final sparsity ≈ 0.79 with a 25%/75% geometric schedule, 100 tokens per N̄ "
             "parameter, less than one epoch of GCIDE and learning rate 0.01; nothing is claimed beyond these "
             "runs." + ("" if done else " No regime has all its runs yet: no verdict."), "",
             *[verdict_line(g, result) for g in result["regimes"]],
             *[depth_verdict(d) for d in result["depths"]], "",
             "## Gaps over seeds", "", *_gap_table(result), "", "![gaps](gaps.png)", "",
             "## The law per depth: N̄ against the final size (leave-one-out)", ""]
    for depth in result["depths"]:
        lines += _depth_lines(result, depth)
    lines += ["## Learning-rate check (seed 0; both sides at 0.5x, 1x, 2x the sweep's rate)", "",
              "One seed per rate, so no standard error here; the seeds' standard error of the gap at 1x is in "
              "the gaps table above.", "", *_lr_lines(result), "",
              "## Repetition check", "", *_repetition_lines(result["repetition"])]
    return lines
