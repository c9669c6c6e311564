"""The pruning library in an NNX trainer written as a client writes one (issue 26): a Gemma-style
decoder with ``nnx.Einsum`` attention kernels (q ``[N, D, H]``, kv ``[2, K, D, H]``, out
``[N, H, D]``), an ``nnx.Linear`` MLP and an ``nnx.Embed`` tied to the logits, its parameters
sharded (FSDP and tensor axes) on an explicit-axis mesh set with ``jax.set_mesh``, trained with
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` under ``nnx.jit`` on 1, 2 and 8 forced host devices,
pruned globally or 2:4 (fan-in axes read by ``fan_in_axes_from``), checkpointed with orbax's
``CheckpointManager``. The forward pass runs under ``jax.sharding.auto_axes`` (as explicit-mesh
clients write it); the optimizer update, the pruning transform with it, runs on the explicit mesh."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxsparse.pruning import Schedule, fan_in_axes_from, get_masks, magnitude_pruning, sparsity_summary

V, D, N, K, H, F, B, S = 32, 16, 4, 2, 8, 32, 8, 7
T = 8
# the true contraction (fan-in) axes of each kernel, from the einsum strings below, written by hand
TRUE_FAN_IN = {"block/attn/q/kernel": (1,), "block/attn/kv/kernel": (2,), "block/attn/out/kernel": (0, 1),
               "block/up/kernel": (0,), "block/down/kernel": (0,)}
GRADUAL = Schedule("geometric", 0.5, 0.25, 0.75, 1)  # events at steps 2..6 of 8
ONE_SHOT = Schedule("one_shot", 0.5, 0.5, 0.5, 1)    # one event, before step 4


def sharded(names):
    return nnx.with_partitioning(nnx.initializers.lecun_normal(), names)


class Attention(nnx.Module):
    def __init__(self, rngs):
        self.q = nnx.Einsum("BTD,NDH->BTNH", (N, D, H), kernel_init=sharded(("tensor", "fsdp", None)), rngs=rngs)
        self.kv = nnx.Einsum("BSD,CKDH->CBSKH", (2, K, D, H), kernel_init=sharded((None, "tensor", "fsdp", None)),
                             rngs=rngs)
        self.out = nnx.Einsum("BTNH,NHD->BTD", (N, H, D), kernel_init=sharded(("tensor", None, "fsdp")), rngs=rngs)

    def __call__(self, x):
        q = self.q(x)
        k, v = (jnp.repeat(a, N // K, axis=2) for a in self.kv(x))
        logits = jnp.einsum("BTNH,BSNH->BNTS", q, k) / np.sqrt(H)
        causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        probs = jax.nn.softmax(jnp.where(causal, logits, -1e9), axis=-1)
        return self.out(jnp.einsum("BNTS,BSNH->BTNH", probs, v))


class Block(nnx.Module):
    def __init__(self, rngs):
        self.norm1, self.norm2 = nnx.RMSNorm(D, rngs=rngs), nnx.RMSNorm(D, rngs=rngs)
        self.attn = Attention(rngs)
        self.up = nnx.Linear(D, F, use_bias=False, kernel_init=sharded(("fsdp", "tensor")), rngs=rngs)
        self.down = nnx.Linear(F, D, use_bias=False, kernel_init=sharded(("tensor", "fsdp")), rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.down(nnx.gelu(self.up(self.norm2(x))))


class Decoder(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(V, D, embedding_init=sharded((None, "fsdp")), rngs=rngs)
        self.block = Block(rngs)
        self.norm = nnx.RMSNorm(D, rngs=rngs)

    def __call__(self, tokens):
        return self.embed.attend(self.norm(self.block(self.embed(tokens))))


def make_mesh(fsdp, tensor):
    return jax.make_mesh((fsdp, tensor), ("fsdp", "tensor"), devices=jax.devices()[:fsdp * tensor])


def tokens_on(mesh):
    data = np.random.default_rng(0).integers(0, V, (B, S + 1))
    return jax.device_put(jnp.asarray(data, jnp.int32), jax.sharding.NamedSharding(mesh, P("fsdp")))


@nnx.jit
def train_step(model, optimizer, tokens):
    def loss_fn(model):
        graphdef, state = nnx.split(model)
        forward = jax.sharding.auto_axes(lambda st, t: nnx.merge(graphdef, st)(t), out_sharding=P("fsdp"))
        logits = forward(state, tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


TXS = {}  # one optimizer per (schedule, structure), as a client builds it once: train_step compiles once per mesh


def build(schedule, structure):
    """A fresh model and optimizer (call under ``jax.set_mesh``); ``schedule=None``: adam alone."""
    model = Decoder(nnx.Rngs(0))
    if (schedule, structure) not in TXS:
        tx = optax.adam(1e-2)
        if schedule is not None:
            fan_in = fan_in_axes_from(model) if structure else None
            tx = optax.chain(tx, magnitude_pruning(schedule, T, structure=structure, fan_in_axes=fan_in))
        TXS[schedule, structure] = tx
    return model, nnx.Optimizer(model, TXS[schedule, structure], wrt=nnx.Param)


def train(model, optimizer, tokens, steps):
    for _ in range(steps):
        train_step(model, optimizer, tokens)


def kernels(model):
    params = nnx.state(model, nnx.Param)
    return {path: np.asarray(jax.device_get(_at(params, path))) for path in TRUE_FAN_IN}


def _at(state, path):
    for key in path.split("/"):
        state = state[key]
    return state[...]


def groups_along(w, axes, m=4):
    """``w`` as [groups, m, rest]: its fan-in ``axes`` first, flattened, cut into runs of ``m``."""
    moved = np.moveaxis(w, axes, range(len(axes)))
    fan_in = int(np.prod(moved.shape[:len(axes)]))
    return moved.reshape(fan_in // m, m, -1)


def reference_two_of_four(w, axes):
    """NumPy: True for the 2 largest |w| of every 4 consecutive weights along ``axes``."""
    g = np.abs(groups_along(w, axes))
    rank = np.argsort(np.argsort(-g, axis=1, kind="stable"), axis=1, kind="stable")
    kept = groups_along(np.ones_like(w), axes) * (rank < 2)
    moved = np.moveaxis(w, axes, range(len(axes)))
    return np.moveaxis(kept.reshape(moved.shape), range(len(axes)), axes).astype(bool)


def assert_every_state_leaf_is_an_array(optimizer):
    """What a client's start-up log does: every variable of the optimizer state has a shape and dtype."""
    for path, var in nnx.to_flat_state(nnx.state(optimizer)):
        assert isinstance(var.shape, tuple) and var.dtype is not None, path


