"""`python -m jaxsparse.scaling` fit / predict / compare / plan, and bad input."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxsparse.scaling import ScalingLawFit, plan
from jaxsparse.scaling.cli import main
from jaxsparse.scaling.synthetic import noisy_loss, sparse_dense_summaries
from scaling_utils import write_summaries

LAW = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
REPO = Path(__file__).resolve().parents[2]


def write_csv(path: Path, rows, header=("N", "D", "Loss")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def law_csv(tmp_path_factory) -> Path:
    n, d = (v.ravel() for v in np.meshgrid(np.geomspace(5e7, 5e9, 5), np.geomspace(1e9, 1e11, 5)))
    loss = noisy_loss(LAW, n, d, noise=0.003, rng=np.random.default_rng(7))
    return write_csv(tmp_path_factory.mktemp("csv") / "runs.csv", zip(n, d, loss))


@pytest.fixture(scope="module")
def summary_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    summaries = sparse_dense_summaries(LAW, noise=0.002, seed=5)
    del summaries[4]["final_eval_loss"]  # this run only has a train loss
    write_summaries(root, summaries)
    return root


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_fit_csv_json_out_and_plots(capsys, tmp_path, law_csv):
    out_file, plots = tmp_path / "fit.json", tmp_path / "plots"
    rc, out, err = run_cli(capsys, "fit", law_csv, "--json", "--bootstrap", 20, "--out", out_file,
                           "--plots", plots)
    assert rc == 0, err
    result = json.loads(out)
    f = result["fit"]
    assert f["n_points"] == 25 and f["n_kind"] == "n"
    assert f["E"] == pytest.approx(LAW["E"], abs=0.1)
    assert f["alpha"] == pytest.approx(LAW["alpha"], abs=0.05)
    assert result["bootstrap"]["n_boot"] == 20 and set(result["bootstrap"]["intervals"]) == set(LAW)
    assert result["loo"]["mae"] >= f["mae"] * 0.5 and len(result["loo"]["errors"]) == 25
    assert "bootstrap resamples: 20/20" in err
    assert json.loads(out_file.read_text())["fit"] == f
    for name in ("predicted_vs_observed.png", "loss_vs_size.png", "iso_loss.png"):
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_predict_uses_saved_fit(capsys, tmp_path, law_csv):
    out_file = tmp_path / "fit.json"
    rc, out, _ = run_cli(capsys, "fit", law_csv, "--bootstrap", 0, "--no_loo", "--out", out_file)
    assert rc == 0
    # plots are written by default, into fit_plots/ beside --out, and listed in the output
    names = ("predicted_vs_observed.png", "loss_vs_size.png", "iso_loss.png")
    plots = [tmp_path / "fit_plots" / name for name in names]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)
    assert all(f"plot: {p}" in out for p in plots)
    rc, out, _ = run_cli(capsys, "predict", "--fit", out_file, "--n", 1e8, 4e8, "--d", 2e10, "--json")
    assert rc == 0
    preds = json.loads(out)["predictions"]
    law = ScalingLawFit.load(out_file)
    assert [p["n"] for p in preds] == [1e8, 4e8]
    assert preds[1]["loss"] == pytest.approx(float(law.predict(4e8, 2e10)))
    assert preds[1]["loss"] < preds[0]["loss"]


def test_fit_summary_tree_by_size_kind(capsys, summary_tree):
    results = {}
    for kind in ("avg", "final"):
        rc, out, err = run_cli(capsys, "fit", summary_tree, "--n", kind, "--json", "--bootstrap", 0, "--no_loo",
                               "--no-plots")
        assert rc == 0, err
        results[kind] = json.loads(out)
        assert "1 run(s) have no final_eval_loss; used final_train_loss" in err
    assert results["avg"]["fit"]["n_kind"] == "avg" and results["avg"]["fit"]["n_points"] == 30
    assert results["avg"]["fit"]["mae"] < results["final"]["fit"]["mae"]


def test_compare_cli_ranks_n_bar_first(capsys, summary_tree):
    rc, out, _ = run_cli(capsys, "compare", summary_tree, "--json")
    assert rc == 0
    rows = json.loads(out)["rows"]
    assert rows[0]["kind"] == "avg"
    ranks = {r["kind"]: r["rank"] for r in rows}
    assert ranks["final"] > ranks["avg"]
    rc, out, _ = run_cli(capsys, "compare", summary_tree, "--kinds", "avg", "final")
    assert rc == 0 and out.splitlines()[1].split()[1] == "avg"


def test_plan_cli_matches_library(capsys):
    args = ["--E", LAW["E"], "--A", LAW["A"], "--B", LAW["B"], "--alpha", LAW["alpha"], "--beta", LAW["beta"]]
    rc, out, _ = run_cli(capsys, "plan", *args, "--flops", 1e21, "--sparsity", 0.6, "--schedule", "cubic",
                         "--json")
    assert rc == 0
    expect = plan(ScalingLawFit(**LAW), 1e21, final_sparsity=0.6, schedule="cubic").to_dict()
    assert json.loads(out) == expect
    rc, out, _ = run_cli(capsys, "plan", *args, "--flops", 1e21, "--sparsity", 0.6)
    assert rc == 0 and "inference-size saving" in out


def test_chinchilla_option_via_module_entry_point():
    from test_scaling_fit import chinchilla_csv

    proc = subprocess.run([sys.executable, "-m", "jaxsparse.scaling", "fit", str(chinchilla_csv()), "--chinchilla",
                           "--bootstrap", "0", "--no_loo", "--json", "--no-plots"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    f = json.loads(proc.stdout)["fit"]
    assert f["n_points"] == 240  # 245 runs, the 5 highest-loss left out by default
    assert abs(f["E"] - 1.82) < 0.02 and abs(f["alpha"] - 0.3478) < 0.005


# ---- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["0", "-5", "nan", ""])
def test_bad_value_names_file_row_and_column(capsys, tmp_path, bad):
    rows = [[1e8 * (i + 1), 1e10 * (i + 2), 3.0 - 0.1 * i] for i in range(7)]
    rows[2][0] = bad
    path = write_csv(tmp_path / "bad.csv", rows)
    rc, _, err = run_cli(capsys, "fit", path, "--bootstrap", 0, "--no-plots")
    assert rc == 2
    assert f"{path} row 3: column 'n'" in err
    rc, out, err = run_cli(capsys, "fit", path, "--bootstrap", 0, "--no_loo", "--skip_bad_rows", "--json",
                           "--no-plots")
    assert rc == 0
    assert json.loads(out)["fit"]["n_points"] == 6
    assert "skipped 1 run(s)" in err


def test_csv_missing_column(capsys, tmp_path):
    path = write_csv(tmp_path / "nod.csv", [[1e8, 3.0]] * 6, header=("n", "loss"))
    rc, _, err = run_cli(capsys, "fit", path, "--no-plots")
    assert rc == 2 and str(path) in err and "no column(s) ['d']" in err


def test_too_few_points(capsys, tmp_path):
    path = write_csv(tmp_path / "few.csv", [[1e8 * (i + 1), 1e10, 3.0 - 0.1 * i] for i in range(4)])
    rc, _, err = run_cli(capsys, "fit", path, "--no-plots")
    assert rc == 2 and "4 point(s)" in err and "at least 5" in err


def test_directory_without_summaries(capsys, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    rc, _, err = run_cli(capsys, "compare", tmp_path / "empty")
    assert rc == 2 and "holds no summary.json" in err and "empty" in err


def test_summary_missing_tokens(capsys, tmp_path):
    bad = tmp_path / "r" / "summary.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"n_avg": 1e8, "final_eval_loss": 3.0}))
    rc, _, err = run_cli(capsys, "fit", tmp_path / "r", "--no-plots")
    assert rc == 2 and str(bad) in err and "'tokens'" in err


def test_missing_size_kind_and_drop_too_many(capsys, law_csv):
    rc, _, err = run_cli(capsys, "fit", law_csv, "--n", "final", "--no-plots")
    assert rc == 2 and "'final'" in err and "available: ['n']" in err
    rc, _, err = run_cli(capsys, "fit", law_csv, "--drop_highest", 25, "--no-plots")
    assert rc == 2 and "drop_highest=25" in err


def test_predict_and_plan_need_parameters(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "predict", "--E", 1.8, "--A", 400, "--n", 1e8, "--d", 1e9)
    assert rc == 2 and "missing: --B --alpha --beta" in err
    (tmp_path / "f.json").write_text(json.dumps({"E": 1.8}))
    rc, _, err = run_cli(capsys, "plan", "--fit", tmp_path / "f.json", "--flops", 1e20, "--sparsity", 0.5)
    assert rc == 2 and "missing key(s) ['A', 'B', 'alpha', 'beta']" in err
    # argparse rejects a non-positive budget before anything runs, in one line
    assert main(["plan", "--E", "1", "--A", "1", "--B", "1", "--alpha", "1", "--beta", "1", "--flops", "0",
                 "--sparsity", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "must be finite and > 0" in err and len(err.strip().splitlines()) == 1


def _rows(n_values, d_values, copies=1):
    rows = [[n, d, 1.8 + 480 / n**0.35 + 2100 / d**0.37] for n in n_values for d in d_values]
    return rows * copies


BAD_INPUTS = [  # (name, argv after the subcommand's inputs are written, expected text in the one error line)
    ("missing file", lambda t: ["fit", t / "nope.csv"], "no such file"),
    ("directory as --fit", lambda t: ["predict", "--fit", t, "--n", "1e8", "--d", "1e9"], "Is a directory"),
    ("garbage --fit", lambda t: ["plan", "--fit", _text(t / "g.json", "{oops"), "--flops", "1e20",
                                 "--sparsity", "0.5"], "not valid JSON"),
    ("binary csv", lambda t: ["fit", _bytes(t / "b.csv", b"\xff\xfe\x00\x81" * 50)], "b.csv"),
    ("unknown command", lambda t: ["fitt"], "invalid choice"),
    ("unknown option", lambda t: ["fit", t / "ok.csv", "--bootstrapp", "3"], "unrecognized arguments"),
    ("negative bootstrap", lambda t: ["fit", t / "ok.csv", "--bootstrap", "-1"], "must be >= 0"),
    ("bad confidence", lambda t: ["fit", t / "ok.csv", "--confidence", "1.5"], "--confidence"),
    ("out dir missing", lambda t: ["fit", t / "ok.csv", "--out", t / "no" / "fit.json"], "does not exist"),
    ("plots is a file", lambda t: ["fit", t / "ok.csv", "--plots", t / "ok.csv"], "not a directory"),
    ("plots and no-plots", lambda t: ["fit", t / "ok.csv", "--plots", t / "p", "--no-plots"], "not both"),
    ("one model size", lambda t: ["fit", _csv(t / "n1.csv", _rows([1e8], np.geomspace(1e9, 1e11, 6)))],
     "column 'n' has 1 distinct value"),
    ("one token count", lambda t: ["fit", _csv(t / "d1.csv", _rows(np.geomspace(1e7, 1e9, 6), [1e10]))],
     "column 'd' has 1 distinct value"),
    ("ten copies of one run", lambda t: ["fit", _csv(t / "copies.csv", _rows([1e8], [1e10], copies=10))],
     "1 distinct value"),
]


def _text(path, text):
    path.write_text(text)
    return path


def _bytes(path, data):
    path.write_bytes(data)
    return path


def _csv(path, rows):
    return write_csv(path, rows)


@pytest.mark.parametrize("name, argv, expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_plain_line(capsys, tmp_path, name, argv, expected):
    write_csv(tmp_path / "ok.csv", _rows(np.geomspace(1e7, 1e9, 3), np.geomspace(1e9, 1e11, 3)))
    rc, out, err = run_cli(capsys, *argv(tmp_path))
    assert rc == 2, (name, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    assert out == ""
    assert not (tmp_path / "fit_plots").exists() and not (tmp_path / "p").exists()


def test_usage_error_is_one_line_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "jaxsparse.scaling", "predict", "--n", "x"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


def test_duplicate_runs_are_fitted_with_a_warning(capsys, tmp_path):
    rows = _rows(np.geomspace(1e7, 1e9, 4), np.geomspace(1e9, 1e11, 4))
    path = write_csv(tmp_path / "dup.csv", rows + rows[:3])
    rc, out, err = run_cli(capsys, "fit", path, "--bootstrap", 2, "--json", "--no-plots")
    assert rc == 0 and json.loads(out)["fit"]["n_points"] == 19
    assert {"bootstrap", "loo"} <= set(json.loads(out))  # the fit, its resamples and leave-one-out: one warning
    assert err.count("runs duplicate another run") == 1 and f"warning: {path}: 3 of 19" in err


def _fit_in_a_process(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxsparse.scaling", "fit", str(path), "--bootstrap", "0",
                           "--no-plots"], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("header, words", [
    (("n", "d", "loss", "loss"), "column 'loss' appears more than once ('loss' and 'loss'"),
    (("n", "D", "Loss", "loss "), "column 'loss' appears more than once ('Loss' and 'loss '"),
    (("n", "d", "tokens", "loss"), "columns 'd' and 'tokens' both give the training tokens"),
])
def test_duplicate_or_ambiguous_columns_exit_2_naming_them(tmp_path, header, words):
    rows = [[n, d, 2.0 + 100 / n ** 0.3, 99.0] for n, d in zip(np.geomspace(1e7, 1e9, 8), np.geomspace(1e9, 1e11, 8))]
    proc = _fit_in_a_process(write_csv(tmp_path / "two.csv", rows, header=header))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("error: ") and words in proc.stderr and proc.stderr.count("\n") == 1


def test_an_oversized_input_is_refused_by_its_size_before_it_is_read(tmp_path):
    big = tmp_path / "runs.csv"
    with open(big, "wb") as fh:
        fh.write(b"n,d,loss\n")
        fh.truncate(1 << 30)  # 1 GiB, sparse: no disk used
    proc = _fit_in_a_process(big)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert f"{big}: 1,024.0 MiB, more than the 64 MiB a CSV table of runs may have" in proc.stderr
