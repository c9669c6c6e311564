"""The pruning library inside code shaped like other people's Flax projects: `nn.with_partitioning`
params, DenseGeneral attention kernels q/k/v [D, H, Dh] and out [H, Dh, D], a tied embedding as the
output head (`embed.attend`), clip_by_global_norm + inject_hyperparams(adamw) with a weight-decay
mask inside optax.MultiSteps, a loop of T+1 updates, and the optimizer state saved and restored with
orbax's StandardCheckpointer."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxsparse.pruning import Schedule, get_masks, magnitude_pruning, mask_collection, sparsity_summary
from jaxsparse.pruning.linen import MaskedDense, MaskedDenseGeneral

VOCAB, D, H, SEQ, BATCH = 32, 16, 2, 8, 4
T, ACCUM = 12, 2  # optimizer updates of the schedule; micro-batches per update (MultiSteps)
SCHED = Schedule("geometric", 0.5, 0.25, 0.75, 2)  # events before updates 3, 5, 7, 9
KERNELS = {"attn/query/kernel", "attn/key/kernel", "attn/value/kernel", "attn/out/kernel",
           "mlp/up/kernel", "mlp/down/kernel"}


def boxed(init, *names):
    return nn.with_partitioning(init, names)


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        init = nn.initializers.lecun_normal()
        qkv = [MaskedDenseGeneral((H, D // H), use_bias=False, name=n,
                                  kernel_init=boxed(init, "embed", "heads", "kv"))(x)
               for n in ("query", "key", "value")]
        q, k, v = qkv
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D // H), axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", w, v)
        return MaskedDenseGeneral(D, axis=(-2, -1), use_bias=False, name="out",
                                  kernel_init=boxed(init, "heads", "kv", "embed"))(o)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        init = nn.initializers.lecun_normal()
        h = nn.gelu(MaskedDense(4 * D, kernel_init=boxed(init, "embed", "mlp"), name="up")(x))
        return MaskedDense(D, kernel_init=boxed(init, "mlp", "embed"), name="down")(h)


class Decoder(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(VOCAB, D, embedding_init=boxed(nn.initializers.normal(1.0), "vocab", "embed"),
                         name="embed")
        x = embed(tokens)
        x = x + Attention(name="attn")(nn.RMSNorm(name="norm_attn")(x))
        x = x + MLP(name="mlp")(nn.RMSNorm(name="norm_mlp")(x))
        return embed.attend(nn.RMSNorm(name="norm_out")(x))  # tied output head


def fan_in(path, leaf):
    """The client's DenseGeneral kernels; rank-2 kernels are inferred (None)."""
    return {"attn/out/kernel": (0, 1)}.get(path, 0 if leaf.ndim == 3 else None)


def make_tx(**pruning):
    lr = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, T)
    decay_mask = lambda params: jax.tree.map(lambda w: w.ndim >= 2, params)  # noqa: E731
    adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=lr, weight_decay=0.1, mask=decay_mask)
    inner = optax.chain(optax.clip_by_global_norm(1.0), adamw, magnitude_pruning(SCHED, T, **pruning))
    return optax.MultiSteps(inner, every_k_schedule=ACCUM)


def data():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.integers(0, VOCAB, size=((T + 1) * ACCUM, BATCH, SEQ + 1)), jnp.int32)


