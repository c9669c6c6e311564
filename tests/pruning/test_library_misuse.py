"""Misuse a library user meets: the transform not last in the chain, a tensor emptied by the global
threshold (and the `min_density` floor against it), n:m on kernels of rank 3, NNX state boxes."""
import warnings
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsparse.pruning import Schedule, check_events, get_masks, magnitude_pruning, mask_collection, sparsity_summary
from jaxsparse.pruning import fanin
from jaxsparse.pruning.linen import MaskedDenseGeneral

T = 20
SCHED = Schedule("geometric", 0.75, 0.2, 0.6, 4)  # events before steps 4, 8, 12


def params_and_grads(seed=0):
    rng = np.random.default_rng(seed)
    params = {"fc1": {"kernel": jnp.asarray(rng.normal(size=(16, 32)), jnp.float32)},
              "head": {"kernel": jnp.asarray(rng.normal(size=(32, 4)) * 0.01, jnp.float32)}}
    grads = [jax.tree.map(lambda w: jnp.asarray(rng.normal(size=w.shape), jnp.float32), params)
             for _ in range(T)]
    return params, grads


def run(tx, steps, jit=True, params_and_grads_=None):
    params, grads = params_and_grads_ or params_and_grads()
    state = tx.init(params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s
    step = jax.jit(step) if jit else step
    for t in range(steps):
        params, state = step(params, state, grads[t])
    return params, state


@pytest.mark.parametrize("schedule, first_event", [(SCHED, 4), (Schedule("one_shot", 0.75, 0.5, 0.5, 1), 10)],
                         ids=["geometric", "one_shot"])
@pytest.mark.parametrize("jit", [True, False])
def test_transform_first_in_the_chain_is_an_error_right_after_the_first_event(jit, schedule, first_event):
    tx = optax.chain(magnitude_pruning(schedule, T, report="off"), optax.adamw(1e-2))  # polled here
    _, state = run(tx, first_event, jit)  # the first event's update ran: the next update checks it
    get_masks(state)
    _, state = run(tx, first_event + 1, jit)  # weights that event pruned were not 0 afterwards
    with pytest.raises(ValueError, match=r"must be the LAST element of the optax chain.*fc1/kernel"):
        get_masks(state)
    with pytest.raises(ValueError, match="must be the LAST"):
        sparsity_summary(get_masks(state))


def test_transform_last_in_the_chain_is_not_flagged_also_in_bfloat16_and_multisteps():
    params, grads = params_and_grads()
    params = jax.tree.map(lambda w: w.astype(jnp.bfloat16), params)
    # accumulating 2 micro-batches per update: T // 2 updates, the schedule's steps count updates
    inner = optax.chain(optax.adamw(1e-2), magnitude_pruning(SCHED, T // 2, min_density=0.05))
    tx = optax.MultiSteps(inner, every_k_schedule=2)
    _, state = run(tx, T, params_and_grads_=(params, grads))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the one warning MultiSteps gets (total_steps counts updates), silenced as docs/pruning.md says
        warnings.filterwarnings("ignore", message="magnitude_pruning runs inside optax.MultiSteps")
        check_events(state)
    assert sparsity_summary(get_masks(state)).sparsity == pytest.approx(0.75, abs=0.01)


def test_a_tensor_emptied_by_the_global_threshold_is_warned_about_by_name():
    tx = optax.chain(optax.sgd(1e-3), magnitude_pruning(SCHED, T))
    _, state = run(tx, T)
    with pytest.warns(UserWarning, match=r"pruning emptied head/kernel: every weight.*min_density="):
        masks = get_masks(state)
    assert not np.any(np.asarray(masks["head"]["kernel"]))


def test_min_density_keeps_a_floor_per_tensor_at_the_same_total():
    tx = optax.chain(optax.sgd(1e-3), magnitude_pruning(SCHED, T, min_density=0.1))
    params, state = run(tx, T)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = sparsity_summary(get_masks(state))
    head = report.tensors["head/kernel"]
    assert head.active == int(np.ceil(0.1 * head.size))  # the floor binds: the smallest weights
    assert report.active == round(0.25 * report.prunable)  # paid for by fc1: total unchanged
    w, m = np.asarray(params["head"]["kernel"]), np.asarray(get_masks(state)["head"]["kernel"])
    assert np.all(w[~m] == 0.0) and np.abs(w[m]).min() >= np.abs(w[~m]).max()


@pytest.mark.parametrize("kwargs, match", [
    ({"min_density": 0.5}, r"min_density=0.5 must be a number in \[0, 0.25\]"),
    ({"min_density": -0.1}, "min_density=-0.1 must be"),
    ({"min_density": 0.1, "scope": "layerwise"}, "min_density=0.1 applies to scope='global'"),
])
def test_bad_min_density_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        magnitude_pruning(SCHED, T, **kwargs)


def reference_n_of_m(scores, keep, m, axes):
    """Numpy: keep the `keep` largest |score| of every m consecutive entries of the flattened fan-in."""
    others = [a for a in range(scores.ndim) if a not in axes]
    moved = np.transpose(np.abs(scores), list(axes) + others)
    flat = moved.reshape(-1, m, int(np.prod([scores.shape[a] for a in others])))
    order = np.argsort(-flat, axis=1, kind="stable")
    mask = np.zeros_like(flat, bool)
    np.put_along_axis(mask, order[:, :keep], True, axis=1)
    return np.transpose(mask.reshape(moved.shape), np.argsort(list(axes) + others))


@pytest.mark.parametrize("shape, axes", [((8, 2, 4), (0,)), ((2, 4, 8), (0, 1)), ((3, 8, 5), (1,)),
                                         ((8, 6), (0,))])
def test_n_of_m_groups_along_the_given_fan_in_axes(shape, axes):
    scores = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    got = fanin.n_of_m_mask(scores, jnp.ones(shape, bool), jnp.int32(2), 4, axes)
    np.testing.assert_array_equal(np.asarray(got), reference_n_of_m(np.asarray(scores), 2, 4, axes))


def test_fan_in_axes_are_checked_naming_the_kernel():
    w = jnp.ones((8, 2, 4))
    assert fanin.resolve(None, "d/kernel", jnp.ones((8, 4)), 4) == (0,)
    assert fanin.resolve(lambda p, x: (-3, -2), "o/kernel", w, 4) == (0, 1)
    for given, match in ((None, "ambiguous"), ((0, 1, 2), "leave at least one output axis"),
                         (3, "out of range"), ((0, 0), "distinct"), ("0", "int")):
        with pytest.raises(ValueError, match=f"q/kernel.*{match}|{match}.*q/kernel"):
            fanin.resolve(lambda p, x, g=given: g, "q/kernel", w, 4)


class NNXModel(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.out = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


@pytest.mark.parametrize("pure", [True, False])
def test_nnx_state_with_and_without_as_pure_is_named_by_module_path(pure):
    model = NNXModel(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.chain(optax.adam(1e-2), magnitude_pruning(SCHED, T, include="kernel$")),
                              wrt=nnx.Param)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8)), jnp.float32)

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)

    for _ in range(T):
        step(model, optimizer)
    state = nnx.as_pure(optimizer.opt_state) if pure else optimizer.opt_state
    report = sparsity_summary(get_masks(state))
    assert set(report.tensors) == {"hidden/kernel", "out/kernel"}
    assert report.sparsity == pytest.approx(0.75, abs=1 / report.prunable)
    kernels = sparsity_summary(nnx.state(model, nnx.Param), include="kernel$").tensors
    assert set(kernels) == {"hidden/kernel", "out/kernel"}
    w = np.asarray(model.hidden.kernel[...])
    m = np.asarray(jax.tree.leaves(get_masks(state)["hidden"]["kernel"])[0])
    assert np.all(w[~m] == 0.0)


