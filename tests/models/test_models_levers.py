"""Memory levers (remat, scan, attention variants, chunked loss) compute the reference path's function:
loss and gradients within 1e-5 (float32).

Levers: model.attention (dot_product; flash in Pallas's TPU interpret mode), model.remat_policy, the chunked
cross-entropy (model.loss_chunk), and the activation sharding constraints on the 8 fake CPU devices.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsparse.models import Transformer, batch_sharding, get_config, make_mesh, variable_shardings
from jaxsparse.models.attention import causal_attention
from jaxsparse.models.loss import cross_entropy_sums
from jaxsparse.models.sharding import activation_sharding, constrain

BATCH, SEQ = 4, 32


def _data(cfg):
    keys = jax.random.split(jax.random.key(3), 3)
    tokens = jax.random.randint(keys[0], (BATCH, SEQ), 0, cfg.vocab_size, jnp.int32)
    targets = jax.random.randint(keys[1], (BATCH, SEQ), 0, cfg.vocab_size, jnp.int32)
    weights = (jax.random.uniform(keys[2], (BATCH, SEQ)) > 0.2).astype(jnp.float32)
    return tokens, targets, weights


def _variables(cfg, tokens):
    variables = nn.unbox(Transformer(cfg).init(jax.random.key(0), tokens))
    keys = iter(jax.random.split(jax.random.key(2), 64))
    variables["masks"] = jax.tree.map(lambda m: jax.random.bernoulli(next(keys), 0.7, m.shape), variables["masks"])
    return variables


def _loss_and_grads(cfg, variables, tokens, targets, weights):
    model = Transformer(cfg)

    def loss(params):
        total, weight = model.apply({"params": params, "masks": variables["masks"]}, tokens, targets, weights)
        return total / weight
    return jax.jit(jax.value_and_grad(loss))(variables["params"])


def _assert_close(got, want):
    (loss_g, grads_g), (loss_w, grads_w) = got, want
    np.testing.assert_allclose(float(loss_g), float(loss_w), rtol=1e-5, atol=1e-5)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grads_g), jax.tree.leaves(grads_w)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def reference():
    cfg = get_config("test", scan_layers=True)
    tokens, targets, weights = _data(cfg)
    variables = _variables(cfg, tokens)
    return cfg, variables, (tokens, targets, weights), _loss_and_grads(cfg, variables, tokens, targets, weights)


def test_reference_loss_is_optax_cross_entropy_of_the_logits(reference):
    cfg, variables, (tokens, targets, weights), (loss, _) = reference
    import optax
    logits = Transformer(cfg).apply(variables, tokens)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    np.testing.assert_allclose(float(loss), float(jnp.sum(ce * weights) / jnp.sum(weights)), rtol=1e-6)


@pytest.mark.parametrize("change", [
    dict(attention="dot_product"),
    dict(loss_chunk=8),
    dict(remat=True, remat_policy="full"),
    dict(remat=True, remat_policy="save_dots"),
    dict(remat=True, remat_policy="none"),
    dict(remat=True, attention="dot_product", loss_chunk=16),
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_lever_matches_reference(reference, change):
    cfg, variables, data, want = reference
    _assert_close(_loss_and_grads(dataclasses.replace(cfg, **change), variables, *data), want)


def test_flash_kernel_matches_reference_attention_in_interpret_mode():
    from jax.experimental.pallas import tpu as pltpu
    keys = jax.random.split(jax.random.key(7), 3)
    q, k, v = (jax.random.normal(key, (1, 128, 2, 64), jnp.float32) for key in keys)

    def loss(impl):
        return lambda q, k, v: jnp.sum(jnp.sin(causal_attention(q, k, v, impl)))
    with pltpu.force_tpu_interpret_mode():
        got = jax.value_and_grad(loss("flash"), argnums=(0, 1, 2))(q, k, v)
    want = jax.value_and_grad(loss("reference"), argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-5)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)


def test_chunked_loss_rejects_a_chunk_that_does_not_divide_the_sequence():
    x = jnp.zeros((1, 12, 4))
    with pytest.raises(ValueError, match="does not divide the sequence length 12"):
        cross_entropy_sums(x, jnp.zeros((4, 8)), jnp.zeros((1, 12), jnp.int32), jnp.ones((1, 12)), chunk=5)
    with pytest.raises(ValueError, match="allowed values"):
        get_config("test", attention="splash")


def test_sharded_activations_match_one_device(reference):
    """Loss and gradients on a (data 2, fsdp 2, tensor 2) mesh with activation constraints equal one device's,
    and the constraint really shards: the residual stream's batch is split over data x fsdp."""
    cfg, variables, (tokens, targets, weights), want = reference
    cfg = dataclasses.replace(cfg, loss_chunk=8)
    mesh = make_mesh(2, 2, 2)
    _, shardings = variable_shardings(Transformer(cfg), mesh, sample_tokens_shape=tokens.shape)
    sharded = jax.device_put(variables, shardings)
    data = jax.device_put((tokens, targets, weights), batch_sharding(mesh))
    with activation_sharding(mesh):
        got = _loss_and_grads(cfg, sharded, *data)
        x = jax.jit(lambda t: constrain(t * 2, ("activation_batch", "activation_length", "activation_embed")))(
            jnp.ones((BATCH, SEQ, 8)))
    _assert_close(got, want)
    assert x.sharding.shard_shape(x.shape) == (BATCH // 4, SEQ, 8)
