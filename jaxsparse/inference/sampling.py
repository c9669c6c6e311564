"""Prefill and decode with a KV cache in one jitted loop; greedy, temperature, top-k and top-p sampling.

`make_generate_fn(model_cfg, settings, prompt_len, batch)` returns a jitted
`fn(params, masks, prompts, prompt_lens, rng) -> (tokens int32[B, max_new_tokens], lengths int32[B])`:
`prompts` are int32[B, prompt_len], left-padded (row b's real tokens are its last prompt_lens[b]).
One forward pass fills the cache with the prompts, then a `lax.while_loop` emits one token per row per
iteration and stops when every row has emitted `eos_id` or `max_new_tokens` tokens. After its EOS a row
emits `pad_id`; `lengths[b]` counts row b's tokens up to and including its EOS.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from jaxsparse.models import ModelConfig
from jaxsparse.models.decode import DecodeTransformer, empty_cache


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """max_new_tokens: tokens generated per prompt (>= 1). temperature: 0 = greedy (argmax), else
    logits / temperature are sampled. top_k: keep the k most likely tokens (0 = all). top_p: keep the
    smallest set of most likely tokens whose probability reaches top_p (1.0 = all). allowed_vocab: ids
    >= it (the vocabulary's padding) are never produced. eos_id / pad_id: the tokenizer's."""

    max_new_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    allowed_vocab: Optional[int] = None
    eos_id: int = -1
    pad_id: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens={self.max_new_tokens!r}: must be an integer >= 1")
        if not 0 <= self.temperature < math.inf:  # NaN and inf too: sampling would be uniform
            raise ValueError(f"--temperature={self.temperature!r}: must be a finite number >= 0 "
                             "(0 = greedy)")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"--top_k={self.top_k!r}: must be an integer >= 0 (0 = no top-k cut)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top_p={self.top_p!r}: must be a number in (0, 1] (1 = no nucleus cut)")


def next_token(logits: jax.Array, rng: jax.Array, s: SamplingSettings) -> jax.Array:
    """One token per row from float32 logits [B, V] (int32 [B])."""
    neg = jnp.finfo(jnp.float32).min
    if s.allowed_vocab is not None and s.allowed_vocab < logits.shape[-1]:
        logits = jnp.where(jnp.arange(logits.shape[-1]) < s.allowed_vocab, logits, neg)
    if s.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / s.temperature
    if s.top_k:
        kth = jax.lax.top_k(logits, min(s.top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if s.top_p < 1.0:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        cum = jnp.cumsum(jax.nn.softmax(ordered, axis=-1), axis=-1)
        keep = (cum - jax.nn.softmax(ordered, axis=-1)) < s.top_p  # the mass before it is < top_p
        cutoff = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def make_generate_fn(model_cfg: ModelConfig, s: SamplingSettings, prompt_len: int,
                     shardings: Optional[tuple[Any, Any, Any]] = None) -> Callable[..., Any]:
    """The jitted prefill + decode loop (see the module docstring). `shardings`: optional
    (params, masks, batch) shardings; the cache follows the batch's sharding through propagation."""
    cache_len = prompt_len + s.max_new_tokens
    if cache_len > model_cfg.max_seq_len:
        raise ValueError(f"prompt of {prompt_len} tokens + --max_new_tokens={s.max_new_tokens} = {cache_len} "
                         f"tokens exceeds the model's context of {model_cfg.max_seq_len} tokens (the "
                         "training train.seq_len); shorten the prompt or lower --max_new_tokens")
    model = DecodeTransformer(model_cfg, cache_len)

    def generate(params, masks, prompts, prompt_lens, rng):
        batch = prompts.shape[0]
        pad = prompt_len - prompt_lens  # [B] pad slots on the left of each row
        key_valid = jnp.arange(cache_len)[None, :] >= pad[:, None]
        positions = jnp.maximum(jnp.arange(prompt_len)[None, :] - pad[:, None], 0)
        variables = {"params": params, "masks": masks, "cache": empty_cache(model, batch)}
        logits, updated = model.apply(variables, prompts, positions, key_valid, mutable=["cache"])
        rng, first = jax.random.split(rng)
        out = jnp.full((batch, s.max_new_tokens), s.pad_id, jnp.int32)
        init = (0, next_token(logits[:, -1], first, s), jnp.zeros((batch,), jnp.bool_), out,
                updated["cache"], rng, jnp.zeros((batch,), jnp.int32))

        def cond(carry):
            t, _, done, *_ = carry
            return (t < s.max_new_tokens) & ~jnp.all(done)

        def body(carry):
            t, token, done, out, cache, rng, lengths = carry
            out = out.at[:, t].set(jnp.where(done, s.pad_id, token))
            lengths = lengths + (~done).astype(jnp.int32)
            done = done | (token == s.eos_id)
            pos = (prompt_lens + t)[:, None]
            logits, updated = model.apply({"params": params, "masks": masks, "cache": cache},
                                          token[:, None], pos, key_valid, mutable=["cache"])
            rng, sub = jax.random.split(rng)
            return t + 1, next_token(logits[:, 0], sub, s), done, out, updated["cache"], rng, lengths

        _, _, _, out, _, _, lengths = jax.lax.while_loop(cond, body, init)
        return out, lengths

    if shardings is None:
        return jax.jit(generate)
    p_shard, m_shard, b_shard = shardings
    replicated = jax.sharding.NamedSharding(b_shard.mesh, jax.sharding.PartitionSpec())
    vec = jax.sharding.NamedSharding(b_shard.mesh, jax.sharding.PartitionSpec(b_shard.spec[0]))
    return jax.jit(generate, in_shardings=(p_shard, m_shard, b_shard, vec, replicated),
                   out_shardings=(b_shard, vec))
