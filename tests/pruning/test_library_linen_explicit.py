"""A Linen client on an explicit-axis mesh (issue 26): its ``init`` output, a plain param dict,
placed on a ``jax.make_mesh`` mesh (kernels sharded over "x") set with ``jax.set_mesh`` and trained
under ``jax.jit`` (the forward pass under ``jax.sharding.auto_axes``, the update on the explicit
mesh), pruned globally or 2:4 along the fan-in axes ``fan_in_axes_from`` reads from the Linen
module (``nn.DenseGeneral`` q ``[D, H, Dh]`` and out ``[H, Dh, D]``, ``nn.Einsum``, and an
``nn.Dense`` whose sharded fan-in is exactly 4)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxsparse.pruning import Schedule, fan_in_axes_from, get_masks, magnitude_pruning, sparsity_summary

D, H, DH, T = 16, 2, 8, 6
FAN_IN = {"query/kernel": (0,), "out/kernel": (0, 1), "gate/kernel": (1,), "small/kernel": (0,)}


SPECS = {"query": P("x", None, None), "out": P(None, None, "x"), "gate": P(None, "x", None), "small": P("x", None)}


class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        q = nn.DenseGeneral((H, DH), use_bias=False, name="query")(x)                 # [D, H, Dh]
        out = nn.DenseGeneral(D, axis=(-2, -1), use_bias=False, name="out")(q)        # [H, Dh, D]
        gate = nn.Einsum((H, D, DH), "BD,HDK->BHK", use_bias=False, name="gate")(out)  # [H, D, Dh]
        return out + nn.Dense(D, use_bias=False, name="small")(gate[:, 0, :4])        # [4, D]: fan-in 4


@pytest.mark.parametrize("devices, structure", [(1, "2:4"), (2, "2:4"), (2, None)])
def test_linen_params_on_an_explicit_mesh_prune_along_the_read_fan_in(devices, structure):
    mesh = jax.make_mesh((devices,), ("x",), devices=jax.devices()[:devices])
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, D)), jnp.float32)
    model = Model()
    params = model.init(jax.random.key(0), x)["params"]
    params = {name: {"kernel": jax.device_put(p["kernel"], NamedSharding(mesh, SPECS[name]))}
              for name, p in params.items()}
    fan_in = fan_in_axes_from(model, jax.random.key(0), x) if structure else None
    with jax.set_mesh(mesh):
        tx = optax.chain(optax.adam(1e-2), magnitude_pruning(Schedule("geometric", 0.5, 0.3, 0.7, 1), T,
                                                             structure=structure, fan_in_axes=fan_in))
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state):
            forward = jax.sharding.auto_axes(lambda p: model.apply({"params": p}, x), out_sharding=P())
            grads = jax.grad(lambda p: jnp.mean(forward(p) ** 2))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state
        for _ in range(T):
            params, opt_state = step(params, opt_state)
        masks = get_masks(opt_state)
    assert params["query"]["kernel"].sharding.spec == P("x", None, None)
    assert set(sparsity_summary(masks).tensors) == set(FAN_IN)
    for path, axes in FAN_IN.items():
        layer, name = path.split("/")
        mask, w = np.asarray(masks[layer][name]), np.asarray(params[layer][name])
        np.testing.assert_array_equal(w != 0, mask, err_msg=path)
        if structure:
            moved = np.moveaxis(mask, axes, range(len(axes)))
            groups = moved.reshape(-1, 4, int(np.prod(moved.shape[len(axes):])))
            assert (groups.sum(axis=1) == 2).all(), path
    assert sparsity_summary(masks).sparsity == pytest.approx(0.5, abs=0.01)
