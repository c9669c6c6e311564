"""The replication study (configs/sweeps/replication.py and its results script,
results/replication/report.py): the sweep's design, validated run by run as the trainer reads it, and
its CI smoke version trained for real and carried through to the results (CSV with a seed column,
matched pairs over seeds, the report whose numbers `scaling compare` prints)."""
from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import os
import subprocess
import sys

import pytest

from jaxsparse.scaling.cli import main as scaling_main
from jaxsparse.sweep.check import load_config, plan_runs
from jaxsparse.sweep.spec import load_module, load_sweep
from jaxsparse.train import train

SWEEP = "configs/sweeps/replication.py"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "results", "replication", "report.py")
rep = load_module(SCRIPT)


@pytest.fixture(scope="module")
def design():
    runs = load_sweep(SWEEP)
    return runs, plans_of(runs)


def plans_of(runs):
    return {name: plan.to_json() for name, plan in plan_runs(runs).items()}


def _t(run, key, default=None):
    return run.tags.get(key, default)


def test_every_run_meets_the_budget_and_matched_pairs_have_exact_nbar_at_equal_d(design):
    runs, plans = design
    by_name = {r.name: r for r in runs}
    for run in runs:
        p = plans[run.name]
        assert p["tokens_per_param"] >= 50, run.name  # tokens per INITIAL parameter
        budget_of = plans[_t(run, "match")] if _t(run, "kind") == "matched" else p  # a pair's: per partner parameter
        assert budget_of["tokens_per_param"] == pytest.approx(_t(run, "budget"), rel=0.01), run.name
        if _t(run, "kind") in ("sparse", "matched", "schedule"):
            assert p["schedule"]["kind"] == "geometric"
    matched = [r for r in runs if _t(r, "kind") == "matched"]
    assert len(matched) >= 10
    for run in matched:
        mine, partner = plans[run.name], plans[_t(run, "match")]
        assert by_name[_t(run, "match")].tags["kind"] == "dense"
        assert mine["tokens"] == partner["tokens"]                                    # same D
        assert mine["n_avg"] == pytest.approx(partner["params"]["total"], rel=2e-4)   # N̄ = N
        assert mine["params"]["total"] > partner["params"]["total"]
        assert 0.5 < mine["schedule"]["final_sparsity"] < 0.85   # the paper's range (up to 0.8)


def test_the_core_verdict_comes_first_and_holds_the_papers_grid(design):
    runs, plans = design
    core = load_sweep(f"{SWEEP}:part=core")
    assert [r.name for r in runs[:len(core)]] == [r.name for r in core]
    ladder = {plans[r.name]["model"]["d_model"] for r in core if _t(r, "kind") == "dense"}
    assert len(ladder) >= 5
    pairs = {}
    for r in core:
        if _t(r, "kind") == "matched":
            assert _t(r, "budget") == 200 and plans[r.name]["schedule"]["start"] == 0.25
            assert plans[r.name]["schedule"]["end"] == 0.75
            pairs.setdefault(_t(r, "pair"), set()).add(load_config(r).seed)
    assert len(pairs) >= 2 and all(seeds == {0, 1} for seeds in pairs.values())
    sparse = {}
    for r in runs:
        if _t(r, "kind") == "sparse":
            sparse.setdefault(_t(r, "width"), set()).add(_t(r, "sparsity"))
    assert sum(s == {0.2, 0.4, 0.6, 0.8} for s in sparse.values()) >= 2


