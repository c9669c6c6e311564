"""The transform reports what its events find by itself, within one update of the event, under jax.jit and
nnx.jit, with no call from the user (``report=``): a training loop that never reads the masks still learns
that the transform is not last in the chain, or that an event met NaN weights."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxsparse.pruning import Schedule, magnitude_pruning

T = 20
SCHED = Schedule("geometric", 0.75, 0.2, 0.6, 4)  # events before steps 4, 8 and 12


def params():
    rng = np.random.default_rng(0)
    return {"fc1": {"kernel": jnp.asarray(rng.normal(size=(16, 32)), jnp.float32)},
            "head": {"kernel": jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)}}


def train(tx, steps, grads=lambda t, p: jax.tree.map(jnp.ones_like, p)):
    """A loop that never reads the masks; returns how many updates ran."""
    p = params()
    state = tx.init(p)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    for t in range(steps):
        updates, state = step(p, state, grads(t, p))
        p = optax.apply_updates(p, updates)
    return p


def test_transform_first_in_the_chain_raises_on_the_update_right_after_the_first_event():
    last = optax.chain(optax.adamw(1e-2), magnitude_pruning(SCHED, T))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = train(last, 14)  # three events, nothing reported
    assert np.mean(np.asarray(out["fc1"]["kernel"]) == 0) > 0.5
    first = optax.chain(magnitude_pruning(SCHED, T), optax.adamw(1e-2))
    train(first, 4)  # updates 0..3: the last of them applies the event before step 4
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError),
                       match=r"must be the LAST element of the optax chain.*fc1/kernel"):
        train(first, 5)


def test_nan_weight_at_an_event_raises_from_that_event_step():
    tx = optax.chain(optax.sgd(0.1), magnitude_pruning(SCHED, T))

    def grads(t, p):
        g = jax.tree.map(jnp.ones_like, p)
        return g if t != 3 else {**g, "head": {"kernel": g["head"]["kernel"].at[0, 0].set(jnp.nan)}}
    train(tx, 3, grads)
    # the callback's FloatingPointError reaches the caller through XLA (on CPU as a ValueError carrying it)
    with pytest.raises((FloatingPointError, ValueError, jax.errors.JaxRuntimeError),
                       match=r"FloatingPointError: pruning event: prunable weight\(s\) with NaN or Inf: head/kernel"):
        train(tx, 4, grads)


class Net(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(32, 16, rngs=rngs)
        self.q = nnx.Einsum("BTD,NDH->BTNH", (2, 16, 8), rngs=rngs)
        self.lin = nnx.Linear(16, 32, rngs=rngs)

    def __call__(self, tokens):
        h = self.q(self.embed(tokens)).reshape(*tokens.shape, 16)
        return (self.lin(h) ** 2).mean()


def test_nnx_jit_warn_reports_once_within_one_update_and_training_goes_on():
    tx = optax.chain(magnitude_pruning(SCHED, T, report="warn"), optax.adamw(1e-2))
    model = Net(nnx.Rngs(0))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, tokens):
        opt.update(model, nnx.grad(lambda m: m(tokens))(model))

    tokens = jnp.arange(12).reshape(2, 6) % 32
    seen = []
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        for t in range(14):  # three events; the misuse is found by update 4, right after the first
            step(model, opt, tokens)
            jax.block_until_ready(nnx.state(opt))
            seen.append(sum("must be the LAST" in str(w.message) for w in found))
    assert seen[3] == 0 and seen[4] == 1 and seen[-1] == 1  # reported once, training went on
    assert "q/kernel" in str(next(w.message for w in found if "LAST" in str(w.message)))


def test_report_is_checked():
    with pytest.raises(ValueError, match=r"report='loud' is unknown; allowed: raise, warn, off"):
        magnitude_pruning(SCHED, T, report="loud")
