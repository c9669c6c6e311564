"""The pruning library in a user's own Flax project: a Linen module of the user's, and Flax NNX."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsparse.pruning import Schedule, get_masks, magnitude_pruning, mask_collection, sparsity_summary
from jaxsparse.pruning.linen import MaskedDense, masked

STEPS = 24
SCHED = Schedule("geometric", 0.75, 0.2, 0.6, 3)  # events at steps 4, 7, 10, 13


def batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS, 16, 12)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(12, 3)).astype(np.float32))
    return jnp.asarray(x), jnp.asarray(y)


class UserBlock(nn.Module):
    """A user's own layer: its weight is called "w", declared by hand, masked with the helper."""

    width: int

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(0.5), (x.shape[-1], self.width))
        return jnp.tanh(x @ masked(self, w, "w"))


class UserModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return MaskedDense(3, name="out")(UserBlock(32, name="block")(x))


def test_user_linen_module_reads_masks_and_pruned_weights_are_zero_with_zero_gradient():
    model = UserModel()
    xs, ys = batches()
    variables = model.init(jax.random.key(0), xs[0])
    assert set(variables) == {"params", "masks"}
    assert variables["masks"]["block"]["w"].dtype == jnp.bool_
    params = variables["params"]
    tx = optax.chain(optax.adam(1e-2), magnitude_pruning(SCHED, STEPS, scope="layerwise"))
    opt_state = tx.init(params)

    def loss_fn(p, masks, x, y):
        return jnp.mean((model.apply({"params": p, "masks": masks}, x) - y) ** 2)

    @jax.jit
    def step(p, s, x, y):
        grads = jax.grad(loss_fn)(p, mask_collection(get_masks(s)), x, y)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    for t in range(STEPS):
        params, opt_state = step(params, opt_state, xs[t], ys[t])
    masks = mask_collection(get_masks(opt_state))
    assert sparsity_summary(masks).sparsity == pytest.approx(0.75, abs=1 / sparsity_summary(masks).prunable)
    grads = jax.grad(loss_fn)(params, masks, xs[0], ys[0])
    for path, w, g, m in (("block/w", params["block"]["w"], grads["block"]["w"], masks["block"]["w"]),
                          ("out/kernel", params["out"]["kernel"], grads["out"]["kernel"], masks["out"]["kernel"])):
        w, g, m = np.asarray(w), np.asarray(g), np.asarray(m)
        assert (~m).sum() > 0, path
        assert np.all(w[~m] == 0.0) and np.all(g[~m] == 0.0), path
        assert np.any(g[m] != 0.0), path  # kept weights still learn
    with pytest.raises(ValueError, match="masks/block/w"):
        model.apply({"params": params, "masks": {**masks, "block": {"w": jnp.ones((2, 2), bool)}}}, xs[0])


class NNXModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(10, 12, rngs=rngs)
        self.hidden = nnx.Linear(12, 32, rngs=rngs)
        self.out = nnx.Linear(32, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x + self.embed(jnp.zeros(x.shape[:-1], jnp.int32)))))


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_nnx_optimizer_trains_with_pruned_weights_exactly_zero(scope):
    model = NNXModel(nnx.Rngs(0))
    embedding_before = np.asarray(model.embed.embedding[...])
    tx = optax.chain(optax.adamw(1e-2, weight_decay=0.1), magnitude_pruning(SCHED, STEPS, scope=scope))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    xs, ys = batches()

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, xs[t], ys[t])) for t in range(STEPS)]
    assert losses[-1] < losses[0]
    masks = get_masks(nnx.as_pure(optimizer.opt_state))
    assert masks["embed"]["embedding"] is None and masks["hidden"]["bias"] is None
    for layer in ("hidden", "out"):
        w = np.asarray(getattr(model, layer).kernel[...])
        m = np.asarray(masks[layer]["kernel"])
        assert np.all(w[~m] == 0.0) and np.all(w[m] != 0.0), layer
        if scope == "layerwise":
            assert (~m).mean() == pytest.approx(0.75, abs=1 / m.size), layer
    assert sparsity_summary(masks).sparsity == pytest.approx(0.75, abs=1 / sparsity_summary(masks).prunable)
    assert not np.array_equal(np.asarray(model.embed.embedding[...]), embedding_before)  # trained, not pruned
