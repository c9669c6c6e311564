"""Scaling-law fitter: the Chinchilla replication, agreement with the looped scipy recipe, recovery of
known parameters within bootstrap intervals, leave-one-out."""
from pathlib import Path

import numpy as np
import pytest

from jaxsparse.scaling import ScalingLawFit, bootstrap, fit, fit_reference, init_grid, leave_one_out, load_runs
from jaxsparse.scaling import optim
from jaxsparse.scaling.synthetic import noisy_loss

TRUTH = {"E": 1.7, "A": 420.0, "B": 1800.0, "alpha": 0.34, "beta": 0.32}


CHINCHILLA_CSV = Path(__file__).resolve().parents[1] / "assets" / "chinchilla" / "svg_extracted_data.csv"


def chinchilla_csv() -> Path:
    """Epoch AI's Chinchilla CSV, kept in the repository (tests/assets/chinchilla/README.md: source, licence)."""
    assert CHINCHILLA_CSV.is_file(), f"{CHINCHILLA_CSV} is missing from the checkout"
    return CHINCHILLA_CSV


@pytest.fixture(scope="module")
def chinchilla():
    runs = load_runs([chinchilla_csv()], chinchilla=True, drop_highest=5)
    sizes, tokens, loss, _ = runs.points(["n"])
    return sizes["n"], tokens, loss


@pytest.fixture(scope="module")
def chinchilla_fit(chinchilla):
    return fit(*chinchilla, n_kind="n")


def synthetic_grid(noise: float, seed: int = 1):
    n, d = np.meshgrid(np.geomspace(4e7, 8e9, 6), np.geomspace(8e8, 2e11, 6))
    n, d = n.ravel(), d.ravel()
    return n, d, noisy_loss(TRUTH, n, d, noise=noise, rng=np.random.default_rng(seed))


def test_chinchilla_reproduces_published_replication(chinchilla, chinchilla_fit):
    res = chinchilla_fit
    assert res.n_points == 240 == chinchilla[0].size
    assert abs(res.E - 1.82) < 0.02
    assert abs(res.alpha - 0.3478) < 0.005
    assert abs(res.beta - 0.3658) < 0.005
    assert abs(res.A / 482.01 - 1) < 0.10
    assert abs(res.B / 2085.43 - 1) < 0.10
    # Hoffmann et al.'s own numbers are not what these data give (README): the fit must not land there.
    assert abs(res.B - 410.7) > 500


def test_chinchilla_errors_are_in_loss_space(chinchilla, chinchilla_fit):
    n, d, loss = chinchilla
    err = np.abs(chinchilla_fit.predict(n, d) - loss)
    assert chinchilla_fit.mae == pytest.approx(err.mean())
    assert chinchilla_fit.max_error == pytest.approx(err.max())
    assert chinchilla_fit.rmse == pytest.approx(np.sqrt(np.mean(err**2)))
    assert chinchilla_fit.mae < 0.02


def test_batched_fit_matches_looped_scipy_recipe_on_same_starts(chinchilla):
    starts = init_grid()[::150]  # 30 starts spread over the grid
    batched = fit(*chinchilla, starts=starts)
    looped = fit_reference(*chinchilla, starts=starts)
    assert batched.objective <= looped.objective * (1 + 1e-7)
    assert batched.objective == pytest.approx(looped.objective, rel=1e-5)
    for k in ("E", "alpha", "beta"):
        assert getattr(batched, k) == pytest.approx(getattr(looped, k), abs=2e-3)
    for k in ("A", "B"):
        assert getattr(batched, k) == pytest.approx(getattr(looped, k), rel=0.03)


def test_gradient_matches_finite_differences():
    n, d, loss = synthetic_grid(noise=0.01)
    rng = np.random.default_rng(0)
    theta = np.array([[6.0, 7.5, 0.5, 0.34, 0.32], [5.5, 8.0, 0.4, 0.30, 0.36]])
    weights = rng.integers(0, 3, size=(2, n.size)).astype(float)
    logs = (np.log(n), np.log(d), np.log(loss))
    _, g = optim.value_and_grad(theta, *logs, 1e-3, weights)
    h = 1e-6
    for j in range(5):
        step = np.zeros(5)
        step[j] = h
        f_plus, _ = optim.value_and_grad(theta + step, *logs, 1e-3, weights)
        f_minus, _ = optim.value_and_grad(theta - step, *logs, 1e-3, weights)
        np.testing.assert_allclose(g[:, j], (f_plus - f_minus) / (2 * h), rtol=1e-4, atol=1e-9)


def test_noise_free_runs_give_back_the_parameters():
    n, d, loss = synthetic_grid(noise=0.0)
    res = fit(n, d, loss)
    for k, v in TRUTH.items():
        assert getattr(res, k) == pytest.approx(v, rel=2e-3), k
    assert res.max_error < 1e-4


