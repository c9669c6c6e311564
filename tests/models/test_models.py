"""Tests of jaxsparse.models: forward pass, masks, init, accounting, scan/remat, bad input, CLI."""
import json
import math
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsparse.models import (SIZES, ModelConfig, Transformer, attention_flops_per_token, flops_per_token,
                              get_config, param_counts)

BATCH, SEQ = 2, 16


def _paths(tree):
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _loss(model, params, masks, tokens):
    variables = {"params": params} if masks is None else {"params": params, "masks": masks}
    logits = model.apply(variables, tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()


@pytest.fixture(scope="module")
def setup():
    cfg = get_config("test")
    model = Transformer(cfg)
    variables = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32)))
    tokens = jax.random.randint(jax.random.key(1), (BATCH, SEQ), 0, cfg.vocab_size, jnp.int32)
    apply = jax.jit(model.apply)
    return cfg, model, variables, tokens, apply


def test_output_shape_dtype_and_masks_at_init(setup):
    cfg, model, variables, tokens, apply = setup
    logits = apply(variables, tokens)
    assert logits.shape == (BATCH, SEQ, cfg.vocab_size) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    params, masks = _paths(variables["params"]), _paths(variables["masks"])
    kernels = {p for p in params if p.endswith("['kernel']")}
    assert set(masks) == kernels and len(kernels) == 7 * cfg.n_layers + 1
    for path, mask in masks.items():
        assert mask.dtype == jnp.bool_ and mask.shape == params[path].shape and bool(mask.all()), path
        assert params[path].ndim == 2, path
    assert [p for p in params if "embed" in p] == ["['embed']['embedding']"]


def test_causal(setup):
    cfg, model, variables, tokens, apply = setup
    t = 9
    changed = tokens.at[:, t].set((tokens[:, t] + 1) % cfg.vocab_size)
    a, b = apply(variables, tokens), apply(variables, changed)
    np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
    assert float(jnp.abs(a[:, t] - b[:, t]).max()) > 1e-3


@pytest.mark.parametrize("path", [("layers_0", "mlp", "wi_0", "kernel"), ("layers_1", "attn", "q", "kernel"),
                                  ("lm_head", "kernel")])
def test_zero_mask_entry_cuts_weight_and_its_gradient(setup, path):
    cfg, model, variables, tokens, apply = setup
    entry = (3, 5)

    def at(tree):
        for key in path:
            tree = tree[key]
        return tree

    def replace(tree, value):
        return jax.tree_util.tree_map_with_path(
            lambda p, x: value if tuple(k.key for k in p) == path else x, tree)

    masks = replace(variables["masks"], at(variables["masks"]).at[entry].set(False))
    bumped = replace(variables["params"], at(variables["params"]).at[entry].add(3.0))
    base = apply({"params": variables["params"], "masks": masks}, tokens)
    np.testing.assert_array_equal(apply({"params": bumped, "masks": masks}, tokens), base)
    # The same bump is visible when the weight is not masked: the check above can fail.
    assert float(jnp.abs(apply({"params": bumped, "masks": variables["masks"]}, tokens) - base).max()) > 1e-4
    grads = jax.grad(lambda p: _loss(model, p, masks, tokens))(variables["params"])
    grad = at(grads)
    assert float(grad[entry]) == 0.0
    assert float(jnp.abs(grad).max()) > 0


def test_missing_masks_mean_unmasked(setup):
    cfg, model, variables, tokens, apply = setup
    no_masks = apply({"params": variables["params"]}, tokens)
    np.testing.assert_array_equal(no_masks, apply(variables, tokens))  # all-True masks change nothing
    zero_head = dict(variables["masks"], lm_head={"kernel": jnp.zeros((cfg.d_model, cfg.vocab_size), bool)})
    assert float(jnp.abs(apply({"params": variables["params"], "masks": zero_head}, tokens)).max()) == 0.0
    partial = {k: v for k, v in zero_head.items() if k != "lm_head"}
    np.testing.assert_array_equal(apply({"params": variables["params"], "masks": partial}, tokens), no_masks)


