"""The pruning transform on an 8-device mesh: same masks as one device, no all-gather."""
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxsparse.pruning import Schedule, get_masks, magnitude_pruning

TOTAL = 12
SCHED = Schedule("geometric", 0.8, 0.25, 0.75, 2)


def make_params():
    keys = jax.random.split(jax.random.key(0), 4)
    return {
        "embed": {"embedding": jax.random.normal(keys[0], (32, 16))},
        "l0": {"kernel": jax.random.normal(keys[1], (16, 64))},
        "l1": {"kernel": 2.0 * jax.random.normal(keys[2], (64, 16))},
        "head": {"kernel": jax.random.normal(keys[3], (16, 32))},
    }


def spec_for(path):
    # kernels sharded over two mesh axes (FSDP on the fan-in, tensor on the fan-out)
    return P("fsdp", "tensor") if "kernel" in path else P()


def shardings(mesh, params):
    return jax.tree_util.tree_map_with_path(
        lambda p, _: NamedSharding(mesh, spec_for(jax.tree_util.keystr(p))), params)


def run(tx, params, mesh=None):
    opt_state = tx.init(params)
    grads_key = jax.random.key(1)

    def step(params, opt_state, g):
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    step = jax.jit(step)
    for t in range(TOTAL):
        g = jax.tree.map(lambda x: jax.random.normal(jax.random.fold_in(grads_key, t), x.shape),
                         params)
        if mesh is not None:
            g = jax.device_put(g, shardings(mesh, params))
        params, opt_state = step(params, opt_state, g)
    return params, opt_state


def test_sharded_training_gives_same_masks_as_one_device():
    tx = optax.chain(optax.adamw(0.05), magnitude_pruning(SCHED, TOTAL))
    params = make_params()
    p1, s1 = run(tx, params)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("fsdp", "tensor"))
    params8 = jax.device_put(params, shardings(mesh, params))
    p8, s8 = run(tx, params8, mesh)
    m1, m8 = get_masks(s1), get_masks(s8)
    for key in ("l0", "l1", "head"):
        np.testing.assert_array_equal(np.asarray(m1[key]["kernel"]), np.asarray(m8[key]["kernel"]))
        assert m8[key]["kernel"].sharding.is_equivalent_to(p8[key]["kernel"].sharding, 2)
        np.testing.assert_allclose(np.asarray(p1[key]["kernel"]), np.asarray(p8[key]["kernel"]),
                                   atol=1e-6)
    kept = sum(int(np.asarray(m8[k]["kernel"]).sum()) for k in ("l0", "l1", "head"))
    assert kept == round(0.2 * (16 * 64 + 64 * 16 + 16 * 32))


def test_compiled_mask_update_has_no_all_gather_and_no_sort():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("fsdp", "tensor"))
    params = jax.device_put(make_params(), shardings(mesh, make_params()))
    tx = magnitude_pruning(SCHED, TOTAL)
    state = tx.init(params)
    hlo = jax.jit(tx.update).lower(params, state, params).compile().as_text()
    assert "all-reduce" in hlo          # the counts are summed across devices...
    assert "all-gather" not in hlo      # ...but the kernels never travel
    assert " sort(" not in hlo
    for scope in ("layerwise",):
        tx = magnitude_pruning(SCHED, TOTAL, scope=scope)
        hlo = jax.jit(tx.update).lower(params, tx.init(params), params).compile().as_text()
        assert "all-gather" not in hlo
