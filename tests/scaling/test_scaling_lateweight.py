"""The late-weighted size N_k and its nested leave-one-configuration-out test (scaling/lateweight.py),
and the paired statistics (scaling/paired.py): on runs drawn from a known law the nested choice of k
recovers the law's k, and the standard errors are the textbook ones."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxsparse.scaling import init_grid
from jaxsparse.scaling.lateweight import late_weighted_size, late_weighted_sizes, nested_leave_group_out
from jaxsparse.scaling.law import predict_loss
from jaxsparse.scaling.paired import group_mae, mean_se, paired_difference

LAW = {"E": 1.2, "A": 40.0, "B": 200.0, "alpha": 0.4, "beta": 0.3}
STARTS = init_grid()[::45]   # 100 of the 4,500 starts: enough for these clean runs, and fast
KS = (0.0, 1.0, 2.0, 4.0, math.inf)


def geometric_trajectory(n0: float, prunable: float, sparsity: float, steps: int = 400) -> np.ndarray:
    """Per-step counts of a 25%/75% geometric schedule with 20 events (the replication's)."""
    t = np.arange(steps)
    events = np.linspace(0.25 * steps, 0.75 * steps, 20).round()
    done = np.searchsorted(events, t, side="right")        # events at or before each step
    density = (1.0 - sparsity) ** (done / 20)
    return n0 - prunable * (1.0 - density)


def synthetic_runs(k_true: float, noise: float = 0.0015, seed: int = 0):
    """Dense configurations and sparse ones (sizes x sparsities), 2 budgets each; loss
    from LAW at N_{k_true}. Returns trajectories, d, loss, configuration labels."""
    rng = np.random.default_rng(seed)
    configs = [(n0, 0.0) for n0 in (3e4, 7e4, 1.6e5, 4e5)]
    configs += [(n0, s) for n0 in (1e5, 3e5) for s in (0.5, 0.8)]
    trajs, d, labels = [], [], []
    for n0, s in configs:
        for budget in (60.0, 150.0):
            for _ in range(1):
                trajs.append(geometric_trajectory(n0, 0.9 * n0, s))
                d.append(budget * n0)
                labels.append(f"{n0:.0f}@{s}")
    d = np.array(d)
    n = late_weighted_sizes(trajs, k_true)
    loss = predict_loss(LAW, n, d) * np.exp(noise * rng.standard_normal(n.size))
    return trajs, d, loss, labels


def test_late_weighted_size_spans_nbar_to_the_final_size():
    traj = geometric_trajectory(1e5, 9e4, 0.8)
    assert late_weighted_size(traj, 0.0) == pytest.approx(np.mean(traj), rel=1e-12)   # k = 0: N̄
    assert late_weighted_size(traj, math.inf) == traj[-1]                             # k -> inf: final
    sizes = [late_weighted_size(traj, k) for k in (0.0, 1.0, 2.0, 8.0, 64.0, math.inf)]
    assert all(a > b for a, b in zip(sizes, sizes[1:]))
    assert sizes[-2] == pytest.approx(traj[-1], rel=1e-3)
    two = np.array([1.0, 3.0])                     # by hand: weights (1/2)^2 and 1 - (1/2)^2 at k = 1
    assert late_weighted_size(two, 1.0) == pytest.approx(0.25 * 1 + 0.75 * 3)
    with pytest.raises(ValueError, match="k=-1"):
        late_weighted_size(two, -1)


@pytest.mark.parametrize("k_true", [2.0, 0.0])
def test_nested_choice_of_k_recovers_the_law_that_made_the_runs(k_true):
    trajs, d, loss, labels = synthetic_runs(k_true)
    res = nested_leave_group_out(trajs, d, loss, labels, ks=KS, starts=STARTS)
    chosen = np.array(list(res.chosen.values()))
    assert len(res.chosen) == 8 and res.errors.shape == (16,)
    if k_true == 2.0:
        assert np.median(chosen) == 2.0 and np.all((chosen >= 1.0) & (chosen <= 4.0)), res.chosen
        assert res.mae < 0.5 * res.mae_fixed(0.0)            # beats N̄ on held-out configurations
        assert res.mae < 0.5 * res.mae_fixed(math.inf)       # and the final size
    else:
        assert np.median(chosen) == 0.0 and np.all(chosen <= 1.0), res.chosen
        assert res.mae_fixed(0.0) < 0.5 * res.mae_fixed(math.inf)
        assert res.mae <= 1.5 * res.mae_fixed(0.0)


def test_nested_refuses_too_few_configurations():
    trajs, d, loss, labels = synthetic_runs(0.0)
    keep = [i for i, lab in enumerate(labels) if lab in labels[:8:4]]
    with pytest.raises(ValueError, match=">= 3 configurations"):
        nested_leave_group_out([trajs[i] for i in keep], d[keep], loss[keep], [labels[i] for i in keep])


def test_standard_error_and_paired_difference_by_hand():
    mean, se = mean_se([0.10, 0.13, 0.16])
    assert mean == pytest.approx(0.13)
    assert se == pytest.approx(math.sqrt(((0.03**2 + 0 + 0.03**2) / 2) / 3))   # s / sqrt(n), ddof 1
    assert mean_se([0.2]) == (0.2, None)
    diff = paired_difference([0.1, -0.2, 0.3, 0.0], [0.05, 0.1, -0.1, 0.1])
    d = np.array([0.05, 0.1, 0.2, -0.1])
    assert diff["mean"] == pytest.approx(0.0625) and diff["n"] == 4
    assert diff["se"] == pytest.approx(np.sqrt(np.sum((d - d.mean())**2) / 3 / 4))
    assert group_mae([0.1, -0.3, 0.2], ["a", "b", "a"]) == {"a": {"mae": pytest.approx(0.15), "n": 2},
                                                            "b": {"mae": pytest.approx(0.3), "n": 1}}


def test_trajectories_file_round_trips_and_is_checked(tmp_path):
    from jaxsparse.scaling.lateweight import read_trajectories, write_trajectories
    trajs = {"sparse": geometric_trajectory(1e5, 9e4, 0.8, steps=333), "dense": np.full(50, 7e4)}
    path = write_trajectories(tmp_path / "t.json", trajs)
    back = read_trajectories(path)
    assert set(back) == {"sparse", "dense"} and all(np.array_equal(back[k], trajs[k]) for k in trajs)
    assert len(json.loads((tmp_path / "t.json").read_text())["runs"]["sparse"]["sizes"]) == 21   # 20 events
    (tmp_path / "bad.json").write_text('{"runs": {"x": {"steps": 3}}}')
    with pytest.raises(ValueError, match="bad.json: not a trajectories file"):
        read_trajectories(tmp_path / "bad.json")