def make_step(model, tx):
    @jax.jit
    def step(params, opt_state, batch):
        masks = mask_collection(get_masks(opt_state))

        def loss_fn(p):
            logits = model.apply({"params": p, "masks": masks}, batch[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    return step


def train(tx, micro_steps, params=None, opt_state=None, start=0):
    model, batches = Decoder(), data()
    if params is None:
        params = model.init(jax.random.key(0), batches[0, :, :-1])["params"]
        opt_state = tx.init(params)
    step = make_step(model, tx)
    for t in range(start, start + micro_steps):
        params, opt_state = step(params, opt_state, batches[t])
    return params, opt_state


def pruned_and_kept(params, masks):
    """{module path: (weights, mask)} of the masked kernels, unboxed."""
    weights = nn.unbox(params)
    out = {}
    for path, m in jax.tree_util.tree_flatten_with_path(mask_collection(masks))[0]:
        name = "/".join(k.key for k in path)
        w = weights
        for k in path:
            w = w[k.key]
        out[name] = (np.asarray(w), np.asarray(m))
    return out


@pytest.fixture(scope="module")
def trained():
    """T + 1 updates (one more than the schedule's T) of ACCUM micro-batches each."""
    tx = make_tx()
    params, opt_state = train(tx, (T + 1) * ACCUM)
    return tx, params, opt_state


def test_boxed_client_reaches_the_scheduled_sparsity_with_pruned_weights_exactly_zero(trained):
    _, params, opt_state = trained
    assert isinstance(params["attn"]["query"]["kernel"], nn.Partitioned)
    assert optax.tree_utils.tree_get(opt_state, "mini_step") == 0
    masks = get_masks(opt_state)
    report = sparsity_summary(masks)
    assert set(report.tensors) == KERNELS  # module paths, no "/value"; embedding (the head) not pruned
    assert report.sparsity == pytest.approx(0.5, abs=1 / report.prunable)
    for name, (w, m) in pruned_and_kept(params, masks).items():
        assert (~m).any() and np.all(w[~m] == 0.0) and np.all(w[m] != 0.0), name
    assert sparsity_summary(nn.unbox(params)).active == report.active
    head = np.asarray(nn.unbox(params)["embed"]["embedding"])
    assert np.all(head != 0.0)


def test_the_state_restored_by_orbax_continues_exactly(tmp_path, trained):
    tx, params_full, state_full = trained
    half = (T // 2) * ACCUM + 1  # mid-run, inside MultiSteps' accumulation, after two events
    params, opt_state = train(tx, half)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "opt", opt_state)
    ckpt.wait_until_finished()
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, opt_state)
    restored = ckpt.restore(tmp_path / "opt", target)
    assert jax.tree.structure(restored) == jax.tree.structure(opt_state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(opt_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params, restored = train(tx, (T + 1) * ACCUM - half, params, restored, start=half)
    for a, b in zip(jax.tree.leaves(get_masks(restored)), jax.tree.leaves(get_masks(state_full))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_full)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_two_of_four_groups_along_the_fan_in_of_dense_general_kernels():
    tx = make_tx(structure="2:4", fan_in_axes=fan_in)
    params, opt_state = train(tx, (T + 1) * ACCUM)
    kept = pruned_and_kept(params, get_masks(opt_state))
    for name, (w, m) in kept.items():
        assert np.all(w[~m] == 0.0), name
        axes = fan_in(name, m)
        axes = (0,) if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        n_in = int(np.prod([m.shape[a] for a in axes]))
        groups = m.reshape(n_in // 4, 4, -1)  # fan-in axes lead every kernel here: group along them
        assert np.all(groups.sum(axis=1) == 2), name
    q = kept["attn/query/kernel"][1]  # [D, H, Dh]: groups run along D, not along the 2 heads
    assert q.shape == (D, H, D // H)


def test_ambiguous_fan_in_is_refused_naming_the_kernel():
    params = Decoder().init(jax.random.key(0), data()[0, :, :-1])["params"]
    with pytest.raises(ValueError, match=r"attn/key/kernel with shape \(16, 2, 8\) are ambiguous.*fan_in_axes="):
        make_tx(structure="2:4").init(params)
    with pytest.raises(ValueError, match=r"m=4 does not divide the fan-in 2 .*attn/out/kernel"):
        make_tx(structure="2:4", fan_in_axes=lambda p, w: 0 if w.ndim == 3 else None).init(params)


def test_include_and_exclude_match_boxed_kernels_by_module_path():
    params = Decoder().init(jax.random.key(0), data()[0, :, :-1])["params"]
    masks = get_masks(magnitude_pruning(SCHED, T, include="kernel$").init(params))
    assert set(sparsity_summary(masks).tensors) == KERNELS
    masks = get_masks(magnitude_pruning(SCHED, T, include="kernel$", exclude="attn/value/kernel$").init(params))
    assert set(sparsity_summary(masks).tensors) == KERNELS - {"attn/value/kernel"}
    with pytest.raises(ValueError, match=r"include='kernel/value\$' matches no parameter; .*attn/query/kernel"):
        magnitude_pruning(SCHED, T, include="kernel/value$").init(params)
