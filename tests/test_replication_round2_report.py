"""Round 2's verdict (results/replication/round2_report.py): on a store of every planned run with losses
drawn from a known law, the report's numbers are the ones by hand and the ones `scaling compare`
prints; regimes with missing runs say "pending, k of n runs"; N(t) from the pruning schedule averages
to the trainer's N̄ on the committed runs."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxsparse.scaling.lateweight import late_weighted_size
from jaxsparse.scaling.law import predict_loss
from jaxsparse.sweep.spec import load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(REPO, "results", "replication")
report = load_module(os.path.join(HERE, "round2_report.py"))
V, text = report.V, sys.modules["round2_text"]
LAW = {"E": 1.0, "A": 60.0, "B": 300.0, "alpha": 0.4, "beta": 0.3}
LR_OFFSET = {("dense", "lrx0.5"): 0.02, ("dense", "lrx2"): -0.01, ("matched", "lrx0.5"): 0.01,
             ("matched", "lrx2"): 0.03}


@pytest.fixture(scope="module")
def design():
    return report.load_design("/nowhere/gcide")


def synthetic_rows(design, k: float = 0.0, noise: float = 0.002) -> list[dict]:
    """A row per planned run, as all_runs.csv holds it; loss = LAW at N_k and D, times log-normal noise."""
    sweep = load_module(os.path.join(REPO, report.SWEEP))
    rng, rows = np.random.default_rng(0), []
    for name, t in design.tags.items():
        c = sweep.R1.counts(sweep.Shape(t["width"], t["layers"]))
        traj = design.trajectory(name, c.total, c.prunable)
        d = traj.size * sweep.R1.BATCH * sweep.R1.SEQ
        loss = float(predict_loss(LAW, late_weighted_size(traj, k), d)) * math.exp(noise * rng.standard_normal())
        loss += LR_OFFSET.get((t["kind"], t.get("variant")), 0.0) - 0.1 * (t.get("variant") == "4ep")
        rows.append({"name": name, "n": traj.mean(), "n_avg": traj.mean(), "n_final": traj[-1],
                     "n_total": c.total, "n_prunable": c.prunable, "d": d, "loss": loss, **t})
    return rows


def write_store(folder, rows) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "all_runs.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return str(folder)


@pytest.fixture(scope="module")
def full(design, tmp_path_factory):
    store = write_store(tmp_path_factory.mktemp("store"), synthetic_rows(design))
    report.write(store, design)   # every fit from the full grid, as `scaling compare`
    with open(os.path.join(store, "report.json"), encoding="utf-8") as f:
        return store, json.load(f)


def test_gaps_are_mean_and_standard_error_over_the_three_seeds(full, design):
    store, result = full
    rows = report.load_rows(store)
    g = result["regimes"][0]
    assert g["pair"] == "2L_small" and g["complete"] and g["seeds"] == [0, 1, 2]
    gaps = [float(rows[design.names[("2L_small", "matched", "base", s)]]["loss"])
            - float(rows[design.names[("2L_small", "dense", "base", s)]]["loss"]) for s in (0, 1, 2)]
    mean = sum(gaps) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in gaps) / 2 / 3)
    assert g["partner"]["mean"] == pytest.approx(mean) and g["partner"]["se"] == pytest.approx(se)
    assert g["partner"]["ci95"][1] - mean == pytest.approx(4.302653 * se, rel=1e-6)   # t(0.975, 2 dof)
    md = open(os.path.join(store, "report.md"), encoding="utf-8").read()
    assert f"{mean:+.4f} ± {se:.4f}" in md
    assert md.count("N̄ holds (the interval contains 0)") == 4   # the runs follow the N̄ law
    assert "pending" not in md.split("## Learning-rate")[0]
    assert os.path.getsize(os.path.join(store, "gaps.png")) > 10_000


def test_report_numbers_equal_what_scaling_compare_prints(full):
    """The 2-layer fit's numbers in report.md are the CLI's, run as the report says."""
    store, result = full
    depth = result["depths"][0]
    cmd = text.command(result, 2).split()
    out = subprocess.run([sys.executable, "-m", *cmd[2:], "--json"], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    assert {r["kind"]: f"{r['loo_mae']:.4f}" for r in cli["rows"]} == \
        {k: f"{v:.4f}" for k, v in depth["loo_mae"].items()}
    pair = cli["paired"]
    assert f"{pair['paired']['mean']:+.4f} ± {pair['paired']['se']:.4f}" == text._pm(depth["paired"]["paired"])
    assert [(g["group"], text._pm(g["paired"])) for g in pair["groups"]] == \
        [(g["group"], text._pm(g["paired"])) for g in depth["paired"]["groups"]]
    late, mine = cli["late_weighted"], depth["late_weighted"]
    assert (f"{late['mae']:.4f}", late["chosen"]) == (f"{mine['mae']:.4f}", mine["chosen"])
    assert {k: f"{v:.4f}" for k, v in late["mae_fixed"].items()} == \
        {k: f"{v:.4f}" for k, v in mine["mae_fixed"].items()}
    assert text._pm(late["paired_vs_nbar"]) == text._pm(mine["paired_vs_nbar"])
    md = open(os.path.join(store, "report.md"), encoding="utf-8").read()
    assert " ".join(cmd) in md and f"N̄ {depth['loo_mae']['avg']:.4f}" in md


def test_late_weighted_law_is_tested_nested_and_lr_and_repetition_are_read(full):
    _, result = full
    for depth in result["depths"]:
        lw = depth["late_weighted"]
        assert lw["runs"] == 21 and len(lw["chosen"]) == 7
        assert lw["mae_fixed"]["0.0"] < lw["mae_fixed"]["inf"]        # the runs follow the N̄ law
    lr = result["lr"][0]
    assert lr["best"] == {"dense": 2.0, "matched": 1.0}
    assert lr["gap_at_best"] == pytest.approx(lr["loss"]["matched@1"] - lr["loss"]["dense@2"])
    assert lr["gap_at_1x"] == pytest.approx(lr["loss"]["matched@1"] - lr["loss"]["dense@1"])
    assert result["repetition"]["gap_4ep"] == pytest.approx(result["repetition"]["gap_1ep"], abs=0.02)


def test_missing_seed_makes_its_regime_pending_and_final_size_law_fails_nbar(design, tmp_path):
    rows = [r for r in synthetic_rows(design, k=math.inf)
            if r["name"] != design.names[("4L_large", "final_size", "base", 2)]]
    by_name = {r["name"]: {k: str(v) for k, v in r.items()} for r in rows}
    g = V.pair_gaps(by_name, design, "4L_large")
    assert not g["complete"] and g["seeds"] == [0, 1]
    assert text.verdict_line(g, {"depths": []}) == "- **4L_large**: pending, 8 of 9 runs."
    fails = {**V.pair_gaps(by_name, design, "2L_small"), "regime": V.regime(design, by_name, "2L_small")}
    assert "N̄ fails: the sparse run is worse" in text.verdict_line(fails, {"depths": []})
    store = write_store(tmp_path, rows)
    from jaxsparse.scaling import load_runs
    depth = V.depth_fits(load_runs([os.path.join(store, "all_runs.csv")]), design, 4, str(tmp_path / "no.json"))
    assert depth["runs"] == 20 and "loo_mae" not in depth       # no fit on an incomplete depth
    assert "Pending, 20 of 21 runs of the fit." in text._depth_lines({"store": store}, depth)


def test_schedule_trajectories_average_to_the_trainers_nbar_on_the_committed_runs(design):
    rows = report.load_rows(report.STORE)
    assert report.check_trajectories(rows, design) == len(rows) >= 5
    matched = rows["matched_2L_small"]
    traj = design.trajectory("matched_2L_small", float(matched["n_total"]), float(matched["n_prunable"]))
    assert traj[0] == float(matched["n_total"]) and traj[-1] == pytest.approx(float(matched["n_final"]), abs=1)
