"""Model-size comparison (the paper's N-bar claim) and the compute planner."""
import numpy as np
import pytest

from jaxsparse.scaling import ScalingLawFit, average_density, compare_sizes, load_runs, plan
from jaxsparse.scaling.compare import format_table
from jaxsparse.scaling.synthetic import sparse_dense_summaries
from scaling_utils import write_summaries

LAW = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}


def discrete_average_density(kind: str, sparsity: float, a: float, b: float, steps: int = 200_000,
                             every: int = 100) -> float:
    """Step average of the prunable density with a pruning event every `every` steps (Jin et al., ICLR 2025)."""
    t_s, t_e = int(a * steps), int(b * steps)
    events = np.arange(t_s, t_e + 1, every)
    if kind == "geometric":
        after = (1 - sparsity) ** ((np.arange(events.size) + 1) / events.size)
    elif kind == "one_shot":
        events, after = np.array([t_s]), np.array([1 - sparsity])
    else:
        frac = (events - t_s) / max(t_e - t_s, 1)
        ramp = 1 - (1 - frac) ** 3 if kind == "cubic" else frac
        after = 1 - sparsity * ramp
    density = np.ones(steps)
    for step, value in zip(events, after):  # an event applies before its step's forward pass
        density[step:] = value
    return float(density.mean())


@pytest.mark.parametrize("kind", ["geometric", "cubic", "linear", "one_shot"])
@pytest.mark.parametrize("sparsity,a,b", [(0.8, 0.25, 0.75), (0.5, 0.0, 1.0), (0.6, 0.5, 0.75)])
def test_average_density_closed_forms_match_discrete_schedules(kind, sparsity, a, b):
    closed = average_density(sparsity, a, b, kind)
    assert closed == pytest.approx(discrete_average_density(kind, sparsity, a, b), abs=2e-3)


def test_average_density_limits():
    for kind in ("geometric", "cubic", "linear", "one_shot"):
        assert average_density(0.0, 0.25, 0.75, kind) == 1.0
    # cubic front-loads pruning most, geometric less, linear least; one-shot prunes everything at t_s
    geo, lin, cub, one = (average_density(0.8, 0.25, 0.75, k)
                          for k in ("geometric", "linear", "cubic", "one_shot"))
    assert one < cub < geo < lin
    # one-shot at t_s = t_e is the limit of every gradual schedule with a zero-length pruning phase
    for kind in ("geometric", "cubic", "linear"):
        assert average_density(0.8, 0.5, 0.5, kind) == pytest.approx(average_density(0.8, 0.5, 0.5, "one_shot"))


@pytest.mark.parametrize("kwargs,field", [({"final_sparsity": 1.0}, "sparsity"),
                                         ({"final_sparsity": 0.5, "start": 0.8, "end": 0.5}, "start"),
                                         ({"final_sparsity": 0.5, "schedule": "exp"}, "schedule"),
                                         ({"final_sparsity": 0.5, "prunable_fraction": 0.0}, "prunable_fraction")])
def test_plan_rejects_bad_settings(kwargs, field):
    with pytest.raises(ValueError, match=field):
        plan(ScalingLawFit(**LAW), 1e20, **kwargs)
    with pytest.raises(ValueError, match="flops"):
        plan(ScalingLawFit(**LAW), -1.0, final_sparsity=0.5)


def test_plan_minimises_predicted_loss_at_fixed_compute():
    law = ScalingLawFit(**LAW)
    flops = 3e20
    p = plan(law, flops, final_sparsity=0.6, prunable_fraction=0.85)
    assert 6 * p.n_avg * p.tokens == pytest.approx(flops)
    rho = average_density(0.6, 0.25, 0.75, "geometric")
    assert p.average_density == rho
    assert p.n_avg == pytest.approx(p.n_initial * (1 - 0.85 * (1 - rho)))
    assert p.n_final == pytest.approx(p.n_initial * (1 - 0.85 * 0.6))
    sizes = np.geomspace(p.n_avg / 30, p.n_avg * 30, 4001)
    brute = sizes[np.argmin(law.predict(sizes, flops / (6 * sizes)))]
    assert brute == pytest.approx(p.n_avg, rel=5e-3)
    assert p.predicted_loss == pytest.approx(float(law.predict(p.n_avg, p.tokens)))
    # the dense model with the same predicted loss on the same tokens (same compute) has N = N-bar
    assert p.dense_equal_loss_size == pytest.approx(p.n_avg, rel=1e-9)
    assert p.inference_saving == pytest.approx(1 - p.n_final / p.n_avg)
    assert 0 < p.inference_saving < 0.6
    dense = plan(law, flops, final_sparsity=0.0)
    assert dense.inference_saving == pytest.approx(0.0, abs=1e-12)
    assert dense.n_initial == pytest.approx(p.n_avg)


@pytest.fixture(scope="module")
def sparse_dense_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_summaries(root, sparse_dense_summaries(LAW, noise=0.002, seed=3))
    return root


def test_compare_ranks_average_size_first_and_final_size_worse(sparse_dense_tree):
    runs = load_runs([sparse_dense_tree])
    rows = compare_sizes(runs)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    by_kind = {r["kind"]: r for r in rows}
    assert set(by_kind) == {"avg", "avg_prunable", "final", "initial"}
    assert rows[0]["kind"] == "avg"
    assert all(r["n_points"] == 30 for r in rows)
    assert by_kind["final"]["mae"] > 3 * by_kind["avg"]["mae"]
    assert by_kind["final"]["max_error"] > by_kind["avg"]["max_error"]
    assert by_kind["avg"]["mae"] < 0.006  # noise level (0.2% of a loss near 2.5-3 nats)
    table = format_table(rows)
    assert table.splitlines()[1].split()[:2] == ["1", "avg"]
