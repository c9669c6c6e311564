"""What a run reports: per-layer sparsity records."""
from __future__ import annotations


def test_per_layer_sparsity_splits_scanned_kernels_by_layer():
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxsparse import models
    from jaxsparse.train.loop.report import per_layer_sparsity
    stacked = jnp.stack([jnp.ones((4, 4), bool), jnp.zeros((4, 4), bool).at[0, 0].set(True)])
    masks = {"layers": {"q": {"kernel": stacked}}, "lm_head": {"kernel": jnp.ones((4, 8), bool)}}
    mesh = models.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    got = per_layer_sparsity(masks, NamedSharding(mesh, PartitionSpec()))
    assert got == {"layers/q/kernel[0]": 0.0, "layers/q/kernel[1]": 15 / 16, "lm_head/kernel": 0.0}