def test_initialisation_statistics(setup):
    cfg, model, variables, tokens, apply = setup
    params = _paths(variables["params"])
    std = lambda x: float(jnp.std(x))  # noqa: E731
    assert abs(std(params["['embed']['embedding']"]) - 1.0) < 0.05
    for path, value in params.items():
        if path.endswith("['scale']"):
            assert bool(jnp.all(value == 1.0)), path
        elif path.endswith("['kernel']"):
            want = 1.0 / math.sqrt(value.shape[0])
            if "['q']" in path:
                want /= math.sqrt(cfg.head_dim)
            assert abs(std(value) / want - 1.0) < 0.1, (path, std(value), want)
            assert value.dtype == jnp.float32


def _restack(variables, n_layers):
    """Non-scanned variables -> scanned layout: layers_i subtrees stacked on a leading axis under 'layers'."""
    out = {}
    for col, tree in variables.items():
        layers = [tree[f"layers_{i}"] for i in range(n_layers)]
        out[col] = {k: v for k, v in tree.items() if not k.startswith("layers_")}
        out[col]["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    return out


def test_scan_and_remat_match_unrolled(setup):
    cfg, model, variables, tokens, apply = setup
    keys = iter(jax.random.split(jax.random.key(2), 64))
    masks = jax.tree.map(lambda m: jax.random.bernoulli(next(keys), 0.7, m.shape), variables["masks"])
    scanned_cfg = get_config("test", scan_layers=True, remat=True)
    scanned = Transformer(scanned_cfg)
    stacked = _restack({"params": variables["params"], "masks": masks}, cfg.n_layers)
    shapes = jax.eval_shape(lambda: nn.unbox(scanned.init(jax.random.key(0), tokens)))
    assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(lambda x: x.shape, stacked)
    np.testing.assert_allclose(jax.jit(scanned.apply)(stacked, tokens),
                               apply({"params": variables["params"], "masks": masks}, tokens), atol=1e-5, rtol=0)
    # A scanned model with some masks left out uses those kernels unmasked.
    partial = {"params": stacked["params"], "masks": {"layers": {"mlp": stacked["masks"]["layers"]["mlp"]}}}
    attn_unmasked = jax.tree_util.tree_map_with_path(
        lambda p, m: jnp.ones_like(m) if "attn" in jax.tree_util.keystr(p) or "lm_head" in jax.tree_util.keystr(p)
        else m, masks)
    np.testing.assert_allclose(jax.jit(scanned.apply)(partial, tokens),
                               apply({"params": variables["params"], "masks": attn_unmasked}, tokens),
                               atol=1e-5, rtol=0)
    grad_unrolled = jax.jit(jax.grad(lambda p: _loss(model, p, masks, tokens)))(variables["params"])
    grad_scanned = jax.jit(jax.grad(lambda p: _loss(scanned, p, stacked["masks"], tokens)))(stacked["params"])
    for a, b in zip(jax.tree.leaves(_restack({"g": grad_unrolled}, cfg.n_layers)["g"]),
                    jax.tree.leaves(grad_scanned)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits(setup):
    cfg, model, variables, tokens, apply = setup
    bf16 = Transformer(get_config("test", dtype="bfloat16"))
    logits = jax.jit(bf16.apply)(variables, tokens)
    assert logits.dtype == jnp.float32
    reference = apply(variables, tokens)
    assert float(jnp.abs(logits - reference).max()) < 0.1 * float(jnp.abs(reference).max())
    shapes = jax.eval_shape(lambda: nn.unbox(bf16.init(jax.random.key(0), tokens)))
    assert {x.dtype for x in jax.tree.leaves(shapes["params"])} == {jnp.dtype("float32")}


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,scan", [("test", False), ("test", True), ("demo", False), ("demo", True)])
def test_param_counts_match_initialised_model(name, scan):
    cfg = get_config(name, scan_layers=scan)
    shapes = jax.eval_shape(lambda: nn.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))))
    counts = param_counts(cfg)
    params = _paths(shapes["params"])
    assert _count(shapes["params"]) == counts.total
    assert _count(shapes["masks"]) == counts.prunable
    assert sum(math.prod(x.shape) for p, x in params.items() if "embed" in p) == counts.embedding
    norms = sum(math.prod(x.shape) for p, x in params.items() if p.endswith("['scale']"))
    assert counts.other == counts.total - counts.prunable == counts.embedding + norms
    if name == "demo":
        assert 2e6 < counts.total < 10e6


