"""--collect feeds the scaling-law fitter, and the sweep report compares N̄ with the final size.

The runs' summaries are written by the trainer's own `write_summary` from the real plans of the
mini sweep; only the final losses are generated, from a known law in N̄, so the fitter must
recover that law from the CSV and the report must find N̄ better than the final size."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from contextlib import redirect_stdout

import pytest

from jaxsparse.scaling.cli import main as scaling_main
from jaxsparse.sweep.check import load_config, plan_runs
from jaxsparse.sweep.collect import collect, write_csv
from jaxsparse.sweep.report import write_report
from fault_utils import fill, tmpfs
from train_utils import REPO
from jaxsparse.sweep.spec import load_sweep
from jaxsparse.train.loop.report import write_summary

TRUTH = {"E": 1.2, "A": 300.0, "alpha": 0.45, "B": 900.0, "beta": 0.4}


def _law(n: float, d: float) -> float:
    return TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    runs = load_sweep("configs/sweeps/mini.py")
    plans = plan_runs(runs)
    for run in runs[:-1]:  # the last run "has not finished"
        plan = plans[run.name]
        workdir = root / run.workdir
        workdir.mkdir(parents=True)
        loss = _law(plan.n_avg, plan.tokens)
        write_summary(str(workdir), load_config(run), plan, {
            "n_final": plan.n_final, "final_sparsity": 1 - plan.pruning.final_density,
            "final_train_loss": loss + 0.01, "final_eval_loss": loss})
    return runs, root


def test_collect_output_feeds_the_scaling_fit(finished_sweep, tmp_path):
    runs, root = finished_sweep
    rows, missing = collect(runs, str(root))
    assert [r.name for r in missing] == [runs[-1].name] and len(rows) == len(runs) - 1
    path = write_csv(rows, str(tmp_path / "results.csv"))
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header[:10] == ["name", "n", "n_avg", "n_avg_prunable", "n_final", "n_initial",
                           "n_total", "n_prunable", "d", "loss"]
    out = io.StringIO()
    with redirect_stdout(out):
        code = scaling_main(["fit", path, "--json", "--bootstrap", "0", "--no_loo"])
    assert code == 0
    fit = json.loads(out.getvalue())["fit"]
    assert fit["n_kind"] == "avg" and fit["n_points"] == len(rows)
    for key, want in TRUTH.items():
        assert fit[key] == pytest.approx(want, rel=0.02), key
    out = io.StringIO()
    with redirect_stdout(out):  # the same CSV, with the final size as N: a worse fit
        scaling_main(["fit", path, "--n", "final", "--json", "--bootstrap", "0", "--no_loo"])
    assert json.loads(out.getvalue())["fit"]["mae"] > 100 * fit["mae"]


def test_report_compares_nbar_with_final_size_and_writes_figures(finished_sweep):
    runs, root = finished_sweep
    rows, _ = collect(runs, str(root))
    path = write_report(rows, runs, str(root), wall_s=61.0)
    text = open(path).read()
    summary = json.loads((root / "report.json").read_text())
    fits = {f["kind"]: f for f in summary["fits"]}
    assert fits["avg"]["rank"] == 1 and fits["avg"]["loo_mae"] < 1e-3
    assert fits["final"]["loo_mae"] > 10 * fits["avg"]["loo_mae"]
    errors = summary["dense_only"]["errors"]
    assert errors["avg"]["mae"] < 1e-3 < errors["final"]["mae"]
    assert errors["final"]["bias"] > 0 > errors["initial"]["bias"]  # too small / too big a size
    pairs = summary["matched_pairs"]
    assert len(pairs) == sum(r.tags["kind"] == "matched" for r in runs[:-1])
    for pair in pairs:
        assert abs(pair["delta_loss"]) < 2e-3 and pair["n_final_sparse"] < pair["n_dense"]
    assert "N̄ fits better." in text and "1m01s for this invocation" in text
    assert f"{len(rows)} of {len(runs)} runs finished" in text
    for rel in summary["figures"]:
        assert (root / rel).stat().st_size > 10_000 and f"]({rel})" in text
    assert {math.isfinite(f["E"]) for f in summary["fits"]} == {True}


def test_collect_on_a_full_disk_exits_2_and_leaves_no_temporary_file(finished_sweep, tmp_path):
    _, root = finished_sweep
    with tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk)
        proc = subprocess.run([sys.executable, "-m", "jaxsparse.sweep", "configs/sweeps/mini.py", "--collect",
                               str(disk / "results.csv"), "--root", str(root)],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "cannot write the CSV there" in proc.stderr and "No space left on device" in proc.stderr
        assert sorted(os.listdir(disk)) == ["filler"]  # no results.csv.tmp