@pytest.mark.parametrize("fsdp, tensor", [(1, 1), (2, 1), (4, 2)])
def test_global_pruning_on_an_explicit_mesh_is_exact(fsdp, tensor):
    mesh = make_mesh(fsdp, tensor)
    with jax.set_mesh(mesh):
        model, optimizer = build(GRADUAL, None)
        assert_every_state_leaf_is_an_array(optimizer)
        train(model, optimizer, tokens_on(mesh), T)
        assert_every_state_leaf_is_an_array(optimizer)
        masks = get_masks(optimizer.opt_state)
        weights = kernels(model)
    report = sparsity_summary(masks)
    assert set(report.tensors) == set(TRUE_FAN_IN)
    size = sum(w.size for w in weights.values())
    assert report.active == round(0.5 * size) == sum(np.count_nonzero(w) for w in weights.values())
    assert str(model.block.attn.kv.kernel[...].sharding.spec) == str(P(None, "tensor", "fsdp", None))


@pytest.mark.parametrize("fsdp, tensor", [(1, 2), (4, 2)])
def test_two_of_four_read_from_the_model_keeps_the_top_two_along_each_true_contraction(fsdp, tensor):
    """One 2:4 event before step 4 keeps, in every group of 4 along each kernel's true fan-in, the 2
    largest weights of what the dense run holds after step 3 (NumPy reference)."""
    mesh = make_mesh(fsdp, tensor)
    event = ONE_SHOT.event_steps(T)[0]
    with jax.set_mesh(mesh):
        tokens = tokens_on(mesh)
        dense, dense_opt = build(None, None)
        train(dense, dense_opt, tokens, event)
        model, optimizer = build(ONE_SHOT, "2:4")
        train(model, optimizer, tokens, event)
        assert_every_state_leaf_is_an_array(optimizer)
        masks = get_masks(optimizer.opt_state)
    before = kernels(dense)
    after = kernels(model)
    for path, axes in TRUE_FAN_IN.items():
        mask = np.asarray(_at(masks, path))
        np.testing.assert_array_equal(mask, reference_two_of_four(before[path], axes), err_msg=path)
        np.testing.assert_array_equal(after[path] != 0, mask, err_msg=path)
        assert (groups_along(mask, axes).sum(axis=1) == 2).all(), path


@pytest.mark.parametrize("fsdp, tensor, structure", [(1, 1, None), (4, 2, "2:4")])
def test_orbax_restore_continues_bit_identically(fsdp, tensor, structure, tmp_path):
    mesh = make_mesh(fsdp, tensor)
    with jax.set_mesh(mesh):
        tokens = tokens_on(mesh)
        model, optimizer = build(GRADUAL, structure)
        train(model, optimizer, tokens, 4)  # two events in
        with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
            manager.save(4, args=ocp.args.Composite(model=ocp.args.StandardSave(nnx.state(model)),
                                                    optimizer=ocp.args.StandardSave(nnx.state(optimizer))))
            manager.wait_until_finished()
        train(model, optimizer, tokens, T - 4)
        resumed, resumed_opt = build(GRADUAL, structure)
        with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
            abstract = {name: jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.state(obj))
                        for name, obj in (("model", resumed), ("optimizer", resumed_opt))}
            restored = manager.restore(4, args=ocp.args.Composite(
                **{name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}))
        nnx.update(resumed, restored["model"])
        nnx.update(resumed_opt, restored["optimizer"])
        train(resumed, resumed_opt, tokens, T - 4)
        masks, resumed_masks = get_masks(optimizer.opt_state), get_masks(resumed_opt.opt_state)
    for a, b in zip(jax.tree.leaves((nnx.state(model), masks)), jax.tree.leaves((nnx.state(resumed), resumed_masks))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sparsity_summary(masks).sparsity == pytest.approx(0.5, abs=0.01)