@pytest.mark.parametrize("name,total,prunable,unit", [
    ("58m", 57.94, 41.55, 1e6), ("162m", 162.42, 137.82, 1e6), ("468m", 468.24, 435.42, 1e6),
    ("1b", 1.20, 1.14, 1e9)])
def test_param_counts_match_paper(name, total, prunable, unit):
    counts = param_counts(get_config(name))
    assert round(counts.total / unit, 2) == total
    assert round(counts.prunable / unit, 2) == prunable


def test_flops_per_token_against_xla_cost_analysis(setup):
    cfg, model, variables, tokens, apply = setup
    seq = cfg.max_seq_len
    toks = jnp.zeros((BATCH, seq), jnp.int32)
    lowered = jax.jit(jax.value_and_grad(lambda p: _loss(model, p, variables["masks"], toks))).lower(
        variables["params"])
    xla_flops = lowered.cost_analysis()["flops"]
    ours = flops_per_token(cfg, seq) * BATCH * seq
    # XLA also counts elementwise work (norms, softmax, loss, mask multiply), which the formula omits.
    assert ours <= xla_flops <= 1.05 * ours, (ours, xla_flops)
    sparse = flops_per_token(cfg, seq, density=0.25)
    assert sparse == flops_per_token(cfg, seq) - round(6 * 0.75 * param_counts(cfg).prunable)
    assert flops_per_token(cfg, seq, density=0.0) == attention_flops_per_token(cfg, seq)


@pytest.mark.parametrize("kwargs,field", [
    (dict(d_model=65), "n_heads"), (dict(vocab_size=0), "vocab_size"), (dict(max_seq_len=0), "max_seq_len"),
    (dict(n_layers=0), "n_layers"), (dict(dtype="float16"), "dtype"), (dict(param_dtype="int8"), "param_dtype"),
    (dict(head_dim=15), "head_dim"), (dict(scan_layers=1), "scan_layers")])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        get_config("test", **kwargs)
    base = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4)
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{**base, **kwargs})


def test_bad_size_name_and_override():
    with pytest.raises(ValueError, match="allowed names.*162m"):
        get_config("2b")
    with pytest.raises(ValueError, match="n_head"):
        get_config("test", n_head=4)
    assert get_config("162M") == get_config("162m") and "1b" in SIZES
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(get_config("test"), 0)
    with pytest.raises(ValueError, match="density"):
        flops_per_token(get_config("test"), 8, density=1.5)


def test_bad_apply_inputs(setup):
    cfg, model, variables, tokens, apply = setup
    transposed = dict(variables["masks"], lm_head={"kernel": variables["masks"]["lm_head"]["kernel"].T})
    with pytest.raises(ValueError, match="mask of lm_head/kernel has shape"):
        model.apply({"params": variables["params"], "masks": transposed}, tokens)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.apply(variables, jnp.zeros((1, cfg.max_seq_len + 1), jnp.int32))
    with pytest.raises(ValueError, match="tokens"):
        model.apply(variables, jnp.zeros((1, 4), jnp.float32))


def test_cli_prints_accounting_json():
    out = subprocess.run([sys.executable, "-m", "jaxsparse.models", "162m"], capture_output=True, text=True,
                         check=True, timeout=120)
    report = json.loads(out.stdout)
    counts = param_counts(get_config("162m"))
    for key in ("total", "prunable", "embedding", "other"):
        assert report[key] == getattr(counts, key)
    assert report["flops_per_token"] == flops_per_token(get_config("162m"), 2048)
    bad = subprocess.run([sys.executable, "-m", "jaxsparse.models", "2b"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "allowed names" in bad.stderr
