"""Benchmark: tokens/s of the default config's train step, sparse vs dense, same model and mesh.

Three jitted steps, timed interleaved in one run (median of --repeats, each over --steps steps):
  dense        plain AdamW, the model applied without a masks collection;
  sparse       AdamW + magnitude_pruning, masks applied in the forward pass, a non-event step;
  event        the same, but every step is a pruning event (mask recomputation included).
The event overhead over a whole run is n_events x (event - sparse) / (T x sparse) for the
default config's schedule.

    python bench/bench_train_sparse_vs_dense.py [--repeats 5] [--steps 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))
import default  # noqa: E402

from jaxsparse import data as data_lib  # noqa: E402
from jaxsparse import models  # noqa: E402
from jaxsparse.train import prepare  # noqa: E402
from jaxsparse.train.resolve.parts import build_mesh  # noqa: E402
from jaxsparse.train.steps.state import abstract_state, create_state  # noqa: E402
from jaxsparse.train.steps.step import make_train_step  # noqa: E402


def build(config, total_steps, batch, mesh):
    config = config.copy_and_resolve_references()
    config.train.steps = total_steps
    run = prepare(config)  # the model and transform, resolved once
    model, tx = run.model, run.tx
    _, shardings = abstract_state(model, tx, mesh, models.DEFAULT_RULES, config.train.seq_len)
    state = create_state(model, tx, config.seed, config.train.seq_len, shardings)
    step = jax.jit(make_train_step(model, tx), in_shardings=(shardings, models.batch_sharding(mesh)),
                   out_shardings=(shardings, None), donate_argnums=(0,))
    state, _ = step(state, batch)  # compile
    jax.block_until_ready(state)
    return step, state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    args = ap.parse_args()
    base = default.get_config()
    mesh = build_mesh(base)
    it = data_lib.make_train_iterator(base.data, seq_len=base.train.seq_len,
                                      global_batch_size=base.train.batch_size)
    batch = data_lib.to_global_batch(next(it), models.batch_sharding(mesh))
    total = 10_000  # events from step 2,500 on: the timed steps are non-event steps
    variants = {}
    dense = base.copy_and_resolve_references()
    dense.pruning.schedule, dense.pruning.final_sparsity = "dense", 0.0
    variants["dense"] = build(dense, total, batch, mesh)
    variants["sparse"] = build(base, total, batch, mesh)
    every = base.copy_and_resolve_references()
    every.pruning.start, every.pruning.end, every.pruning.interval = 0.0, 1.0, 1
    variants["event"] = build(every, total, batch, mesh)

    times = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name in variants:
            step, state = variants[name]
            start = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            times[name].append((time.perf_counter() - start) / args.steps)
            variants[name] = (step, state)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = base.train.batch_size * base.train.seq_len
    print(f"default config: {base.model.size} model, batch {base.train.batch_size} x "
          f"{base.train.seq_len} tokens, mesh {dict(mesh.shape)}, {args.repeats} repeats x "
          f"{args.steps} steps")
    for k, v in med.items():
        print(f"  {k:7s} median {v * 1e3:8.1f} ms/step  {tokens / v:9,.0f} tokens/s")
    print(f"  sparse / dense step time: {med['sparse'] / med['dense']:.4f} "
          f"({(med['sparse'] / med['dense'] - 1) * 100:+.2f}%)")
    sched = prepare(base).schedule
    steps = base.train.steps
    n_events = len(sched.event_steps(steps))
    overhead = n_events * (med["event"] - med["sparse"]) / (steps * med["sparse"])
    print(f"  one event adds {(med['event'] - med['sparse']) * 1e3:.1f} ms; {n_events} events in "
          f"the default {steps}-step run add {overhead * 100:.2f}% to the whole run")


if __name__ == "__main__":
    main()
