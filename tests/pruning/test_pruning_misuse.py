"""Library misuse: non-float leaves, NaN/Inf weights at an event, keep counts that round to 0."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsparse.pruning import (Schedule, check_events, get_masks, magnitude_pruning, scheduled_pruning,
                               sparsity_summary)
from jaxsparse.pruning.selection import prunable_flags

ONE_SHOT_AT_1 = Schedule("one_shot", 0.75, 0.1, 0.1, 1)  # one event, before step 1 of 10


def test_integer_leaves_are_never_pruned_even_when_included():
    params = {"dense": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4)},
              "table": {"index": jnp.arange(16, dtype=jnp.int32).reshape(4, 4)}}
    assert prunable_flags(params).flags == [True, False]
    assert prunable_flags(params, include="index|kernel") == (["dense/kernel", "table/index"], [True, False])
    with pytest.raises(ValueError, match="floating point"):
        prunable_flags(params, include="index")
    tx = optax.chain(optax.sgd(0.0), magnitude_pruning(ONE_SHOT_AT_1, 10, include="index|kernel"))
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, state = tx.update(zero, state, params)
    new = optax.apply_updates(params, updates)
    assert get_masks(state)["table"]["index"] is None
    np.testing.assert_array_equal(new["table"]["index"], params["table"]["index"])
    assert new["table"]["index"].dtype == jnp.int32
    assert sparsity_summary(get_masks(state)).active == 4  # 25% of the 16 float weights


def _nan_params():
    return {"fc1": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4)},
            "fc2": {"kernel": jnp.ones((4, 4)).at[1, 2].set(jnp.nan)}}


@pytest.mark.parametrize("jit", [False, True])
def test_nan_weight_at_an_event_is_reported_naming_the_leaf_and_masks_are_kept(jit):
    params = _nan_params()
    tx = optax.chain(optax.sgd(0.1), magnitude_pruning(ONE_SHOT_AT_1, 10, report="off"))  # polled here
    update = jax.jit(tx.update) if jit else tx.update
    grads = jax.tree.map(jnp.zeros_like, params)
    _, state = update(grads, tx.init(params), params)
    with pytest.raises(FloatingPointError, match=r"NaN or Inf: fc2/kernel \(") as info:
        check_events(state)
    assert "fc1" not in str(info.value)
    with pytest.raises(FloatingPointError, match="fc2/kernel"):
        get_masks(state)  # outside jit, reading the masks says so too
    masks = state[1].masks  # the event was not applied: nothing pruned from NaN-ranked weights
    assert all(bool(jnp.all(m)) for m in jax.tree.leaves(masks))


def test_nan_at_an_event_in_init_raises_at_once():
    params = _nan_params()
    with pytest.raises(FloatingPointError, match="fc2/kernel"):
        magnitude_pruning(Schedule("one_shot", 0.5, 0.0, 0.0, 1), 10).init(params)


def test_inf_from_the_update_is_caught_and_the_flag_is_sticky():
    params = {"fc": {"kernel": jnp.ones((4, 4))}}
    tx = magnitude_pruning(Schedule("one_shot", 0.75, 0.5, 0.5, 1), 10, report="off")
    update = jax.jit(tx.update)
    bad = {"fc": {"kernel": jnp.full((4, 4), jnp.inf)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    _, state = update(bad, tx.init(params), params)  # step 1 is no event: not checked
    check_events(state)
    _, state = update(bad, state._replace(count=jnp.int32(4)), params)  # the next step (5) is the event
    _, state = update(zero, state, params)  # later steps keep the flag
    with pytest.raises(FloatingPointError, match="NaN or Inf: fc/kernel"):
        check_events(state)


def test_negative_score_is_refused_at_the_event():
    params = {"fc": {"kernel": jnp.ones((4, 4))}}
    tx = scheduled_pruning(ONE_SHOT_AT_1, 10, score=lambda p, u, **_: jax.tree.map(lambda w: -w, p), report="off")
    _, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    with pytest.raises(FloatingPointError, match="score.*negative: fc/kernel"):
        check_events(state)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_a_keep_count_that_rounds_to_zero_keeps_one_weight(scope):
    """Documented in jaxsparse/pruning/event.py: never below one weight per tensor (layerwise) or
    in total (global)."""
    params = {"tiny": {"kernel": jnp.full((1, 1), 0.5)}}
    if scope == "layerwise":
        params["big"] = {"kernel": jnp.arange(1.0, 101.0).reshape(10, 10)}
    sched = Schedule("one_shot", 0.9, 0.1, 0.1, 1)  # 10% of 1 weight rounds to 0
    tx = magnitude_pruning(sched, 10, scope=scope)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, state = tx.update(zero, tx.init(params), params)
    masks = get_masks(state)
    assert bool(masks["tiny"]["kernel"][0, 0])
    new = optax.apply_updates(params, updates)
    assert float(new["tiny"]["kernel"][0, 0]) == 0.5
    if scope == "layerwise":  # the big layer gets its scheduled 10 of 100: the largest ten
        np.testing.assert_array_equal(np.asarray(masks["big"]["kernel"]).ravel(), np.arange(100) >= 90)
