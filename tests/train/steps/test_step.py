"""The sharded train step: one device vs a 2 x 2 x 2 (data, fsdp, tensor) mesh, and state shardings."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from train_utils import tiny_config, write_corpus

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.pruning import get_masks
from jaxsparse.train import prepare
from jaxsparse.train.steps.state import abstract_state, create_state
from jaxsparse.train.steps.step import make_train_step

STEPS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    config = tiny_config(corpus, **{"data.data_dir": str(tmp_path_factory.mktemp("data")),
                                    "train.steps": STEPS, "pruning.interval": 1,
                                    "pruning.start": 0.0, "pruning.end": 0.5})
    it = data_lib.make_train_iterator(config.data, seq_len=config.train.seq_len,
                                      global_batch_size=config.train.batch_size)
    batches = [next(it) for _ in range(STEPS)]
    return config, batches


def run_steps(config, batches, mesh, grad_accum=1):
    run = prepare(config, local_devices=False)  # the model and transform, resolved once
    model, tx = run.model, run.tx
    _, shardings = abstract_state(model, tx, mesh, models.DEFAULT_RULES, config.train.seq_len)
    state = create_state(model, tx, config.seed, config.train.seq_len, shardings)
    bs = models.batch_sharding(mesh)
    step = jax.jit(make_train_step(model, tx, grad_accum), in_shardings=(shardings, bs),
                   out_shardings=(shardings, None))
    losses = []
    for b in batches:
        state, metrics = step(state, data_lib.to_global_batch(b, bs))
        losses.append(float(metrics["loss"]))
    return state, shardings, np.array(losses)


@pytest.fixture(scope="module")
def eight(setup):
    config, batches = setup
    return run_steps(config, batches, models.make_mesh(2, 2, 2))


def test_eight_device_mesh_matches_one_device(setup, eight):
    config, batches = setup
    s1, _, l1 = run_steps(config, batches, models.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    s8, _, l8 = eight
    np.testing.assert_allclose(l8, l1, rtol=0, atol=1e-5)
    assert l1[-1] < l1[0]
    m1, m8 = get_masks(s1.opt_state), get_masks(s8.opt_state)
    for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m8)):
        # masks agree except where a weight sits within float noise of the threshold
        assert np.mean(np.asarray(a) != np.asarray(b)) < 1e-3


def test_optimizer_state_and_masks_shard_like_their_kernels(eight):
    state, _, _ = eight
    kernel = state.params["layers_0"]["mlp"]["wi_0"]["kernel"]
    mask = get_masks(state.opt_state)["layers_0"]["mlp"]["wi_0"]["kernel"]
    adam = state.opt_state[1][0]  # chain: clip, adamw(scale_by_adam, ...), pruning
    mu = adam.mu["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    for leaf in (mask, mu):
        assert leaf.sharding.is_equivalent_to(kernel.sharding, kernel.ndim)


def test_gradient_accumulation_matches_one_big_batch(setup):
    config, batches = setup
    config = config.copy_and_resolve_references()
    config.train.batch_size = 16
    # two micro-batches of 8 rows vs the same 16 rows at once, on a 2-way data mesh
    mesh = models.make_mesh(2, 1, 1, devices=jax.devices()[:2])
    big = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(batches[0:4:2],
                                                                        batches[1:4:2])]
    _, _, l_once = run_steps(config, big, mesh)
    _, _, l_accum = run_steps(config, big, mesh, grad_accum=2)
    np.testing.assert_allclose(l_accum, l_once, rtol=0, atol=1e-5)
