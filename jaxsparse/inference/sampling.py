"""Prefill and decode with a KV cache in one jitted loop; greedy, temperature, top-k and top-p sampling.

`make_generate_fn(model_cfg, settings, prompt_len)` returns a jitted
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

from jaxsparse import models
from jaxsparse.models import ModelConfig
from jaxsparse.models.decode import empty_cache


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
    """The jitted prefill + decode loop (see the module docstring) of `model_cfg.family`: with its
    KV-cache decoder (`models.decoder`) or, for a family without one, recomputing the whole prefix
    each token (`_recomputing`). `shardings`: optional (params, masks, batch) shardings; the cache
    follows the batch's sharding through propagation."""
    cache_len = prompt_len + s.max_new_tokens
    if cache_len > model_cfg.max_seq_len:
        raise ValueError(f"prompt of {prompt_len} tokens + --max_new_tokens={s.max_new_tokens} = {cache_len} "
                         f"tokens exceeds the model's context of {model_cfg.max_seq_len} tokens (the "
                         "training train.seq_len); shorten the prompt or lower --max_new_tokens")
    decoder = models.decoder(model_cfg, cache_len)
    prefill, extend = (_cached(decoder, prompt_len, cache_len) if decoder is not None
                       else _recomputing(models.build(model_cfg), prompt_len, cache_len, s.pad_id))

    def generate(params, masks, prompts, prompt_lens, rng):
        batch = prompts.shape[0]
        logits, carry = prefill(params, masks, prompts, prompt_lens)
        rng, first = jax.random.split(rng)
        out = jnp.full((batch, s.max_new_tokens), s.pad_id, jnp.int32)
        init = (0, next_token(logits, first, s), jnp.zeros((batch,), jnp.bool_), out, carry, rng,
                jnp.zeros((batch,), jnp.int32))

        def cond(loop):
            t, _, done, *_ = loop
            return (t < s.max_new_tokens) & ~jnp.all(done)

        def body(loop):
            t, token, done, out, carry, rng, lengths = loop
            out = out.at[:, t].set(jnp.where(done, s.pad_id, token))
            lengths = lengths + (~done).astype(jnp.int32)
            done = done | (token == s.eos_id)
            logits, carry = extend(params, masks, carry, token, prompt_lens + t)
            rng, sub = jax.random.split(rng)
            return t + 1, next_token(logits, sub, s), done, out, carry, rng, lengths

        _, _, _, out, _, _, lengths = jax.lax.while_loop(cond, body, init)
        return out, lengths

    if shardings is None:
        return jax.jit(generate)
    p_shard, m_shard, b_shard = shardings
    replicated = jax.sharding.NamedSharding(b_shard.mesh, jax.sharding.PartitionSpec())
    vec = jax.sharding.NamedSharding(b_shard.mesh, jax.sharding.PartitionSpec(b_shard.spec[0]))
    return jax.jit(generate, in_shardings=(p_shard, m_shard, b_shard, vec, replicated),
                   out_shardings=(b_shard, vec))


# prefill(params, masks, prompts [B, P], prompt_lens [B]) -> (logits [B, V] after each row's last
# prompt token, carry); extend(params, masks, carry, token [B], pos [B]) -> (logits [B, V] after
# `token`, written at position `pos` of its row, carry).
Stepper = tuple[Callable[..., tuple[jax.Array, Any]], Callable[..., tuple[jax.Array, Any]]]


def _cached(model: Any, prompt_len: int, cache_len: int) -> Stepper:
    """Steps of a KV-cache decoder (`models.decode.DecodeTransformer`'s contract): one pass over the
    left-padded prompts fills the cache, then one token per pass. carry: (cache, key_valid)."""

    def prefill(params, masks, prompts, prompt_lens):
        pad = prompt_len - prompt_lens  # [B] pad slots on the left of each row
        key_valid = jnp.arange(cache_len)[None, :] >= pad[:, None]
        positions = jnp.maximum(jnp.arange(prompt_len)[None, :] - pad[:, None], 0)
        cache = empty_cache(model, prompts.shape[0])
        logits, updated = model.apply({"params": params, "masks": masks, "cache": cache}, prompts,
                                      positions, key_valid, mutable=["cache"])
        return logits[:, -1], (updated["cache"], key_valid)

    def extend(params, masks, carry, token, pos):
        cache, key_valid = carry
        logits, updated = model.apply({"params": params, "masks": masks, "cache": cache},
                                      token[:, None], pos[:, None], key_valid, mutable=["cache"])
        return logits[:, 0], (updated["cache"], key_valid)

    return prefill, extend


def _recomputing(model: Any, prompt_len: int, cache_len: int, pad_id: int) -> Stepper:
    """Steps of any family (`model(tokens) -> logits`, causal): each row's tokens sit left-aligned
    in a [B, cache_len] buffer (pad_id after them, which causality keeps unseen) and every token
    runs the whole buffer. carry: the buffer."""

    def logits_at(params, masks, buffer, pos):
        logits = model.apply({"params": params, "masks": masks}, buffer)
        return jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0]

    def prefill(params, masks, prompts, prompt_lens):
        source = jnp.arange(cache_len)[None, :] + (prompt_len - prompt_lens)[:, None]
        taken = jnp.take_along_axis(prompts, jnp.minimum(source, prompt_len - 1), axis=1)
        buffer = jnp.where(source < prompt_len, taken, pad_id).astype(jnp.int32)
        return logits_at(params, masks, buffer, prompt_lens - 1), buffer

    def extend(params, masks, buffer, token, pos):
        buffer = buffer.at[jnp.arange(buffer.shape[0]), pos].set(token)
        return logits_at(params, masks, buffer, pos), buffer

    return prefill, extend
