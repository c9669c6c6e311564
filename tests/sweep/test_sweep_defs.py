"""The sweep definitions: the paper's 80- and 30-run grids and the mini replication, every run
validated in-process exactly as the trainer's command line reads it (config file + overrides)."""
from __future__ import annotations

import itertools

import pytest

from jaxsparse.sweep.check import plan_runs
from jaxsparse.sweep.spec import load_sweep


def _arg(config: str, key: str) -> str:
    args = dict(kv.split("=", 1) for kv in config.split(":", 1)[1].split(","))
    return args[key]


def test_schedules_sweep_is_the_papers_80_runs():
    runs = load_sweep("configs/sweeps/schedules.py")
    assert len(runs) == 80
    assert len({r.name for r in runs}) == 80 and len({r.workdir for r in runs}) == 80
    assert len({r.config for r in runs}) == 80  # no two runs train the same thing
    plans = plan_runs(runs)
    grid = set()
    for run in runs:
        p = plans[run.name].to_json()  # the JSON users and sweep files see
        s = p["schedule"]
        assert p["model"]["d_model"] == 768 and p["model"]["n_layers"] == 12
        assert abs(p["params"]["total"] - 162.42e6) < 0.01e6  # the paper, section 4
        assert s["kind"] == "geometric"
        budget = {"10x": 200, "20x": 400}[_arg(run.config, "budget")]
        # the step count is the budget rounded up to whole steps
        one_step = p["tokens_per_step"] / p["params"]["total"]
        assert budget <= p["tokens_per_param"] < budget + one_step
        assert s["final_density"] == pytest.approx(1 - s["final_sparsity"], abs=1e-9)
        grid.add((s["start"], s["end"] - s["start"], s["final_sparsity"], budget))
    pairs = [(a, p) for a in (0, 0.25, 0.5, 0.75) for p in (0.25, 0.5, 0.75, 1.0) if a + p <= 1]
    assert len(pairs) == 10
    want = {(a, p, sp, b) for (a, p), sp, b in
            itertools.product(pairs, (0.2, 0.4, 0.6, 0.8), (200, 400))}
    assert grid == want


def test_scaling_sweep_is_the_papers_30_runs():
    runs = load_sweep("configs/sweeps/scaling.py")
    assert len(runs) == 30 and len({r.workdir for r in runs}) == 30
    plans = plan_runs(runs)
    grid = set()
    for run in runs:
        p = plans[run.name].to_json()  # the JSON users and sweep files see
        s = p["schedule"]
        total, prunable = p["params"]["total"], p["params"]["prunable"]
        sparsity = float(_arg(run.config, "sparsity"))
        if sparsity == 0:
            assert s["kind"] == "dense" and p["n_avg"] == total == p["n_final"]
        else:
            assert (s["kind"], s["start"], s["end"]) == ("geometric", 0.25, 0.75)
            assert p["n_final"] == pytest.approx(total - sparsity * prunable, rel=1e-9)
            assert p["n_final"] < p["n_avg"] < total
        grid.add((p["model"]["size"], sparsity, round(p["tokens_per_param"] / 200)))
    assert grid == set(itertools.product(("58m", "162m", "468m"), (0.0, 0.2, 0.4, 0.6, 0.8),
                                         (1, 2)))


def test_mini_sweep_validates_and_matches_nbar_to_its_dense_partners():
    runs = load_sweep("configs/sweeps/mini.py")
    plans = plan_runs(runs)
    by_name = {r.name: r for r in runs}
    kinds = {r.tags["kind"] for r in runs}
    assert kinds == {"dense", "sparse", "matched"}
    widths = {plans[r.name].model.d_model for r in runs if r.tags["kind"] == "dense"}
    assert len(widths) >= 4
    matched = [r for r in runs if r.tags["kind"] == "matched"]
    assert matched
    for run in matched:
        partner = by_name[run.tags["match"]]
        mine, theirs = plans[run.name], plans[partner.name]
        assert mine.tokens == theirs.tokens                    # same D
        assert mine.n_avg == pytest.approx(theirs.n_avg, rel=1e-3)  # same N̄
        assert mine.params.total > theirs.params.total   # a bigger model, pruned
        assert mine.n_final < 0.7 * theirs.n_final
    for run in runs:
        if run.tags["kind"] == "sparse":
            s = plans[run.name].pruning
            assert (s.schedule.start, s.schedule.end) == (0.25, 0.75)
            assert 9 <= len(s.event_steps) <= 12