def test_noisy_runs_recovered_within_bootstrap_intervals():
    n, d, loss = synthetic_grid(noise=0.004)
    res = fit(n, d, loss)
    boot = bootstrap(n, d, loss, fit=res, n_boot=100, seed=0)
    assert boot.samples.shape == (100, 5)
    inside = boot.contains(TRUTH)
    assert all(inside.values()), (boot.intervals, inside)
    for k, (lo, hi) in boot.intervals.items():
        assert lo < getattr(res, k) < hi  # the point estimate sits inside its own interval
    assert boot.intervals["alpha"][1] - boot.intervals["alpha"][0] < 0.1  # and the intervals say something
    assert boot.intervals["E"][1] - boot.intervals["E"][0] < 0.2


def test_leave_one_out_equals_refitting_without_the_run():
    n, d, loss = synthetic_grid(noise=0.004)
    n, d, loss = n[::3], d[::3], loss[::3]  # 12 runs
    loo = leave_one_out(n, d, loss)
    assert loo.errors.shape == (12,)
    for i in (0, 7):
        keep = np.arange(12) != i
        alone = fit(n[keep], d[keep], loss[keep])
        assert loo.predictions[i] == pytest.approx(float(alone.predict(n[i], d[i])), abs=2e-4)
    assert loo.mae == pytest.approx(np.mean(np.abs(loo.errors)))


def test_result_round_trips_through_json(tmp_path, chinchilla_fit):
    import json

    path = tmp_path / "fit.json"
    path.write_text(json.dumps(chinchilla_fit.to_dict()))
    again = ScalingLawFit.load(path)
    assert again.params() == chinchilla_fit.params()
    assert again.n_kind == "n" and again.n_points == 240
    assert float(again.predict(1e9, 2e10)) == pytest.approx(float(chinchilla_fit.predict(1e9, 2e10)))
    # size_for_loss inverts the law in N at fixed D
    target = float(again.predict(3e8, 5e10))
    assert float(again.size_for_loss(target, 5e10)) == pytest.approx(3e8, rel=1e-9)
    assert np.isinf(again.size_for_loss(again.E, 5e10))


@pytest.mark.parametrize("column,index", [("n", 2), ("d", 0), ("loss", 4)])
@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_fit_rejects_bad_values_naming_row_and_column(column, index, bad):
    n, d, loss = (v[:8].copy() for v in synthetic_grid(noise=0.0))
    {"n": n, "d": d, "loss": loss}[column][index] = bad
    with pytest.raises(ValueError, match=rf"index {index}: column '{column}'"):
        fit(n, d, loss)


def test_fit_needs_as_many_points_as_parameters():
    n, d, loss = (v[:4] for v in synthetic_grid(noise=0.0))
    with pytest.raises(ValueError, match="4 point.*at least 5"):
        fit(n, d, loss)


@pytest.mark.parametrize("column", ["n", "d"])
def test_fit_refuses_a_single_distinct_size_or_token_count(column):
    n, d = np.geomspace(4e7, 8e9, 8), np.geomspace(8e8, 2e11, 8)
    if column == "n":
        n = np.full(8, 1e8)
    else:
        d = np.full(8, 1e10)
    loss = noisy_loss(TRUTH, n, d, noise=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=f"column '{column}' has 1 distinct value .* at least 2 distinct"):
        fit(n, d, loss)


def test_ten_copies_of_one_run_are_refused_and_duplicates_warned():
    n, d, loss = synthetic_grid(noise=0.0)
    with pytest.raises(ValueError, match="1 distinct value"):
        fit(np.repeat(n[:1], 10), np.repeat(d[:1], 10), np.repeat(loss[:1], 10))
    from jaxsparse.scaling import DuplicateRunsWarning
    from jaxsparse.scaling.fitting import validate_points

    with pytest.warns(DuplicateRunsWarning, match="2 of 38 runs duplicate"):
        validate_points(np.r_[n, n[:2]], np.r_[d, d[:2]], np.r_[loss, loss[:2]])


def _duplicate_warnings(call) -> list[str]:
    import warnings

    from jaxsparse.scaling import DuplicateRunsWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, DuplicateRunsWarning)]


def test_a_fit_with_duplicate_runs_warns_exactly_once():
    n, d, loss = synthetic_grid(noise=0.01)
    n, d, loss = np.r_[n, n[:2]], np.r_[d, d[:2]], np.r_[loss, loss[:2]]
    starts = init_grid()[::50]
    for call in (lambda: fit(n, d, loss, starts=starts),
                 lambda: bootstrap(n, d, loss, n_boot=2, chunk=2),        # fits the full data itself
                 lambda: leave_one_out(n, d, loss, chunk=38)):            # likewise
        assert [m.count("2 of 38 runs duplicate") for m in _duplicate_warnings(call)] == [1]
