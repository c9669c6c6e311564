"""Sharding of the model on 8 fake CPU devices (tests/conftest.py): rules, mesh, equality with one device."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsparse.models import (DEFAULT_RULES, MESH_AXES, Transformer, batch_sharding, get_config, init_variables,
                              make_mesh, variable_shardings)
from jaxsparse.models.sharding import active_mesh, activation_sharding, constrain, traced_with_activation_sharding


def _specs(shardings):
    return {jax.tree_util.keystr(p): s.spec for p, s in jax.tree_util.tree_leaves_with_path(shardings)}


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"
    return make_mesh(2, 2, 2)


def test_make_mesh(mesh):
    assert mesh.axis_names == MESH_AXES and dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError, match="product must equal the device count"):
        make_mesh(2, 2, 1)
    with pytest.raises(ValueError, match="tensor"):
        make_mesh(8, 1, 0)
    assert make_mesh(1, 1, 1, devices=jax.devices()[:1]).devices.shape == (1, 1, 1)


def test_sharded_logits_match_one_device(mesh):
    cfg = get_config("test")
    model = Transformer(cfg)
    tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, cfg.vocab_size, jnp.int32)
    variables = nn.unbox(model.init(jax.random.key(0), tokens))
    keys = iter(jax.random.split(jax.random.key(2), 64))
    variables["masks"] = jax.tree.map(lambda m: jax.random.bernoulli(next(keys), 0.6, m.shape), variables["masks"])
    expected = jax.jit(model.apply)(variables, jax.device_put(tokens, jax.devices()[0]))

    abstract, shardings = variable_shardings(model, mesh, DEFAULT_RULES, tokens.shape)
    specs = _specs(shardings)
    assert specs["['params']['layers_0']['attn']['q']['kernel']"] == P("fsdp", "tensor")
    assert specs["['params']['layers_0']['attn']['o']['kernel']"] == P("tensor", "fsdp")
    assert specs["['params']['layers_1']['mlp']['wo']['kernel']"] == P("tensor", "fsdp")
    assert specs["['params']['embed']['embedding']"] == P("tensor", "fsdp")
    assert specs["['params']['lm_head']['kernel']"] == P("fsdp", "tensor")
    assert specs["['params']['final_norm']['scale']"] == P(None)
    for path, spec in specs.items():  # every mask is sharded exactly like its kernel
        if path.startswith("['masks']"):
            assert spec == specs[path.replace("['masks']", "['params']", 1)], path
    assert jax.tree.structure(abstract) == jax.tree.structure(variables)
    assert all(a.shape == v.shape and a.dtype == v.dtype
               for a, v in zip(jax.tree.leaves(abstract), jax.tree.leaves(variables)))

    sharded = jax.device_put(variables, shardings)
    q = sharded["params"]["layers_0"]["attn"]["q"]["kernel"]
    assert q.addressable_shards[0].data.shape == (cfg.d_model // 2, cfg.qkv_dim // 2)
    apply = jax.jit(model.apply, in_shardings=(shardings, batch_sharding(mesh)))
    logits = apply(sharded, jax.device_put(tokens, batch_sharding(mesh)))
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-5, rtol=0)

    fresh = init_variables(model, jax.random.key(0), tokens.shape, shardings)
    assert fresh["masks"]["lm_head"]["kernel"].sharding == shardings["masks"]["lm_head"]["kernel"]
    np.testing.assert_array_equal(fresh["params"]["lm_head"]["kernel"], variables["params"]["lm_head"]["kernel"])


def test_scanned_variables_get_a_replicated_layers_axis(mesh):
    model = Transformer(get_config("test", scan_layers=True))
    _, shardings = variable_shardings(model, mesh, DEFAULT_RULES, (4, 8))
    specs = _specs(shardings)
    assert specs["['params']['layers']['attn']['q']['kernel']"] == P(None, "fsdp", "tensor")
    assert specs["['masks']['layers']['mlp']['wi_1']['kernel']"] == P(None, "fsdp", "tensor")
    assert specs["['params']['layers']['mlp_norm']['scale']"] == P(None, None)


def test_bad_rules_and_indivisible_dimensions(mesh):
    model = Transformer(get_config("test"))
    bad_rules = tuple(r if r[0] != "mlp" else ("mlp", "model") for r in DEFAULT_RULES)
    with pytest.raises(ValueError, match="'mlp'.*'model'.*not in the mesh"):
        variable_shardings(model, mesh, bad_rules, (4, 8))
    missing = tuple(r for r in DEFAULT_RULES if r[0] != "norm")
    with pytest.raises(ValueError, match=r"\['scale'\].*'norm'"):
        variable_shardings(model, mesh, missing, (4, 8))
    odd_vocab = Transformer(get_config("test", vocab_size=255))
    with pytest.raises(ValueError, match=r"\['embed'\]\['embedding'\].*dimension 0.*size 255.*'tensor'"):
        variable_shardings(odd_vocab, mesh, DEFAULT_RULES, (4, 8))
    narrow = Transformer(get_config("test", d_model=36, n_heads=2))
    with pytest.raises(ValueError, match=r"\['attn'\]\['k'\]\['kernel'\].*dimension 0.*size 36.*'fsdp'"):
        variable_shardings(narrow, make_mesh(1, 8, 1), DEFAULT_RULES, (8, 8))


def test_kernels_are_gathered_masked_before_use(mesh):
    """FSDP's gather before use (models.sharding.gathered): the compiled gradient step on the mesh
    all-gathers exactly the kernels and the embedding table, each once and already masked (never a bool
    mask beside it), and no activation or token batch. (XLA:CPU widens bfloat16 collectives to float32;
    tests/train/tpu_target/test_compile_for.py checks the TPU step.)"""
    cfg = get_config("test", dtype="bfloat16")
    model = Transformer(cfg)
    tokens = jnp.zeros((8, 16), jnp.int32)
    abstract, shardings = variable_shardings(model, mesh, DEFAULT_RULES, tokens.shape)

    def loss(params, masks, toks):
        with activation_sharding(mesh):
            return model.apply({"params": params, "masks": masks}, toks, toks)[0]

    grad = jax.jit(jax.grad(loss), in_shardings=(shardings["params"], shardings["masks"], batch_sharding(mesh)))
    hlo = grad.lower(abstract["params"], abstract["masks"], tokens).compile().as_text()
    gathered = [(dtype, dims.split(",")) for shape in re.findall(r"= (.*?) all-gather(?:-start)?\(", hlo)
                for dtype, dims in re.findall(r"\b(pred|bf16|f32|s32)\[([\d,]*)\]", shape)]
    n_kernels = len(jax.tree.leaves(abstract["masks"]))
    assert len(gathered) == n_kernels + 1, gathered  # every kernel, and the embedding table
    assert all(dtype != "pred" and len(dims) == 2 for dtype, dims in gathered), gathered


def test_traced_with_activation_sharding_constrains_only_inside(mesh):
    """The wrapped function keeps its name (the jitted step's HLO module name) and traces inside the
    context: activations get the rules' sharding there, and the context is gone after the call."""
    def step(x):
        assert active_mesh() is mesh
        return constrain(x * 2.0, ("activation_batch", "activation_length", "activation_embed"))

    wrapped = traced_with_activation_sharding(step, mesh)
    assert wrapped.__name__ == "step"
    assert "@jit_step" in jax.jit(wrapped).lower(jnp.zeros((8, 4, 16))).as_text()
    out = jax.jit(wrapped)(jnp.ones((8, 4, 16)))
    assert out.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"), None, None)), 3)
    assert active_mesh() is None
    unconstrained = traced_with_activation_sharding(lambda x: (active_mesh(), x)[1], None)
    assert float(unconstrained(jnp.ones(()))) == 1.0