def test_fit_runs_vary_d_and_exclude_the_checks_and_variants(design):
    runs, plans = design
    fit = load_sweep(f"{SWEEP}:part=fit")
    assert {r.name for r in fit} == {r.name for r in runs if _t(r, "fit") == 1}
    assert {plans[r.name]["tokens_per_param"] // 50 for r in fit} >= {1, 4}    # 50 and 200 at least
    for r in fit:
        c = load_config(r)
        assert _t(r, "kind") in ("dense", "sparse", "matched")
        assert (c.train.learning_rate, c.train.min_lr_ratio, c.pruning.scope) == (1e-2, 0.1, "global")
        assert c.model.n_layers == 2


def test_learning_rate_check_investigation_and_schedule_grid(design):
    runs, plans = design
    rates = {}
    for r in runs:
        if _t(r, "kind") in ("dense", "lr_check") and _t(r, "budget") == 50 and _t(r, "layers") == 2 \
                and _t(r, "variant", "base") == "base" and load_config(r).seed == 0:
            rates.setdefault(_t(r, "width"), set()).add(load_config(r).train.learning_rate)
    assert len(rates) >= 5 and all(len(v) == 3 for v in rates.values())
    seeds = {}
    for r in runs:
        if _t(r, "kind") == "matched":
            seeds.setdefault((_t(r, "pair"), _t(r, "variant")), set()).add(load_config(r).seed)
    assert all(s == {0, 1} for s in seeds.values())
    configs = {(_t(r, "pair"), _t(r, "variant")): load_config(r) for r in runs if _t(r, "kind") == "matched"}
    variants = {v for _, v in configs}
    assert {"end0.5", "layerwise", "floor0.5", "deep"} <= variants
    by_variant = {v: c for (_, v), c in configs.items()}
    assert by_variant["end0.5"].pruning.end == 0.5
    assert by_variant["layerwise"].pruning.scope == "layerwise"
    assert by_variant["floor0.5"].train.min_lr_ratio == 0.5
    assert by_variant["deep"].model.n_layers == 4
    budgets = {_t(r, "budget") for r in runs if _t(r, "kind") == "matched" and _t(r, "variant") == "base"}
    assert budgets == {100, 200, 400}
    sched = [r for r in runs if _t(r, "kind") == "schedule"]
    windows = {(plans[r.name]["schedule"]["start"], plans[r.name]["schedule"]["end"]) for r in sched}
    assert windows == set(rep_schedule_pairs()) and len(sched) == 10
    assert len({(plans[r.name]["params"]["total"], plans[r.name]["schedule"]["final_sparsity"],
                 plans[r.name]["tokens"]) for r in sched}) == 1


def rep_schedule_pairs():
    return [(a, a + p) for a in (0, 0.25, 0.5, 0.75) for p in (0.25, 0.5, 0.75, 1.0) if a + p <= 1]


def test_unknown_part_is_refused_naming_the_allowed_ones():
    from jaxsparse.sweep.spec import SweepError
    with pytest.raises(SweepError, match="part='cores' is unknown; allowed: all, fit, smoke, core"):
        load_sweep(f"{SWEEP}:part=cores")


def test_smoke_sweep_trains_and_collects_pairs_over_seeds(tmp_path):
    """The CI version: every smoke run trained in-process exactly as its spec says, then collected:
    a seed column, and the matched pair grouped over its two seeds."""
    runs = load_sweep(f"{SWEEP}:part=smoke")
    root, out = tmp_path / "runs", tmp_path / "out"
    for run in runs:
        config = load_config(run)
        config.data.data_dir = str(tmp_path / "tfds")  # not part of what is trained
        train(config, str(root / run.workdir))
    rep.write_results(f"{SWEEP}:part=smoke", str(root), str(out), report=False)
    with open(out / "all_runs.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(rows) == {r.name for r in runs}
    assert [rows[r.name]["seed"] for r in runs] == ["0", "0", "1", "1"]
    summary = json.loads((root / "matched_d32_to_d24_s1" / "summary.json").read_text())
    assert float(rows["matched_d32_to_d24_s1"]["loss"]) == summary["final_eval_loss"]
    deltas = [float(rows[f"matched_d32_to_d24{s}"]["loss"]) - float(rows[f"dense_d24{s}"]["loss"])
              for s in ("", "_s1")]
    text = (out / "replication.md").read_text()
    assert "4 of 4 runs finished. Missing (0): none." in text
    assert (out / "plots" / "loss_vs_nbar.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (f"| d32_to_d24 | base | 0 | {float(rows['matched_d32_to_d24']['final_sparsity']):.3f} | 2 | "
            f"{sum(deltas) / 2:+.4f} | {abs(deltas[0] - deltas[1]) / 2:.4f} |") in text


TRUTH = {"E": 1.2, "A": 300.0, "alpha": 0.45, "B": 900.0, "beta": 0.4}


def _law(n, d):
    return TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"]


def test_results_of_the_full_design_from_a_known_law_in_nbar(tmp_path, design):
    """Every run of the design "finishes" with the loss of a known law in N̄ (summaries written by the
    trainer's own write_summary from the real plans); the second seed of every matched run is 0.004
    worse, the learning-rate check's runs 0.05 worse, and two runs have not finished. The results
    must then show: pairs at N̄ (position ~0) with the seed spread put in, the schedules ranked by
    N̄, lr 0.01 best, the missing runs named, and the report's LOO MAE exactly as `scaling compare
    --loo` prints it from results.csv."""
    from jaxsparse.sweep.check import plan_runs as plan_objects
    from jaxsparse.train.loop.report import write_summary
    runs, _ = design
    plans = plan_objects(runs)
    root, out = tmp_path / "runs", tmp_path / "out"
    unfinished = {runs[-1].name, "dense_d64_b50_lr0.03"}  # a schedule run and a learning-rate check
    for run in runs:
        if run.name in unfinished:
            continue
        plan, config = plans[run.name], load_config(run)
        loss = _law(plan.n_avg, plan.tokens) + 0.004 * (config.seed if _t(run, "kind") == "matched" else 0) \
            + 0.05 * (_t(run, "kind") == "lr_check")
        (root / run.workdir).mkdir(parents=True)
        write_summary(str(root / run.workdir), config, plan, {
            "n_final": plan.n_final, "final_sparsity": 1 - plan.pruning.final_density,
            "final_train_loss": loss, "final_eval_loss": loss})
    said = rep.write_results(SWEEP, str(root), str(out))
    assert said[0].startswith(f"{len(runs) - 2} of {len(runs)} runs finished")
    text = (out / "replication.md").read_text()
    assert "Missing (2): " in text and all(name in text for name in unfinished)
    groups = rep.pair_groups(list(csv.DictReader(open(out / "all_runs.csv"))),
                             rep.dense_law(list(csv.DictReader(open(out / "results.csv")))))
    assert len(groups) >= 10
    for g in groups:
        assert g["seeds"] == 2 and g["delta"] == pytest.approx(0.002, abs=2e-4)
        assert g["spread"] == pytest.approx(0.002, abs=1e-6)
        assert abs(g["position"]) < 0.1   # the law is in N̄: the sparse runs sit at their partners
    ranking = rep.schedule_ranking(list(csv.DictReader(open(out / "all_runs.csv"))))
    assert len(ranking) == 9 and [x["n_avg"] for x in ranking] == sorted(x["n_avg"] for x in ranking)[::-1]
    table = rep.lr_table(list(csv.DictReader(open(out / "all_runs.csv"))))
    assert len(table) == 5 and all(min(row, key=row.get) == 0.01 for row in table.values())
    assert "| lr 0.0033 | lr 0.01 | lr 0.03 | best |" in text
    report = json.loads((out / "report.json").read_text())
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert scaling_main(["compare", str(out / "results.csv"), "--loo", "--json"]) == 0
    printed = {r["kind"]: r for r in json.loads(buf.getvalue())["rows"]}
    for fit in report["fits"]:
        assert printed[fit["kind"]]["loo_mae"] == pytest.approx(fit["loo_mae"], rel=1e-9)
    assert {f["kind"]: f["rank"] for f in report["fits"]}["avg"] == 1
    err = io.StringIO()  # equal (n, d, loss) rows of the design: one warning for the fit, its resamples and LOO
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert scaling_main(["fit", str(out / "results.csv"), "--bootstrap", "2", "--no-plots"]) == 0
    assert err.getvalue().count("runs duplicate another run") == 1, err.getvalue()
    assert (out / "plots" / "size_term.png").stat().st_size > 10_000


def test_no_dense_law_from_one_budget_so_no_position():
    """Dense runs at one budget in tokens per parameter (D proportional to N, up to the rounding of D
    to whole steps) cannot pin the law's N and D terms apart: no law, so the pairs' position is left
    out rather than read off a degenerate fit (E -> 0); a second budget gives the law back. The
    numbers are the replication's dense runs at 200 tokens per parameter (results/replication/)."""
    def row(n, d, loss):
        return {"kind": "dense", "final_sparsity": "0.0", "n": str(n), "d": str(d), "loss": str(loss)}
    one_budget = [row(30984, 6197248, 1.7828), row(49504, 9902080, 1.6876), row(72120, 14424064, 1.6111),
                  row(98832, 19767296, 1.5469), row(30984, 6197248, 1.8109), row(49504, 9902080, 1.6933),
                  row(98832, 19767296, 1.5431)]
    assert rep.dense_law(one_budget) is None
    pair = [{"name": "dense", "kind": "dense", "loss": "1.7828", "n": "30984", "d": "6197248"},
            {"name": "sparse", "kind": "matched", "match": "dense", "loss": "2.02", "n_final": "16800",
             "d": "6197248", "seed": "0", "pair": "p", "variant": "base", "budget": "200",
             "final_sparsity": "0.8"}]
    groups = rep.pair_groups(pair, rep.dense_law(one_budget))
    assert groups[0]["position"] is None
    assert "| 1 | +0.2372 | - (one seed) | - |" in "\n".join(rep.pairs_lines(groups))  # no spread of one seed
    quarter = [row(int(r["n"]), int(r["d"]) // 4, float(r["loss"]) + 0.15) for r in one_budget]
    assert rep.dense_law(one_budget + quarter) is not None


def test_the_script_refuses_a_bad_argument_with_one_line_and_exit_2(tmp_path):
    """Run as the results' README prints it (from the repository root): a bad argument exits 2 with
    one `error:` line naming it; a root with no finished run exits 2 naming the root."""
    bad = subprocess.run([sys.executable, SCRIPT, "--root=nowhere", "--out=nowhere", "--bogus"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "unrecognized arguments: --bogus" in bad.stderr
    empty = subprocess.run([sys.executable, SCRIPT, f"--root={tmp_path}", f"--out={tmp_path / 'out'}",
                            f"--sweep={SWEEP}:part=smoke"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert empty.returncode == 2 and f"has finished under {tmp_path}" in empty.stderr, empty.stderr


def test_measured_position_reads_the_final_size_dense_run_of_the_same_seed_and_d():
    """With a dense run of the sparse run's final size (round 2's design), the position is measured:
    (sparse - partner) / (final size - partner), per seed, then averaged; the delta gets its standard
    error over seeds. A variant (another learning rate) has no final-size run of its own: no position."""
    rows = []
    for seed, (sparse, partner, final) in enumerate([(2.10, 2.00, 2.20), (2.16, 2.02, 2.30)]):
        common = {"pair": "p", "seed": str(seed), "d": "1000", "budget": "100", "final_sparsity": "0.8"}
        rows += [{"name": f"dense{seed}", "kind": "dense", "loss": str(partner), "n": "50", **common},
                 {"name": f"final{seed}", "kind": "final_size", "loss": str(final), "n": "25", **common},
                 {"name": f"sparse{seed}", "kind": "matched", "match": f"dense{seed}", "loss": str(sparse),
                  "n_final": "25", "variant": "base", **common}]
    rows.append({**rows[2], "name": "sparse_lr", "variant": "lrx2", "seed": "0"})
    groups = {g["variant"]: g for g in rep.pair_groups(rows, None)}
    base = groups["base"]
    assert base["measured"] == pytest.approx((0.10 / 0.20 + 0.14 / 0.28) / 2)
    assert base["delta"] == pytest.approx(0.12) and base["se"] == pytest.approx(0.02)
    assert groups["lrx2"]["measured"] is None and groups["lrx2"]["se"] is None
    table = "\n".join(rep.pairs_lines(list(groups.values())))
    assert "| p | base | 100 | 0.800 | 2 | +0.1200 | 0.0200 | - | 0.0200 | 0.50 |" in table
