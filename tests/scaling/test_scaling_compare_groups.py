"""`scaling compare --loo --where ... --by ...`: rows selected by CSV column, and the leave-one-out errors
of two size kinds paired run by run (mean ± standard error), overall and per group; bad columns exit 2
before any fit."""
import csv
import json

import numpy as np
import pytest

from jaxsparse.scaling.cli import main
from jaxsparse.scaling.synthetic import sparse_dense_summaries

LAW = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    """30 runs from the N̄ law (3 sizes x 5 sparsities x 2 budgets) with columns size, sparsity and fit (0 at
    sparsity 0.2)."""
    path = tmp_path_factory.mktemp("groups") / "runs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n_avg", "n_final", "d", "loss", "size", "sparsity", "fit"])
        for s in sparse_dense_summaries(LAW, noise=0.002, seed=3):
            w.writerow([s["n_avg"], s["n_final"], s["tokens"], s["final_eval_loss"], f"{s['n_total']:.0f}",
                        s["final_sparsity"], int(s["final_sparsity"] != 0.2)])
    return path


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_where_and_by_pair_the_two_kinds_errors_per_run(capsys, runs_csv):
    rc, out, err = run(capsys, "compare", runs_csv, "--loo", "--kinds", "avg", "final", "--where", "size=1.62e8",
                       "--where", "sparsity!=x", "--by", "sparsity", "--json")
    assert rc == 2 and "no column 'sparsity!'" in err          # COLUMN=VALUE splits at the first '='
    rc, out, err = run(capsys, "compare", runs_csv, "--loo", "--kinds", "avg", "final", "--where",
                       "size=1", "--by", "sparsity", "--json")
    assert rc == 2 and "no run of 30 matches" in err
    rc, out, err = run(capsys, "compare", runs_csv, "--loo", "--kinds", "avg", "final", "--where", "fit=1",
                       "--where", "fit=1.0", "--by", "sparsity", "--json")
    assert rc == 0, err
    result = json.loads(out)
    errs = {r["kind"]: np.abs(r["loo_errors"]) for r in result["rows"]}
    assert all(r["n_points"] == 24 for r in result["rows"])           # sparsity 0.2 left out
    diff = errs["avg"] - errs["final"]
    paired = result["paired"]["paired"]
    assert paired["mean"] == pytest.approx(diff.mean()) and paired["n"] == 24
    assert paired["se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(24))
    assert paired["mean"] < 0                                          # the runs follow the N̄ law
    groups = {g["group"]: g for g in result["paired"]["groups"]}
    assert list(groups) == ["0.0", "0.4", "0.6", "0.8"] and groups["0.8"]["n"] == 6
    at = [i for i in range(24) if i % 8 in (6, 7)]                     # sparsity 0.8: 2 budgets per size
    assert groups["0.8"]["loo_mae"]["avg"] == pytest.approx(errs["avg"][at].mean())
    assert groups["0.8"]["paired"]["mean"] < groups["0.4"]["paired"]["mean"] < 0   # worst far from dense


def test_by_needs_loo_and_an_existing_column(capsys, runs_csv):
    rc, _, err = run(capsys, "compare", runs_csv, "--by", "size")
    assert rc == 2 and "give --loo with it" in err
    rc, _, err = run(capsys, "compare", runs_csv, "--loo", "--by", "pair")
    assert rc == 2 and "--by pair: no column 'pair'" in err
    rc, _, err = run(capsys, "compare", runs_csv, "--where", "pair")
    assert rc == 2 and "is not COLUMN=VALUE" in err


def test_late_weighted_needs_configuration_columns(capsys, runs_csv, tmp_path):
    rc, _, err = run(capsys, "compare", runs_csv, "--late_weighted", tmp_path / "t.json")
    assert rc == 2 and "give --configuration COLUMNS" in err
