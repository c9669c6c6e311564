"""Pluggable pruning scores: each checked against an explicit NumPy top-k of its own formula."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsparse.pruning import (Schedule, get_masks, magnitude_pruning, random_scores, saliency, scheduled_pruning,
                               sparsity_summary, with_gradients)
from jaxsparse.pruning.scores import magnitude, register_score, registered_score, score_names

TOTAL = 10
ONE_SHOT_AT_1 = Schedule("one_shot", 0.7, 0.1, 0.1, 1)  # one event, before step 1
SHAPES = {"a": {"kernel": (16, 24)}, "b": {"kernel": (24, 8)}, "c": {"kernel": (8, 8)}}


def make_params(seed=0):
    keys = iter(jax.random.split(jax.random.key(seed), 10))
    params = {name: {"kernel": jax.random.normal(next(keys), shape["kernel"]) * (i + 1),
                     "bias": jnp.zeros(shape["kernel"][-1])}
              for i, (name, shape) in enumerate(SHAPES.items())}
    grads = jax.tree.map(lambda w: jax.random.normal(next(keys), w.shape), params)
    return params, grads


def kernels(tree):
    return [np.asarray(tree[name]["kernel"]) for name in SHAPES]


def reference_masks(scores, density, scope="global"):
    """Explicit top-k: keep every score >= the k-th largest (k = round(density * size), >= 1)."""
    if scope == "layerwise":
        return [reference_masks([s], density)[0] for s in scores]
    flat = np.concatenate([s.ravel() for s in scores]).astype(np.float32)
    k = max(1, int(np.floor(density * flat.size + 0.5)))
    threshold = np.sort(flat)[::-1][k - 1]
    return [s.astype(np.float32) >= threshold for s in scores]


def one_event(tx, params, gradients, **extra_args):
    """init, then one jitted update whose next step (1) is the event; the masks after it."""
    state = tx.init(params)
    step = jax.jit(lambda g, s, p, kw: tx.update(g, s, p, **kw))
    updates, state = step(gradients, state, params, extra_args)
    return optax.apply_updates(params, updates), get_masks(state)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_default_score_is_magnitude_and_matches_explicit_abs_topk(scope):
    params, grads = make_params()
    sgd = optax.sgd(0.5)
    new, masks = one_event(optax.chain(sgd, magnitude_pruning(ONE_SHOT_AT_1, TOTAL, scope=scope)),
                           params, grads)
    after_update = kernels(optax.apply_updates(params, jax.tree.map(lambda g: -0.5 * g, grads)))
    expected = reference_masks([np.abs(w) for w in after_update], 0.3, scope)
    for m, e in zip(kernels(masks), expected):
        np.testing.assert_array_equal(m, e)
    # scheduled_pruning's default score and its explicit score=magnitude give bitwise the same masks
    # and weights as magnitude_pruning
    for tx in (scheduled_pruning(ONE_SHOT_AT_1, TOTAL, scope=scope),
               scheduled_pruning(ONE_SHOT_AT_1, TOTAL, scope=scope, score=magnitude)):
        new2, masks2 = one_event(optax.chain(sgd, tx), params, grads)
        for a, b in zip(jax.tree.leaves(masks) + jax.tree.leaves(new),
                        jax.tree.leaves(masks2) + jax.tree.leaves(new2)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_magnitude_pruning_takes_no_score_and_names_scheduled_pruning():
    with pytest.raises(TypeError, match=r"takes no score=.*scheduled_pruning\(schedule, total_steps, score=\.\.\.\)"):
        magnitude_pruning(ONE_SHOT_AT_1, TOTAL, score=saliency)


def test_random_score_is_a_pure_function_of_seed_step_and_leaf():
    params, grads = make_params()
    tx = optax.chain(optax.sgd(0.1), scheduled_pruning(ONE_SHOT_AT_1, TOTAL, score=random_scores(3)))
    _, masks = one_event(tx, params, grads)
    # reference: uniform draws keyed by fold_in(fold_in(key(seed), step), leaf index)
    leaves = jax.tree.leaves(params)
    key = jax.random.fold_in(jax.random.key(3), 1)
    draws = [np.asarray(jax.random.uniform(jax.random.fold_in(key, i), w.shape)) for i, w in enumerate(leaves)]
    kernel_idx = [i for i, (path, _) in enumerate(jax.tree_util.tree_flatten_with_path(params)[0])
                  if "kernel" in jax.tree_util.keystr(path)]
    expected = reference_masks([draws[i] for i in kernel_idx], 0.3)
    for m, e in zip(kernels(masks), expected):
        np.testing.assert_array_equal(m, e)
    # the weights do not matter; another seed prunes other weights
    _, same = one_event(tx, make_params(seed=1)[0], grads)
    assert all(np.array_equal(a, b) for a, b in zip(kernels(masks), kernels(same)))
    other = optax.chain(optax.sgd(0.1), scheduled_pruning(ONE_SHOT_AT_1, TOTAL, score=random_scores(4)))
    _, different = one_event(other, params, grads)
    assert not all(np.array_equal(a, b) for a, b in zip(kernels(masks), kernels(different)))


def test_saliency_scores_weight_times_raw_gradient():
    params, grads = make_params()
    lr = 0.3
    tx = with_gradients(optax.chain(optax.sgd(lr), scheduled_pruning(ONE_SHOT_AT_1, TOTAL, score=saliency)))
    _, masks = one_event(tx, params, grads)
    after = kernels(optax.apply_updates(params, jax.tree.map(lambda g: -lr * g, grads)))
    expected = reference_masks([np.abs(w * g) for w, g in zip(after, kernels(grads))], 0.3)
    for m, e in zip(kernels(masks), expected):
        np.testing.assert_array_equal(m, e)
    # the same masks when the caller passes grads= itself
    plain = optax.chain(optax.sgd(lr), scheduled_pruning(ONE_SHOT_AT_1, TOTAL, score=saliency))
    _, masks2 = one_event(plain, params, grads, grads=grads)
    assert all(np.array_equal(a, b) for a, b in zip(kernels(masks), kernels(masks2)))


def test_saliency_without_gradients_is_a_clear_error():
    params, grads = make_params()
    tx = optax.chain(optax.sgd(0.1), scheduled_pruning(ONE_SHOT_AT_1, TOTAL, score=saliency))
    with pytest.raises(ValueError, match="with_gradients"):
        one_event(tx, params, grads)
    at_init = scheduled_pruning(Schedule("one_shot", 0.5, 0.0, 0.0, 1), TOTAL, score=saliency)
    with pytest.raises(ValueError, match="step 0"):
        at_init.init(params)


def test_extra_args_reach_a_user_score_through_chain_and_n_of_m():
    """A Wanda-style score |w| * ||x|| with the input-feature norms given to tx.update."""
    def wanda(params, updates, *, feature_norms, **_):
        return {name: {"kernel": jnp.abs(p["kernel"]) * feature_norms[name][:, None], "bias": None}
                for name, p in params.items()}

    params, grads = make_params()
    norms = {name: jnp.arange(1, s["kernel"][0] + 1, dtype=jnp.float32) ** 2 for name, s in SHAPES.items()}
    expected_scores = [np.abs(w) * np.asarray(norms[n])[:, None] for n, w in zip(SHAPES, kernels(params))]
    sched = Schedule("one_shot", 0.5, 0.1, 0.1, 1)
    tx = optax.chain(optax.sgd(0.0), scheduled_pruning(sched, TOTAL, score=wanda))
    _, masks = one_event(tx, params, grads, feature_norms=norms)
    for m, e in zip(kernels(masks), reference_masks(expected_scores, 0.5)):
        np.testing.assert_array_equal(m, e)

    tx = optax.chain(optax.sgd(0.0), scheduled_pruning(sched, TOTAL, score=wanda, structure="2:4"))
    _, masks = one_event(tx, params, grads, feature_norms=norms)
    for m, s in zip(kernels(masks), expected_scores):  # the 2 largest scores of every 4 fan-in rows
        groups = s.reshape(-1, 4, s.shape[1])
        expected = np.zeros_like(groups, bool)
        np.put_along_axis(expected, np.argsort(-groups, axis=1)[:, :2], True, axis=1)
        np.testing.assert_array_equal(m, expected.reshape(m.shape))


def test_get_masks_finds_any_score_nested_in_multisteps_and_inject_hyperparams():
    params, _ = make_params()
    sched = Schedule("one_shot", 0.5, 0.0, 0.0, 1)
    for tx in (optax.MultiSteps(optax.chain(optax.sgd(0.1), scheduled_pruning(sched, 10, score=random_scores(0))),
                                every_k_schedule=2),
               optax.inject_hyperparams(lambda lr: optax.chain(
                   optax.sgd(lr), scheduled_pruning(sched, 10, score=random_scores(0))))(lr=0.1)):
        s = sparsity_summary(get_masks(tx.init(params)))
        assert s.sparsity == pytest.approx(0.5, abs=1.0 / s.prunable)


def test_a_score_with_a_wrong_leaf_is_refused_naming_it():
    params, grads = make_params()

    def ints(p, u, **_):
        return jax.tree.map(lambda w: jnp.ones(w.shape, jnp.int32), p)

    def missing(p, u, **_):
        return {k: {"kernel": None, "bias": None} for k in p}

    for score, err, text in ((ints, TypeError, "a/kernel has dtype int32"), (missing, TypeError, "a/kernel")):
        tx = optax.chain(optax.sgd(0.1), scheduled_pruning(ONE_SHOT_AT_1, TOTAL, score=score))
        with pytest.raises(err, match=text):
            one_event(tx, params, grads)
    with pytest.raises(TypeError, match="score"):
        scheduled_pruning(ONE_SHOT_AT_1, TOTAL, score="magnitude")


def test_the_registry_holds_the_built_in_scores_and_what_each_needs():
    assert score_names()[:3] == ("magnitude", "random", "saliency")
    assert registered_score("magnitude").build(0) is magnitude
    assert registered_score("saliency").build(0) is saliency
    assert [registered_score(n).needs_gradients for n in ("magnitude", "random", "saliency")] == [False, False, True]
    # "random" is built from the seed: the same seed gives the same draw, another seed another one
    params, _ = make_params()
    step = jnp.asarray(1, jnp.int32)
    draw = {seed: jax.tree.leaves(registered_score("random").build(seed)(params, step=step)) for seed in (3, 4)}
    reference = jax.tree.leaves(random_scores(3)(params, step=step))
    assert all(np.array_equal(a, b) for a, b in zip(draw[3], reference))
    assert not all(np.array_equal(a, b) for a, b in zip(draw[3], draw[4]))


def test_the_registry_refuses_unknown_taken_and_bad_entries():
    with pytest.raises(ValueError, match="score='wanda' is unknown; allowed: magnitude, random, saliency"):
        registered_score("wanda")
    with pytest.raises(ValueError, match="'saliency' is already registered"):
        register_score("saliency", lambda seed: magnitude)
    with pytest.raises(TypeError, match="build must be a function"):
        register_score("not_callable", magnitude(jnp.ones(2)))
    with pytest.raises(ValueError, match="non-empty string"):
        register_score("", lambda seed: magnitude)
    assert "not_callable" not in score_names() and "" not in score_names()
