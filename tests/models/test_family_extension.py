"""A model family that is not LLaMA-shaped, defined and registered in this one file, goes through
every command line (train with pruning, resume, generate, evaluate; export refuses it), and the
parameter counts N̄ matching uses are the measured ones for every registered family.

The family ("test_gpt": learned positions, LayerNorm with biases, GELU MLP, no rotary embedding)
reaches the subprocesses through the config key `imports` (this module's name, this folder on
PYTHONPATH): nothing in the package names it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from fault_utils import kill_when, reader
from train_utils import cli_env, run_cli, tiny_config, train_cmd, write_corpus

from jaxsparse import models
from jaxsparse.evaluate import main as evaluate_main
from jaxsparse.export import main as export_main
from jaxsparse.models.layers import ShardedMaskedDense
from jaxsparse.sweep import matching
from jaxsparse.train import prepare

FAMILY = "test_gpt"
MODULE = Path(__file__).stem


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis, in float32."""

    eps: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (features,))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), (features,))
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
        return ((x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias).astype(self.dtype)


class GPTBlock(nn.Module):
    """Pre-LayerNorm block: causal softmax attention (no rotary), then a GELU MLP."""

    config: models.ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, dtype = self.config, jnp.dtype(self.config.dtype)
        batch, length, _ = x.shape
        h = LayerNorm(cfg.norm_eps, dtype, name="ln_1")(x)
        q, k, v = (ShardedMaskedDense(cfg.qkv_dim, ("embed", "heads"), dtype, name=n)(h)
                   .reshape(batch, length, cfg.n_heads, cfg.head_dim) for n in ("q", "k", "v"))
        scores = jnp.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(cfg.head_dim)
        causal = jnp.tril(jnp.ones((length, length), jnp.bool_))
        probs = jax.nn.softmax(jnp.where(causal, scores, -1e30).astype(jnp.float32), -1).astype(dtype)
        attended = jnp.einsum("bhqs,bshk->bqhk", probs, v).reshape(batch, length, cfg.qkv_dim)
        x = x + ShardedMaskedDense(cfg.d_model, ("heads", "embed"), dtype, name="o")(attended)
        h = LayerNorm(cfg.norm_eps, dtype, name="ln_2")(x)
        h = nn.gelu(ShardedMaskedDense(cfg.mlp_dim, ("embed", "mlp"), dtype, name="fc_in")(h))
        return x + ShardedMaskedDense(cfg.d_model, ("mlp", "embed"), dtype, name="fc_out")(h)


@models.register(FAMILY)
class GPT(nn.Module):
    """GPT-2-shaped decoder: token + learned position embeddings, blocks, final LayerNorm, LM head.
    Called as the family contract says (`jaxsparse.models.registry`)."""

    config: models.ModelConfig

    @nn.compact
    def __call__(self, tokens, targets=None, weights=None):
        cfg, dtype = self.config, jnp.dtype(self.config.dtype)
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, name="embed", embedding_init=(
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed"))))
        positions = self.param("pos_embed", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), (None, "embed")), (cfg.max_seq_len, cfg.d_model))
        x = embed(tokens) + positions[: tokens.shape[1]].astype(dtype)
        for i in range(cfg.n_layers):
            x = GPTBlock(cfg, name=f"block_{i}")(x)
        x = LayerNorm(cfg.norm_eps, dtype, name="ln_f")(x)
        logits = ShardedMaskedDense(cfg.vocab_size, ("embed", "vocab"), dtype, out_dtype=jnp.float32,
                                    name="lm_head")(x)
        if targets is None:
            return logits
        weights = jnp.ones(targets.shape, jnp.float32) if weights is None else weights
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return jnp.sum(nats * weights), jnp.sum(weights)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), files=4, paragraphs=30)


def test_counts_used_for_matching_are_the_measured_ones_for_every_family(corpus):
    assert {models.DEFAULT_FAMILY, FAMILY} <= set(models.families())
    for family in models.families():
        config = tiny_config(corpus, **{"model.family": family, "train.steps": 0, "train.budget": 20.0})
        run = prepare(config)
        matched = matching.config_param_counts(config)  # what N̄ matching reads
        assert matched == run.plan.params == models.param_counts(run.model_config), family
        measured = jax.tree.leaves(jax.eval_shape(lambda: run.model.init(  # noqa: B023
            jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"])
        assert matched.total == sum(math.prod(leaf.shape) for leaf in measured), family
        assert matching.steps_for(config, 20.0, matched.total) == run.steps, family
    gpt = models.param_counts(models.get_config("test", family=FAMILY, vocab_size=384))
    llama = models.param_counts(models.get_config("test", vocab_size=384))
    assert gpt != llama and gpt.prunable == llama.prunable - 2 * 64 * 256  # no gate kernel


def test_a_family_defined_in_a_test_file_trains_prunes_resumes_generates_and_evaluates(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", files=4, paragraphs=30)
    env = cli_env(tmp_path / "data")
    here = Path(__file__).parent  # this module, and the helpers it imports from tests/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), str(here.parent), env.get("PYTHONPATH")]))
    workdir = tmp_path / "run"
    args = train_cmd(corpus, workdir, f"--config.imports={MODULE}", f"--config.model.family={FAMILY}",
                     "--config.train.steps=8", "--config.checkpoint.every_steps=4",
                     "--config.eval.every_steps=4", "--config.checkpoint.async_save=false")
    assert kill_when(args, env, lambda: (workdir / "checkpoints" / "4").is_dir())
    assert not (workdir / "summary.json").exists()
    resumed = run_cli(args, env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 4" in resumed.stdout + resumed.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["config"]["model"]["family"] == FAMILY and summary["steps"] == 8
    assert summary["final_sparsity"] == pytest.approx(0.75, abs=0.01)
    assert summary["n_total"] == models.param_counts(models.get_config(
        "test", family=FAMILY, vocab_size=384, max_seq_len=32)).total

    # a fresh process finds the family through the checkpoint's config.imports
    generated = run_cli(reader("generate", f"--workdir={workdir}", "--prompt=the ", "--max_new_tokens=6",
                               "--temperature=0", "--json"), env)
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout.splitlines()[-1])["prompt"] == "the "
    assert evaluate_main([f"--workdir={workdir}", f"--out={tmp_path / 'eval.json'}"]) == 0  # in-process
    assert 0 < json.loads((tmp_path / "eval.json").read_text())["loss"] < math.log(384)
    assert export_main([f"--workdir={workdir}", f"--out={tmp_path / 'hf'}"]) == 2
    assert f"model.family={FAMILY!r} has no Hugging Face LLaMA mapping" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