class QKV(NamedTuple):
    query: jax.Array
    key: jax.Array
    value: jax.Array


def test_a_field_named_value_keeps_its_name_where_a_box_does_not():
    rng = np.random.default_rng(2)
    attn = QKV(*(jnp.asarray(rng.normal(size=(8, 8)), jnp.float32) for _ in range(3)))
    params = {"attn": attn, "out": nn.Partitioned(jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
                                                  names=("embed_in", "vocab"))}
    tx = magnitude_pruning(Schedule("one_shot", 0.5, 0.0, 0.0, 1), 4, include="value$|out$")
    masks = get_masks(tx.init(params))
    assert set(sparsity_summary(masks).tensors) == {"attn/value", "out"}
    collection = mask_collection(masks)
    assert set(collection) == {"attn", "out"} and set(collection["attn"]) == {"value"}
    assert collection["out"].shape == (8, 4) and collection["attn"]["value"].shape == (8, 8)


@pytest.mark.parametrize("features, axis, x_shape", [((4, 2), -1, (3, 8)), (8, (-2, -1), (3, 4, 2)),
                                                    ((2, 3), (1, 2), (5, 4, 2, 6))])
def test_masked_dense_general_is_dense_general_with_all_true_masks(features, axis, x_shape):
    x = jnp.asarray(np.random.default_rng(3).normal(size=x_shape), jnp.float32)
    ours, theirs = MaskedDenseGeneral(features, axis=axis), nn.DenseGeneral(features, axis=axis)
    variables, reference = ours.init(jax.random.key(0), x), theirs.init(jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, variables["params"]) == jax.tree.map(jnp.shape, reference)
    np.testing.assert_array_equal(variables["params"]["kernel"], reference["kernel"])
    np.testing.assert_allclose(ours.apply(variables, x), theirs.apply({"params": variables["params"]}, x),
                               rtol=1e-6, atol=1e-6)
    assert bool(jnp.all(variables["masks"]["kernel"]))
