"""Cost of the pruning-mask multiply: forward + backward of a model with masks vs without.

Both variants are the same `Transformer` and the same parameters: "masked" applies
{'params', 'masks'} (every kernel multiplied by its bool mask in the compute dtype), "unmasked"
applies {'params'} only (no mask multiply). Each step is a jitted value_and_grad of the mean
next-token cross-entropy w.r.t. the params. Runs are interleaved (the order alternates every
repetition); the ratio of the medians is the figure of merit (goal: masked / unmasked < 1.03), with
the median of the per-repetition ratios and the ratio of the minima (the least disturbed runs on a
shared machine) printed beside it.

Usage: python bench/bench_model_masks.py [--size demo] [--batch 8] [--seq-len 256] [--reps 25]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxsparse.models import Transformer, flops_per_token, get_config, param_counts

GOAL = 1.03


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--reps", type=int, default=25, help="timed steps per variant")
    parser.add_argument("--dtype", default=None, help="compute dtype override (float32 | bfloat16)")
    args = parser.parse_args()

    overrides = {} if args.dtype is None else {"dtype": args.dtype}
    cfg = get_config(args.size, **overrides)
    model = Transformer(cfg)
    tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq_len), 0, cfg.vocab_size, jnp.int32)
    variables = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens))
    params, masks = variables["params"], variables["masks"]

    def loss(p: Any, variables: dict) -> jax.Array:
        logits = model.apply({"params": p, **variables}, tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()

    masked = jax.jit(jax.value_and_grad(lambda p, m: loss(p, {"masks": m})))
    unmasked = jax.jit(jax.value_and_grad(lambda p: loss(p, {})))
    variants = {"masked": lambda: masked(params, masks), "unmasked": lambda: unmasked(params)}

    # Compile and warm up; with all-True masks both variants compute the same loss.
    (loss_m, _), (loss_u, _) = variants["masked"](), variants["unmasked"]()
    assert abs(float(loss_m) - float(loss_u)) < 1e-4, (float(loss_m), float(loss_u))
    for fn in variants.values():
        _timed(fn)

    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for _ in range(args.reps):
        for name in order:
            times[name].append(_timed(variants[name]))
        order.reverse()

    tokens_per_step = args.batch * args.seq_len
    flops = flops_per_token(cfg, args.seq_len) * tokens_per_step
    print(f"model {args.size}: {param_counts(cfg).total / 1e6:.2f}M params "
          f"({param_counts(cfg).prunable / 1e6:.2f}M masked), dtype {cfg.dtype}, batch {args.batch} x "
          f"seq {args.seq_len} tokens, {args.reps} interleaved steps per variant, "
          f"backend {jax.default_backend()} ({jax.device_count()} device(s))")
    print(f"{'variant':<10} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'tokens/s':>10} {'GFLOP/s':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<10} {med * 1e3:>10.2f} {min(ts) * 1e3:>9.2f} {max(ts) * 1e3:>9.2f} "
              f"{tokens_per_step / med:>10.0f} {flops / med / 1e9:>9.1f}")
    ratio = statistics.median(times["masked"]) / statistics.median(times["unmasked"])
    paired = statistics.median(m / u for m, u in zip(times["masked"], times["unmasked"]))
    fastest = min(times["masked"]) / min(times["unmasked"])
    print(f"masked / unmasked: ratio of medians {ratio:.4f}, median of paired ratios {paired:.4f}, "
          f"ratio of minima {fastest:.4f}")
    print(f"ratio of medians {ratio:.4f} "
          f"(mask overhead {100 * (ratio - 1):+.2f}%; goal < {100 * (GOAL - 1):.0f}%: "
          f"{'MET' if ratio < GOAL else 'NOT MET'})")


if __name__ == "__main__":
    main()
