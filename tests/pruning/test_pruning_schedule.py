"""Property tests of the pruning schedules (all five kinds)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsparse.pruning import Schedule, average_param_count
from jaxsparse.pruning.schedule import KINDS


@st.composite
def schedules(draw, kinds=KINDS):
    kind = draw(st.sampled_from(kinds))
    s = 0.0 if kind == "dense" else draw(st.floats(0.0, 0.99))
    a = draw(st.floats(0.0, 1.0))
    b = draw(st.floats(a, 1.0))
    interval = draw(st.integers(1, 50))
    total = draw(st.integers(1, 3000))
    return Schedule(kind, s, a, b, interval), total


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_density_is_one_before_start_non_increasing_and_final_from_last_event(case):
    sched, total = case
    steps = np.arange(total)
    dens = sched.density_at(steps, total)
    assert np.all(np.diff(dens) <= 1e-12), "density must never increase"
    events = sched.event_steps(total)
    if len(events) == 0:
        np.testing.assert_array_equal(dens, 1.0)
        return
    t_s, t_e = sched.window(total)
    assert events[0] == t_s and events[-1] == (t_e if sched.kind != "one_shot" else t_s)
    np.testing.assert_array_equal(dens[steps < t_s], 1.0)
    np.testing.assert_array_equal(dens[steps >= events[-1]], 1.0 - sched.final_sparsity)
    assert all(b - a <= sched.interval for a, b in zip(events[:-1], events[1:]))
    # events are exactly where the density may change
    changes = np.flatnonzero(np.diff(np.concatenate([[1.0], dens])) != 0)
    assert set(changes) <= set(events.tolist())


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_exact_average_matches_closed_form_to_order_interval_over_T(case):
    sched, total = case
    exact = sched.average_density(total)
    np.testing.assert_allclose(exact, np.mean(sched.density_at(np.arange(total), total)),
                               rtol=0, atol=1e-12)
    closed = sched.average_density_closed_form(total)
    bound = 2.0 * (sched.interval + 1) / total
    assert abs(exact - closed) <= bound, (exact, closed, bound)


@pytest.mark.parametrize("kind", KINDS)
def test_closed_form_converges_as_T_grows(kind):
    s = 0.0 if kind == "dense" else 0.8
    sched = Schedule(kind, s, 0.25, 0.75, 10)
    errs = [abs(sched.average_density(t) - sched.average_density_closed_form(t))
            for t in (1_000, 10_000, 100_000)]
    assert errs[2] <= errs[0] / 50 + 1e-12
    # the fraction form (no T) agrees in the limit, too
    assert abs(sched.average_density(100_000) - sched.average_density_closed_form()) < 1e-3


def test_paper_geometric_closed_form_value():
    # a=0.25, b=0.75, S=0.8: 0.25 + 0.5*0.8/ln(5) + 0.25*0.2
    sched = Schedule("geometric", 0.8, 0.25, 0.75, 1)
    want = 0.25 + 0.5 * 0.8 / math.log(5) + 0.25 * 0.2
    assert sched.average_density_closed_form() == pytest.approx(want, abs=1e-12)
    assert sched.average_density(200_000) == pytest.approx(want, abs=2e-5)


@settings(max_examples=20, deadline=None)
@given(schedules())
def test_density_at_inside_jit_matches_host(case):
    sched, total = case
    steps = np.arange(0, total, max(1, total // 37))
    traced = jax.jit(lambda t: sched.density_at(t, total))(jnp.asarray(steps))
    np.testing.assert_allclose(np.asarray(traced), sched.density_at(steps, total), rtol=1e-6)
    ev = jax.jit(lambda t: sched.is_event(t, total))(jnp.asarray(steps))
    np.testing.assert_array_equal(np.asarray(ev), np.isin(steps, sched.event_steps(total)))


def test_geometric_removes_equal_fraction_per_event():
    sched = Schedule("geometric", 0.9, 0.2, 0.6, 5)
    d = sched.event_densities(1000)
    ratios = d[1:] / d[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)
    assert d[-1] == pytest.approx(0.1, abs=1e-15)


def test_end_at_one_lands_last_event_inside_the_run():
    sched = Schedule("linear", 0.5, 0.0, 1.0, 7)
    assert sched.event_steps(100)[-1] == 99
    assert sched.density_at(99, 100) == pytest.approx(0.5)


def test_average_param_count_counts_non_prunable_in_full():
    sched = Schedule("one_shot", 0.5, 0.5, 0.5, 1)
    n = average_param_count(sched, 100, n_prunable=1000, n_other=10)
    assert n.prunable == pytest.approx(750.0)
    assert n.total == pytest.approx(760.0)


@pytest.mark.parametrize("kwargs, field", [
    (dict(kind="square"), "kind"),
    (dict(final_sparsity=1.0), "final_sparsity"),
    (dict(final_sparsity=-0.1), "final_sparsity"),
    (dict(start=0.8, end=0.5), "start"),
    (dict(start=-0.1), "start"),
    (dict(end=1.5), "end"),
    (dict(interval=0), "interval"),
    (dict(interval=2.5), "interval"),
    (dict(kind="dense", final_sparsity=0.5), "final_sparsity"),
])
def test_bad_schedule_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Schedule(**kwargs)


def test_schedule_that_does_not_fit_is_rejected():
    with pytest.raises(ValueError, match="interval"):
        Schedule("geometric", 0.5, 0.25, 0.75, 100).check_fits(100)
    with pytest.raises(ValueError, match="total_steps"):
        Schedule("geometric", 0.5).average_density(0)
