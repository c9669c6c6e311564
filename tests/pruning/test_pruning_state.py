"""The transform's state holds only arrays: count, invalid and one mask per pruned kernel (where they sit
in the params is static pytree data), so code that walks an optimizer state, such as an NNX trainer's
start-up log, reads a shape and dtype everywhere; ``get_masks`` is params-shaped and answers None for
the leaves that are not pruned."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsparse.pruning import Schedule, get_masks, magnitude_pruning, mask_collection


class Model(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(16, 8, rngs=rngs)
        self.lin = nnx.Linear(8, 8, rngs=rngs)
        self.norm = nnx.RMSNorm(8, rngs=rngs)

    def __call__(self, tokens):
        return self.norm(self.lin(self.embed(tokens))).sum()


def test_every_leaf_of_an_nnx_optimizer_state_has_a_shape_before_and_after_an_event():
    schedule = Schedule("geometric", 0.5, 0.25, 0.75, 1)
    tx = optax.chain(optax.adam(1e-2), magnitude_pruning(schedule, 8))
    model = Model(nnx.Rngs(0))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, tokens):
        grads = nnx.grad(lambda m: m(tokens))(model)
        opt.update(model, grads)

    tokens = jnp.arange(6) % 16
    for _ in range(4):  # events fall before steps 2, 3 and 4
        described = {path: (var.shape, var.dtype) for path, var in nnx.to_flat_state(nnx.state(opt))}
        assert described[("opt_state", 1, "masks", 0)] == ((8, 8), jnp.bool_)  # lin/kernel's, the one mask
        assert [path for path in described if path[:2] == ("opt_state", 1)] == [
            ("opt_state", 1, "count"), ("opt_state", 1, "invalid"), ("opt_state", 1, "masks", 0)]
        step(model, opt, tokens)
    masks = get_masks(opt.opt_state)
    assert masks["embed"]["embedding"] is None and masks["lin"]["bias"] is None
    assert masks["norm"]["scale"] is None
    kernel = np.asarray(masks["lin"]["kernel"][...])
    assert kernel.sum() == round(float(schedule.density_at(4, 8)) * 64) < 64
    np.testing.assert_array_equal(np.asarray(model.lin.kernel[...])[~kernel], 0)


def test_linen_boxed_params_give_a_state_with_only_array_leaves_and_masks_in_their_boxes():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Embed(16, 8, embedding_init=nn.with_partitioning(nn.initializers.normal(), (None, "d")))(x)
            return nn.Dense(8, kernel_init=nn.with_partitioning(nn.initializers.lecun_normal(), ("d", None)))(x)

    params = Net().init(jax.random.key(0), jnp.zeros((2,), jnp.int32))["params"]
    tx = optax.chain(optax.sgd(0.1), magnitude_pruning(Schedule("one_shot", 0.5, 0.5, 0.5, 1), 4))
    state = tx.init(params)
    leaves = jax.tree.leaves(state, is_leaf=lambda x: x is None)
    assert all(hasattr(x, "shape") for x in leaves)
    step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.ones_like, p), s, p))
    for _ in range(3):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    assert all(hasattr(x, "shape") for x in jax.tree.leaves(state, is_leaf=lambda x: x is None))
    (stored,) = state[1].masks  # one mask, for the one prunable kernel, in the kernel's box
    assert isinstance(stored, nn.Partitioned) and stored.names == ("d", None)
    assert state[1].layout.paths == ("Dense_0/kernel",)
    assert get_masks(state)["Embed_0"]["embedding"] is None
    collection = mask_collection(get_masks(state))
    assert list(collection) == ["Dense_0"] and int(np.asarray(collection["Dense_0"]["kernel"]).sum()) == 32


def test_a_state_made_for_other_params_is_refused_naming_both_sets_of_kernels():
    tx = optax.chain(optax.sgd(0.1), magnitude_pruning(Schedule("one_shot", 0.5, 0.5, 0.5, 1), 4))
    state = tx.init({"a": jnp.ones((4, 4)), "b": jnp.ones((4,))})
    other = {"a": jnp.ones((4,)), "b": jnp.ones((4, 4))}
    with pytest.raises(ValueError, match=r"holds masks for \['a'\].*prunable leaves \['b'\]"):
        tx.update(jax.tree.map(jnp.zeros_like, other), state, other)
