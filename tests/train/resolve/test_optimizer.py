"""The trainer's optimizer takes its pruning score from the registry by the config key
`pruning.score`: the built-in scores, an unknown name refused, and a score registered in this file
alone (no package file touched) chosen by config and trained with through `train()`."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_utils import config_in, restore_raw_state

from jaxsparse.errors import ConfigError
from jaxsparse.pruning import Schedule, get_masks, scheduled_pruning
from jaxsparse.pruning.scores import register_score, registered_score
from jaxsparse.pruning.selection import prunable_flags
from jaxsparse.train import base_config, train, validate
from jaxsparse.train.resolve.optimizer import learning_rate_schedule, make_optimizer, pruning_schedule

pytestmark = pytest.mark.trainer

TOTAL = 10
ONE_SHOT_AT_1 = Schedule("one_shot", 0.7, 0.1, 0.1, 1)  # one event, before step 1


# The new score, registered by this file alone. It keeps the LAST weights of every prunable tensor
# in flat order, a pattern no magnitude could give, and it needs this step's raw gradient (it refuses
# to run without one), so the trainer must read `needs_gradients` from the registry to train with it.
BUILT_WITH_SEEDS = []


def _build_keep_last(seed: int):
    BUILT_WITH_SEEDS.append(seed)

    def keep_last(params, updates, *, grads=None, **_):
        if grads is None:
            raise ValueError("keep_last needs grads=: the optimizer was not wrapped in with_gradients")
        return jax.tree.map(lambda w: jnp.arange(w.size, dtype=jnp.float32).reshape(w.shape) / w.size, params)

    return keep_last


register_score("keep_last", _build_keep_last, needs_gradients=True)


def _params_and_grads():
    keys = jax.random.split(jax.random.key(0), 4)
    params = {name: {"kernel": jax.random.normal(keys[i], (16, 8)) * (i + 1), "bias": jnp.zeros(8)}
              for i, name in enumerate("ab")}
    grads = {name: {"kernel": jax.random.normal(keys[2 + i], (16, 8)), "bias": jnp.zeros(8)}
             for i, name in enumerate("ab")}
    return params, grads


def _masks_after_one_event(tx, params, gradients, **extra_args):
    state = tx.init(params)
    step = jax.jit(lambda g, s, p, kw: tx.update(g, s, p, **kw))
    _, state = step(gradients, state, params, extra_args)
    masks = get_masks(state)
    return [np.asarray(masks[name]["kernel"]) for name in "ab"]


@pytest.mark.parametrize("name", ["magnitude", "random", "saliency", "keep_last"])
def test_the_config_key_pruning_score_builds_the_registered_score(name):
    config = base_config()
    config.pruning.score = name
    config.pruning.update(schedule="one_shot", start=0.1, end=0.1, interval=1, final_sparsity=0.7)
    config.train.update(steps=TOTAL, grad_clip=0.0, weight_decay=0.0)
    validate(config)
    tx = make_optimizer(config, TOTAL, pruning_schedule(config), learning_rate_schedule(config, TOTAL))
    params, grads = _params_and_grads()
    masks = _masks_after_one_event(tx, params, grads)  # the trainer's optimizer passes grads itself
    # the same masks as the library's transform with that score, after the same AdamW step (lr 0 at step 1)
    reference = optax.chain(optax.adamw(0.0, b1=config.train.b1, b2=config.train.b2, eps=config.train.eps,
                                        weight_decay=0.0),
                            scheduled_pruning(ONE_SHOT_AT_1, TOTAL, score=registered_score(name).build(config.seed)))
    for m, e in zip(masks, _masks_after_one_event(reference, params, grads, grads=grads)):
        np.testing.assert_array_equal(m, e)


def test_an_unknown_score_is_refused_naming_the_registered_ones():
    config = base_config()
    config.train.steps = 100
    config.pruning.score = "wanda"
    with pytest.raises(ConfigError, match="pruning.score='wanda'.*'magnitude'.*'random'.*'saliency'.*'keep_last'"):
        validate(config)


def test_a_score_registered_in_one_test_file_is_chosen_by_config_and_trains(corpus, data_dir, tmp_path):
    steps, sparsity = 8, 0.5
    config = config_in(corpus, data_dir, **{"train.steps": steps, "pruning.score": "keep_last",
                                            "pruning.schedule": "one_shot", "pruning.final_sparsity": sparsity,
                                            "pruning.start": 0.5, "pruning.end": 0.5, "seed": 7,
                                            "checkpoint.every_steps": steps, "checkpoint.async_save": False,
                                            "eval.every_steps": 0})
    BUILT_WITH_SEEDS.clear()
    train(config, str(tmp_path / "run"))
    assert BUILT_WITH_SEEDS and set(BUILT_WITH_SEEDS) == {7}  # built from the run's seed
    params = restore_raw_state(tmp_path / "run", steps)["params"]
    paths, flags = prunable_flags(params)
    kernels = [w for w, f in zip(jax.tree.leaves(params), flags) if f]
    assert len(kernels) >= 4
    for path, w in zip([p for p, f in zip(paths, flags) if f], kernels):
        zero = np.asarray(w).ravel() == 0
        cut = int(np.argmin(zero))  # the pruned weights are exactly the first ones in flat order
        assert zero[:cut].all() and not zero[cut:].any(), path
        assert cut / zero.size == pytest.approx(sparsity, abs=0.01), path
