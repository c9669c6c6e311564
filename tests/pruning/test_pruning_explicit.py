"""The pruning transform on explicit-axis meshes (jax.make_mesh's default, jax.set_mesh), as a Linen-style
project writes it: a plain param dict whose kernels are sharded on 1, 2 and 8 devices. The masks come out
sharded like their kernels and equal to those of the same run on unsharded arrays."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxsparse.pruning import Schedule, get_masks, magnitude_pruning

STEPS = 4


def train(params, tx, mesh=None):
    """Four jitted sgd steps with gradient 1 (the event falls before step 2); returns (params, state)."""
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.ones_like, p), s, p))
    for _ in range(STEPS):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    return params, state


def kernels(shapes, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {name: jax.random.normal(key, shape) for (name, shape), key in zip(shapes.items(), keys)}


def on_mesh(params, mesh, specs):
    return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()}


CASES = {  # devices, mesh shape, structure, kernel shapes, kernel specs
    "1dev-unstructured": (1, {"x": 1}, None, {"k": (64, 8)}, {"k": P("x", None)}),
    "1dev-2:4-fan-in-4": (1, {"x": 1}, "2:4", {"k": (4, 8)}, {"k": P("x", None)}),
    "2dev-unstructured": (2, {"x": 2}, None, {"k": (64, 8), "o": (8, 6)}, {"k": P("x", None), "o": P(None, "x")}),
    "2dev-2:4-groups-across-devices": (2, {"x": 2}, "2:4", {"k": (4, 8)}, {"k": P("x", None)}),
    "8dev-unstructured": (8, {"fsdp": 4, "tensor": 2}, None, {"k": (16, 64), "o": (64, 16)},
                          {"k": P("fsdp", "tensor"), "o": P("tensor", "fsdp")}),
    "8dev-2:4": (8, {"fsdp": 4, "tensor": 2}, "2:4", {"k": (8, 16), "o": (4, 8)},
                 {"k": P("fsdp", "tensor"), "o": P("tensor", "fsdp")}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_explicit_mesh_masks_are_sharded_like_their_kernels_and_equal_unsharded_ones(case):
    n_dev, axes, structure, shapes, specs = CASES[case]
    tx = optax.chain(optax.sgd(0.1), magnitude_pruning(Schedule("one_shot", 0.5, 0.5, 0.5, 1), STEPS,
                                                       structure=structure))
    params = kernels(shapes)
    ref_params, ref_state = train(params, tx)
    mesh = jax.make_mesh(tuple(axes.values()), tuple(axes), devices=jax.devices()[:n_dev])
    assert set(mesh.axis_types) == {jax.sharding.AxisType.Explicit}
    with jax.set_mesh(mesh):
        out, state = train(on_mesh(params, mesh, specs), tx, mesh)
    masks, ref_masks = get_masks(state), get_masks(ref_state)
    for name in shapes:
        assert jax.typeof(masks[name]).sharding.spec == jax.typeof(out[name]).sharding.spec == specs[name]
        np.testing.assert_array_equal(np.asarray(masks[name]), np.asarray(ref_masks[name]))
        np.testing.assert_allclose(np.asarray(out[name]), np.asarray(ref_params[name]), rtol=1e-6)
        assert np.all(np.asarray(out[name])[~np.asarray(masks[name])] == 0)
    kept = sum(int(np.asarray(m).sum()) for m in masks.values())
    assert kept == sum(int(np.prod(s)) for s in shapes.values()) // 2
    if structure == "2:4":
        for name, shape in shapes.items():  # 2 of every 4 consecutive weights along axis 0
            groups = np.asarray(masks[name]).reshape(shape[0] // 4, 4, shape[1])
            assert (groups.sum(axis=1) == 2).all()


def test_explicit_mesh_n_of_m_on_a_rank_3_kernel_whose_groups_span_a_sharded_axis():
    # an output projection [H, Dh, D] with fan-in (H, Dh): groups of 4 run over Dh=2 and into the
    # next head, and H is sharded over 'fsdp'
    schedule = Schedule("one_shot", 0.5, 0.5, 0.5, 1)
    tx = optax.chain(optax.sgd(0.1), magnitude_pruning(schedule, STEPS, structure="2:4",
                                                       fan_in_axes=lambda path, leaf: (0, 1)))
    params = kernels({"out": (4, 2, 8)}, seed=3)
    _, ref_state = train(params, tx)
    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"), devices=jax.devices()[:8])
    with jax.set_mesh(mesh):
        _, state = train(on_mesh(params, mesh, {"out": P("fsdp", None, "tensor")}), tx, mesh)
    mask = get_masks(state)["out"]
    assert jax.typeof(mask).sharding.spec == P("fsdp", None, "tensor")
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(get_masks(ref_state)["out"]))
    assert (np.asarray(mask).reshape(2, 4, 8).sum(axis=1) == 2).all()


def test_explicit_mesh_compiled_update_moves_no_kernel():
    mesh = jax.make_mesh((4, 2), ("fsdp", "tensor"), devices=jax.devices()[:8])
    tx = magnitude_pruning(Schedule("geometric", 0.8, 0.25, 0.75, 2), 12)
    with jax.set_mesh(mesh):
        params = on_mesh(kernels({"k": (16, 64), "o": (64, 16)}), mesh,
                         {"k": P("fsdp", "tensor"), "o": P("tensor", "fsdp")})
        hlo = jax.jit(tx.update).lower(params, tx.init(params), params).compile().as_text()
    assert "all-reduce" in hlo and "all-gather" not in hlo
