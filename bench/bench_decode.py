"""Greedy decoding speed: the KV cache (jaxsparse.generate's loop) vs recomputing the full prefix.

Both variants decode `--new` tokens greedily after a `--prompt`-token prompt with the same model and
parameters (the demo size, vocabulary 2048, random init: speed does not depend on the weights):
- "cache": `make_generate_fn`, i.e. one prefill pass, then one token per step attending to the KV
  cache, all in one jitted `lax.while_loop`;
- "recompute": one jitted step per token that runs the full forward pass over the prefix so far and
  writes the argmax next token in place. The prefix is cut to the next power of two >= its length
  (32, 64, ...), so each step costs at most 2x (on average ~1.3x) the exact prefix, with one compile
  per bucket; all buckets are compiled before timing. The token order is checked to be identical.
Repetitions alternate between the two; reported are the median tokens/s of each and the ratio of the
medians (goal: cache >= 5x recompute).

Usage: python bench/bench_decode.py [--size demo] [--prompt 16] [--new 256] [--batch 1] [--reps 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.inference.sampling import SamplingSettings, make_generate_fn
from jaxsparse.models import Transformer, get_config, init_variables

GOAL = 5.0


def _bucket(n: int, cap: int) -> int:
    size = 32
    while size < n:
        size *= 2
    return min(size, cap)


def recompute_decoder(cfg, prompt_len: int, new: int):
    """(decode(params, prompt) -> tokens [B, new], warm-up fn) without a cache."""
    model = Transformer(cfg)
    total = prompt_len + new
    steps = {}

    def step_for(width):
        def step(params, buf, cur):
            logits = model.apply({"params": params}, buf[:, :width])
            nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, cur - 1, axis=1, keepdims=False), -1)
            return jax.lax.dynamic_update_index_in_dim(buf, nxt.astype(jnp.int32), cur, axis=1)
        return jax.jit(step, donate_argnums=(1,))

    def decode(params, prompt):
        buf = jnp.zeros((prompt.shape[0], total), jnp.int32).at[:, :prompt_len].set(prompt)
        for cur in range(prompt_len, total):
            width = _bucket(cur, total)
            if width not in steps:
                steps[width] = step_for(width)
            buf = steps[width](params, buf, cur)
        return buf[:, prompt_len:]

    return decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo")
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    cfg = get_config(args.size, vocab_size=2048, max_seq_len=args.prompt + args.new)
    params = init_variables(Transformer(cfg), jax.random.key(0), (1, 8))["params"]
    prompt = jnp.asarray(np.random.default_rng(0).integers(4, 2048, (args.batch, args.prompt)), jnp.int32)
    lengths = jnp.full((args.batch,), args.prompt, jnp.int32)
    settings = SamplingSettings(args.new, 0.0, eos_id=-1)  # no EOS: always `new` tokens
    cached_fn = make_generate_fn(cfg, settings, args.prompt)
    cached = lambda: cached_fn(params, {}, prompt, lengths, jax.random.key(0))[0]  # noqa: E731
    recompute = recompute_decoder(cfg, args.prompt, args.new)
    uncached = lambda: recompute(params, prompt)  # noqa: E731
    same = np.array_equal(np.asarray(cached()), np.asarray(uncached()))  # also compiles every bucket
    times = {"cache": [], "recompute": []}
    for rep in range(args.reps):
        order = ("cache", "recompute") if rep % 2 == 0 else ("recompute", "cache")
        for name in order:
            start = time.perf_counter()
            jax.block_until_ready(cached() if name == "cache" else uncached())
            times[name].append(time.perf_counter() - start)
    tokens = args.batch * args.new
    rate = {k: tokens / statistics.median(v) for k, v in times.items()}
    result = {"size": args.size, "batch": args.batch, "prompt_tokens": args.prompt, "new_tokens": args.new,
              "reps": args.reps, "device": jax.devices()[0].device_kind, "same_tokens": bool(same),
              "cache_tokens_per_s": round(rate["cache"], 1), "recompute_tokens_per_s": round(rate["recompute"], 1),
              "speedup": round(rate["cache"] / rate["recompute"], 2), "goal": GOAL}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
