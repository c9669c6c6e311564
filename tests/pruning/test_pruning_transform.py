"""The optax pruning transform training a Flax Linen MLP whose kernels read a `masks` collection."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsparse.pruning import (Schedule, get_masks, magnitude_pruning, mask_collection,
                               sparsity_summary)


class MaskedDense(nn.Module):
    features: int
    scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.variance_scaling(self.scale, "fan_in", "normal")
        kernel = self.param("kernel", init, (x.shape[-1], self.features))
        if self.has_variable("masks", "kernel") or self.is_initializing():
            mask = self.variable("masks", "kernel", jnp.ones, kernel.shape, bool).value
            kernel = kernel * mask
        return x @ kernel + self.param("bias", nn.initializers.zeros, (self.features,))


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Embed(16, 32, name="embed")(x).mean(axis=1)
        x = nn.relu(MaskedDense(64, scale=1.0, name="fc1")(x))
        x = nn.relu(MaskedDense(64, scale=8.0, name="fc2")(x))  # larger weights: global scope
        return MaskedDense(8, scale=0.5, name="head")(x)       # prunes fc2 less


TOTAL = 60
SCHED = Schedule("geometric", 0.75, 0.25, 0.75, 5)


def make_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, size=(TOTAL, 32, 4))
    y = rng.integers(0, 8, size=(TOTAL, 32))
    return jnp.asarray(x), jnp.asarray(y)


def train(tx, record=None, steps=TOTAL):
    model = MLP()
    xs, ys = make_data()
    params = model.init(jax.random.key(0), xs[0])["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            masks = mask_collection(get_masks(opt_state))
            logits = model.apply({"params": p, "masks": masks}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for t in range(steps):
        params, opt_state, _ = step(params, opt_state, xs[t], ys[t])
        if record is not None:
            record(t + 1, params, opt_state)
    return params, opt_state


def pruned_pairs(params, masks):
    """(weights, mask) numpy pairs of the prunable leaves."""
    leaves = jax.tree.leaves(params)
    ms = jax.tree.structure(params).flatten_up_to(masks)
    return [(np.asarray(w), np.asarray(m)) for w, m in zip(leaves, ms) if m is not None]


def test_mlp_follows_schedule_with_zero_pruned_weights_and_monotone_masks():
    tx = optax.chain(optax.adamw(1e-2, weight_decay=0.1), magnitude_pruning(SCHED, TOTAL))
    seen = {"prev": None, "events": 0}

    def record(step, params, opt_state):
        pairs = pruned_pairs(params, get_masks(opt_state))
        for w, m in pairs:  # pruned weights are exactly 0.0 after every step
            assert np.all(w[~m] == 0.0)
        if seen["prev"] is not None:  # masks only shrink
            for (_, m), old in zip(pairs, seen["prev"]):
                assert not np.any(m & ~old)
        seen["prev"] = [m for _, m in pairs]
        if step < TOTAL and SCHED.is_event(step, TOTAL):
            # realised sparsity equals the schedule, up to weights tied at the threshold
            seen["events"] += 1
            n = sum(m.size for _, m in pairs)
            active = sum(int(m.sum()) for _, m in pairs)
            k = int(np.floor(SCHED.density_at(step, TOTAL) * n + 0.5))
            threshold = min(np.abs(w[m]).min() for w, m in pairs)
            ties = sum(int(np.sum(np.abs(w[m]) == threshold)) for w, m in pairs)
            assert k <= active <= k + ties - 1

    params, opt_state = train(tx, record)
    assert seen["events"] == len(SCHED.event_steps(TOTAL))
    final = sparsity_summary(get_masks(opt_state))
    assert final.sparsity == pytest.approx(SCHED.final_sparsity, abs=1.0 / final.prunable)
    # the params agree with the masks (and embedding/bias are untouched by pruning)
    assert sparsity_summary(params).active == final.active
    assert set(final.tensors) == {"fc1/kernel", "fc2/kernel", "head/kernel"}
    # global scope: per-layer sparsities differ
    per_layer = [t.sparsity for t in final.tensors.values()]
    assert max(per_layer) - min(per_layer) > 0.1


def test_layerwise_scope_gives_each_tensor_the_scheduled_sparsity():
    tx = optax.chain(optax.adamw(1e-2), magnitude_pruning(SCHED, TOTAL, scope="layerwise"))
    _, opt_state = train(tx)
    for name, t in sparsity_summary(get_masks(opt_state)).tensors.items():
        assert t.sparsity == pytest.approx(0.75, abs=1.0 / t.size), name


def test_n_of_m_keeps_exactly_n_in_every_group():
    sched = Schedule("geometric", 0.5, 0.25, 0.75, 5)
    tx = optax.chain(optax.adamw(1e-2), magnitude_pruning(sched, TOTAL, structure="2:4"))
    params, opt_state = train(tx)
    for _, m in pruned_pairs(params, get_masks(opt_state)):
        groups = m.reshape(m.shape[0] // 4, 4, m.shape[1]).sum(axis=1)
        np.testing.assert_array_equal(groups, 2)


def test_event_at_step_zero_prunes_at_init_and_get_masks_finds_nested_state():
    sched = Schedule("one_shot", 0.5, 0.0, 0.0, 1)
    inner = optax.chain(optax.sgd(0.1), magnitude_pruning(sched, 10))
    for tx in (optax.MultiSteps(inner, every_k_schedule=2),
               optax.inject_hyperparams(lambda lr: optax.chain(
                   optax.sgd(lr), magnitude_pruning(sched, 10)))(lr=0.1)):
        params = MLP().init(jax.random.key(0), jnp.zeros((2, 4), jnp.int32))["params"]
        s = sparsity_summary(get_masks(tx.init(params)))
        assert s.sparsity == pytest.approx(0.5, abs=1.0 / s.prunable)


def test_masks_absent_for_non_prunable_leaves_and_collection_drops_them():
    params = MLP().init(jax.random.key(0), jnp.zeros((2, 4), jnp.int32))["params"]
    state = magnitude_pruning(SCHED, TOTAL).init(params)
    masks = get_masks(state)
    assert masks["embed"]["embedding"] is None and masks["fc1"]["bias"] is None
    assert masks["fc1"]["kernel"].dtype == jnp.bool_
    assert mask_collection(masks) == {k: {"kernel": masks[k]["kernel"]}
                                      for k in ("fc1", "fc2", "head")}


def test_include_exclude_override_default_rule():
    params = MLP().init(jax.random.key(0), jnp.zeros((2, 4), jnp.int32))["params"]
    masks = get_masks(magnitude_pruning(SCHED, TOTAL, exclude="head").init(params))
    assert masks["head"]["kernel"] is None and masks["fc1"]["kernel"] is not None
    masks = get_masks(magnitude_pruning(SCHED, TOTAL, include="fc2/kernel").init(params))
    assert [k for k, v in masks.items() if v.get("kernel") is not None] == ["fc2"]


@pytest.mark.parametrize("kwargs, field", [
    (dict(scope="per_row"), "scope"),
    (dict(structure="4:4"), "structure"),
    (dict(structure="2-4"), "structure"),
    (dict(structure="1:4"), "final_sparsity"),  # 1:4 needs final_sparsity 0.75
    (dict(include="("), "include"),
])
def test_bad_transform_arguments_raise_at_build(kwargs, field):
    with pytest.raises(ValueError, match=field):
        magnitude_pruning(Schedule("geometric", 0.5, 0.25, 0.75, 5), TOTAL, **kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(include="nothing_matches"), "include"),
    (dict(exclude="nothing_matches"), "exclude"),
    (dict(structure="2:4", include="fc1"), "fan-in"),
])
def test_bad_transform_arguments_raise_at_init(kwargs, field):
    params = {"fc1": {"kernel": jnp.ones((6, 8))}, "fc2": {"kernel": jnp.ones((8, 8))}}
    tx = magnitude_pruning(Schedule("geometric", 0.5, 0.25, 0.75, 5), TOTAL, **kwargs)
    with pytest.raises(ValueError, match=field):
        tx.init(params)


def test_update_without_params_is_a_clear_error():
    params = {"fc": {"kernel": jnp.ones((4, 4))}}
    tx = magnitude_pruning(SCHED, TOTAL)
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params))


def test_pruned_weights_are_exactly_zero_with_lower_precision_updates():
    params = {"fc": {"kernel": jax.random.normal(jax.random.key(0), (8, 8)) * 1.2345678}}
    tx = magnitude_pruning(Schedule("one_shot", 0.5, 0.0, 0.0, 1), 10)
    state = tx.init(params)
    grads = jax.tree.map(lambda w: jnp.zeros_like(w, jnp.bfloat16), params)
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    mask = np.asarray(get_masks(state)["fc"]["kernel"])
    assert np.all(np.asarray(new["fc"]["kernel"])[~mask] == 0.0)
    assert new["fc"]["kernel"].dtype == jnp.float32


def test_average_param_count_uses_the_densities_n_of_m_realises():
    from jaxsparse.pruning import average_param_count
    from jaxsparse.pruning.structure import realised_densities
    sched = Schedule("geometric", 0.5, 0.25, 0.75, 10)
    plain = average_param_count(sched, 1000, 400, 100)
    nm = average_param_count(sched, 1000, 400, 100, structure="2:4")
    dens = realised_densities(sched, 1000, "2:4")
    np.testing.assert_allclose(dens * 4, np.round(dens * 4))
    assert dens[-1] == 0.5 and np.all(dens >= sched.event_densities(1000) - 1e-12)
    assert nm.total > plain.total
    steps = np.arange(1000)
    idx = np.searchsorted(sched.event_steps(1000), steps, side="right")
    per_step = np.where(idx == 0, 1.0, dens[np.maximum(idx - 1, 0)])
    assert nm.prunable == pytest.approx(400 * per_step.mean(), rel=1e-12)
