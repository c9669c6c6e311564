"""Under optax.MultiSteps the transform counts optimizer updates: reading its state says so, once."""
import warnings

import jax
import jax.numpy as jnp
import optax
import pytest

from jaxsparse.pruning import Schedule, check_events, get_masks, magnitude_pruning
from jaxsparse.pruning.multi_steps import MESSAGE

PARAMS = {"kernel": jnp.arange(16.0).reshape(4, 4)}


def pruning(total_steps):
    return magnitude_pruning(Schedule("one_shot", 0.5, 0.75, 0.75, 1), total_steps)


def test_reading_the_masks_inside_multi_steps_warns_that_total_steps_counts_updates():
    tx = optax.MultiSteps(optax.chain(optax.sgd(0.1), pruning(4)), every_k_schedule=2)
    state = tx.init(PARAMS)
    with pytest.warns(UserWarning, match="counts? optimizer updates"):
        get_masks(state)
    with pytest.warns(UserWarning, match="every_k_schedule micro-steps"):
        check_events(state)
    with pytest.warns(UserWarning, match="runs inside optax.MultiSteps"):   # inside jit, when traced
        jax.jit(lambda s: jax.tree.leaves(get_masks(s)))(state)


def test_the_warning_names_the_unit_and_plain_chains_are_not_warned_about():
    assert "optimizer updates" in MESSAGE and "not micro-steps" in MESSAGE
    state = optax.chain(optax.sgd(0.1), pruning(4)).init(PARAMS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_masks(state)
        check_events(state)


def test_total_steps_in_micro_steps_never_reaches_the_schedule_under_multi_steps():
    """What the warning is about: 8 micro-steps with every_k_schedule=2 are 4 updates, so a schedule
    told total_steps=8 (micro-steps) waits for an event before update 6 that never comes; told 4
    (updates), its event comes before update 3."""
    def run(total_steps):
        tx = optax.MultiSteps(optax.chain(optax.sgd(0.1), pruning(total_steps)), every_k_schedule=2)
        state, params = tx.init(PARAMS), PARAMS
        for _ in range(8):
            updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
            params = optax.apply_updates(params, updates)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(jnp.sum(get_masks(state)["kernel"]))
    assert run(4) == 8 and run(8) == 16
