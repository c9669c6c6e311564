"""The replication's results (configs/sweeps/replication.py): one command from the runs to the files.

    python3 results/replication/report.py --root RUNS_ROOT --out results/replication

writes, from whatever runs of the sweep (--sweep, default all of it) have finished under RUNS_ROOT:
  results.csv   the runs that enter the law's fit (tag fit=1, the sweep's `part=fit`), as `--collect`
                writes them;
  report.md, report.json, plots/   the sweep report of those runs (`--report`);
  plots/loss_vs_nbar.png   the loss against N̄ of the finished runs of the law's fit (the paper's recipe):
                dense and sparse, matched pairs joined;
  all_runs.csv  every finished run of the sweep (investigation, schedules, learning-rate check);
  replication.md  matched pairs over seeds, the investigation, the schedule ranking, the
                learning-rate check, and the runs still missing.

Tables read the CSV rows' tags: kind (dense, sparse, matched, lr_check, schedule), pair, variant,
budget (tokens per initial parameter), width, layers, lr, start, end, and the seed column.
Loss differences are eval losses in nats/token; "spread" is half the range over seeds.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

from jaxsparse import scaling
from jaxsparse.errors import ArgumentParser, as_bad_input, entry_point
from jaxsparse.sweep import figures
from jaxsparse.sweep.collect import collect, write_csv
from jaxsparse.sweep.report import write_report
from jaxsparse.sweep.spec import SweepError, load_sweep

SWEEP = "configs/sweeps/replication.py"


def _mean_spread(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float((max(values) - min(values)) / 2)


def dense_law(rows: list[dict[str, Any]]) -> scaling.ScalingLawFit | None:
    """The law fitted on the dense runs of the fit (None when they cannot pin its 5 parameters:
    with one budget in tokens per parameter, D is proportional to N and A/N^α cannot be told from
    B/D^β, so the fit degenerates, e.g. E -> 0, and its predictions are not a law)."""
    dense = [r for r in rows if r.get("kind") == "dense" and float(r["final_sparsity"]) < 1e-6]
    budgets = [float(r["d"]) / float(r["n"]) for r in dense]  # tokens per parameter
    if not budgets or max(budgets) < 1.1 * min(budgets):  # steps round D: one budget is within 10%
        return None
    try:
        return scaling.fit(np.array([float(r["n"]) for r in dense]), np.array([float(r["d"]) for r in dense]),
                           np.array([float(r["loss"]) for r in dense]), n_kind="dense")
    except ValueError:  # too few runs, or too few distinct sizes or token counts, for the law
        return None


def _measured_position(r: dict[str, Any], partner: dict[str, Any], finals: dict) -> float | None:
    """delta / (loss of the dense run of the sparse run's final size - the partner's loss), that run
    (kind final_size, same pair and seed) trained on the same D; None without one (or another D)."""
    final = finals.get((str(r.get("pair")), int(r["seed"])))
    if final is None or (r.get("variant") or "base") != "base" or float(final["d"]) != float(r["d"]):
        return None
    gap = float(final["loss"]) - float(partner["loss"])
    return (float(r["loss"]) - float(partner["loss"])) / gap if gap > 0 else None


def pair_groups(rows: list[dict[str, Any]], law: scaling.ScalingLawFit | None) -> list[dict[str, Any]]:
    """Matched pairs grouped by (pair, variant, budget) over seeds. Per group: delta (sparse - dense
    loss) mean, spread and standard error, and `position` = delta / (law at the sparse run's final
    size - law at the partner's size), both at the pair's D: 0 = the sparse run lands on its N̄
    partner, 1 = on a dense model of its final size (None without a law); `measured`: the same with
    the final size's dense run (`_measured_position`), mean over seeds (None without those runs)."""
    by_name = {r["name"]: r for r in rows}
    finals = {(str(r.get("pair")), int(r["seed"])): r for r in rows if r.get("kind") == "final_size"}
    groups: dict[tuple, list] = {}
    for r in rows:
        partner = by_name.get(str(r.get("match") or ""))
        if r.get("kind") != "matched" or partner is None:
            continue
        delta = float(r["loss"]) - float(partner["loss"])
        pos = None
        if law is not None:
            d = np.array([float(r["d"])])
            gap = float(law.predict(np.array([float(r["n_final"])]), d)[0]
                        - law.predict(np.array([float(partner["n"])]), d)[0])
            pos = delta / gap if gap > 0 else None
        key = (str(r.get("pair")), str(r.get("variant") or "base"), float(r["budget"]))
        groups.setdefault(key, []).append({"seed": int(r["seed"]), "delta": delta, "position": pos,
                                           "sparsity": float(r["final_sparsity"]),
                                           "measured": _measured_position(r, partner, finals)})
    out = []
    for (pair, variant, budget), items in groups.items():
        mean, spread = _mean_spread([x["delta"] for x in items])
        positions = [x["position"] for x in items if x["position"] is not None]
        measured = [x["measured"] for x in items if x["measured"] is not None]
        se = float(np.std([x["delta"] for x in items], ddof=1) / np.sqrt(len(items))) if len(items) > 1 else None
        out.append({"pair": pair, "variant": variant, "budget": budget, "seeds": len(items),
                    "sparsity": items[0]["sparsity"], "delta": mean, "spread": spread, "se": se,
                    "position": float(np.mean(positions)) if positions else None,
                    "measured": float(np.mean(measured)) if measured else None})
    return sorted(out, key=lambda g: (g["variant"] != "base", g["pair"], g["budget"], g["variant"]))


def schedule_ranking(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The schedule runs (kind schedule) by eval loss, best first, each with its rank."""
    runs = sorted((r for r in rows if r.get("kind") == "schedule"), key=lambda r: float(r["loss"]))
    return [{"rank": i + 1, "start": float(r["start"]), "end": float(r["end"]), "n_avg": float(r["n"]),
             "loss": float(r["loss"])} for i, r in enumerate(runs)]


def lr_table(rows: list[dict[str, Any]]) -> dict[int, dict[float, float]]:
    """{width: {learning rate: loss}} of the 2-layer dense runs at the learning-rate check's budget."""
    check = [r for r in rows if r.get("kind") == "lr_check"]
    budgets = {float(r["budget"]) for r in check}
    table: dict[int, dict[float, float]] = {}
    for r in rows:
        if r.get("kind") in ("dense", "lr_check") and float(r["budget"]) in budgets \
                and int(r["layers"]) == 2 and (r.get("variant") or "base") == "base" and int(r["seed"]) == 0:
            table.setdefault(int(r["width"]), {})[float(r["lr"])] = float(r["loss"])
    return dict(sorted(table.items()))


def pairs_lines(groups: list[dict[str, Any]]) -> list[str]:
    if not groups:
        return ["No matched pair has finished with its dense partner yet."]
    extra = any(g["measured"] is not None for g in groups)  # a design with final-size dense runs
    lines = ["| pair | variant | budget (tok/param) | final sparsity | seeds | sparse - dense (mean) | "
             "seed spread | position (0 = N̄, 1 = final size) |"
             + (" standard error | measured position (final size's dense run) |" if extra else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if extra else "")]
    for g in groups:
        pos = "-" if g["position"] is None else f"{g['position']:.2f}"
        spread = "- (one seed)" if g["seeds"] == 1 else f"{g['spread']:.4f}"
        line = (f"| {g['pair']} | {g['variant']} | {g['budget']:g} | {g['sparsity']:.3f} | "
                f"{g['seeds']} | {g['delta']:+.4f} | {spread} | {pos} |")
        if extra:
            line += (" - |" if g["se"] is None else f" {g['se']:.4f} |") + \
                (" - |" if g["measured"] is None else f" {g['measured']:.2f} |")
        lines.append(line)
    return lines


def _schedule_lines(ranking: list[dict[str, Any]]) -> list[str]:
    if not ranking:
        return ["No schedule run has finished yet."]
    lines = ["| rank | start | end | N̄ | eval loss |", "|---|---|---|---|---|"]
    lines += [f"| {x['rank']} | {x['start']:g} | {x['end']:g} | {x['n_avg']:,.0f} | {x['loss']:.4f} |"
              for x in ranking]
    paper = [x for x in ranking if (x["start"], x["end"]) == (0.25, 0.75)]
    if paper:
        x = paper[0]
        lines += ["", f"25/75 ranks {x['rank']} of {len(ranking)} finished, "
                      f"{x['loss'] - ranking[0]['loss']:+.4f} nats from the best."]
    return lines


def _lr_lines(table: dict[int, dict[float, float]]) -> list[str]:
    if not table:
        return ["No learning-rate check run has finished yet."]
    rates = sorted({lr for row in table.values() for lr in row})
    lines = ["| width | " + " | ".join(f"lr {lr:.2g}" for lr in rates) + " | best |",
             "|---|" + "---|" * (len(rates) + 1)]
    for width, row in table.items():
        cells = [f"{row[lr]:.4f}" if lr in row else "-" for lr in rates]
        lines.append(f"| d{width} | " + " | ".join(cells) + f" | {min(row, key=row.get):.2g} |")
    return lines


def write_tables(rows: list[dict[str, Any]], fit_rows: list[dict[str, Any]], missing: list[str],
                 total: int, path: str) -> str:
    """replication.md: pairs over seeds, the schedule ranking, the learning-rate check, what is missing."""
    groups = pair_groups(rows, dense_law(fit_rows))
    lines = ["# Replication: matched pairs, investigation, schedules, learning rate", "",
             f"{len(rows)} of {total} runs finished. Missing ({len(missing)}): "
             + (", ".join(missing) if missing else "none") + ".", "",
             "## Matched pairs over seeds (the base pairs, then the investigation's variants)", "",
             "Same N̄ and D (so the same training FLOPs). Position: where the sparse run's loss lies between "
             "its dense partner (0) and the dense-only law at its final size (1), at its D.", "",
             *pairs_lines(groups), "", "## The schedule grid (paper, section 3)", "",
             *_schedule_lines(schedule_ranking(rows)), "", "## Learning-rate check (dense ladder)", "",
             *_lr_lines(lr_table(rows)), ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


def write_results(sweep: str, root: str, out: str, report: bool = True) -> list[str]:
    """Collect the finished runs of `sweep` (SWEEP_FILE[:args]) under `root` into `out`: all_runs.csv,
    replication.md, and (when any fit run finished) results.csv, plus with `report` the sweep report of
    the fit runs. Returns the lines to print. Raises SweepError when nothing finished, ValueError (or
    ArithmeticError) when the law cannot be fitted to the finished runs."""
    runs = load_sweep(sweep)
    fit_runs = [r for r in runs if int(r.tags.get("fit", 1))]
    rows, missing = collect(runs, root)
    if not rows:
        raise SweepError(f"no run of {sweep} has finished under {root}")
    fit_rows = [r for r in rows if int(r.get("fit", 1))]
    os.makedirs(out, exist_ok=True)
    write_csv(rows, os.path.join(out, "all_runs.csv"))
    tables = write_tables(rows, fit_rows, [r.name for r in missing], len(runs),
                          os.path.join(out, "replication.md"))
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    figure = figures.loss_against_nbar(fit_rows, os.path.join(out, "plots", "loss_vs_nbar.png"))
    said = [f"{len(rows)} of {len(runs)} runs finished; wrote {tables} and {figure}"]
    if fit_rows:
        said.append(f"wrote {write_csv(fit_rows, os.path.join(out, 'results.csv'))} ({len(fit_rows)} runs)")
        if report:
            said.append(f"wrote {write_report(fit_rows, fit_runs, root, out_dir=out)}")
    return said


@entry_point
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="results/replication/report.py", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="the sweep's run root (its --root)")
    ap.add_argument("--out", required=True, help="folder for the CSVs, reports and plots")
    ap.add_argument("--sweep", default=SWEEP, help=f"SWEEP_FILE[:args] (default {SWEEP}: every part)")
    args = ap.parse_args(argv)
    with as_bad_input(ValueError, ArithmeticError):  # a SweepError is a ConfigError
        said = write_results(args.sweep, args.root, args.out)
    for line in said:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
