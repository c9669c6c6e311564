"""`make_generate_fn` takes the family from the registry: a family without a KV-cache decoder
generates, by recomputing each row's prefix, exactly what the LLaMA family's cache generates."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse import models
from jaxsparse.inference.sampling import SamplingSettings, make_generate_fn

NO_DECODER = "test_llama_without_decoder"


@models.register(NO_DECODER)
def llama_without_decoder(config: models.ModelConfig) -> models.Transformer:
    return models.Transformer(config)


def test_a_family_without_a_decoder_generates_what_the_cache_generates():
    cfg = models.get_config("test", max_seq_len=32)
    assert models.decoder(cfg, 16) is not None
    assert models.decoder(dataclasses.replace(cfg, family=NO_DECODER), 16) is None
    variables = models.Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    keys = iter(jax.random.split(jax.random.key(1), 100))
    masks = jax.tree.map(lambda m: jax.random.bernoulli(next(keys), 0.5, m.shape), variables["masks"])
    prompt_lens = jnp.asarray([6, 3, 1], jnp.int32)
    prompts = jax.random.randint(jax.random.key(2), (3, 6), 3, cfg.vocab_size, jnp.int32)
    prompts = jnp.where(jnp.arange(6)[None, :] >= 6 - prompt_lens[:, None], prompts, 0)  # left-padded
    settings = SamplingSettings(max_new_tokens=10, eos_id=-1)
    out = [make_generate_fn(c, settings, 6)(variables["params"], masks, prompts, prompt_lens, jax.random.key(3))
           for c in (cfg, dataclasses.replace(cfg, family=NO_DECODER))]
    (cached, cached_lens), (recomputed, recomputed_lens) = jax.device_get(out)
    np.testing.assert_array_equal(cached, recomputed)
    np.testing.assert_array_equal(cached_lens, recomputed_lens)
    assert len({tuple(row) for row in cached}) == 3  # the rows differ: each saw its own prompt
