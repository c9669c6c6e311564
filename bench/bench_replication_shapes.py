"""Benchmark: tokens/s of the replication sweep's shapes (configs/sweeps/replication.py) on this machine.

Every shape is the trainer's own jitted sparse train step (AdamW + magnitude_pruning, masks in the
forward pass, a non-event step) of configs/tiny.py with the sweep's width/depth overrides. The shapes
are timed interleaved, round-robin, in one process (median of --repeats, each over --steps steps),
so machine load hits them alike; ratios are against the first shape. Also reported: the seconds a
trainer process spends before its first step (start-up: imports, data, init; and compilation),
from one real `python -m jaxsparse.train` run per shape of --startup_steps steps.

    python bench/bench_replication_shapes.py [--repeats 7] [--steps 20] [--shapes 2x64,4x128]
        [--batch 32x64] [--startup_steps 0]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxsparse import data as data_lib  # noqa: E402
from jaxsparse import models  # noqa: E402
from jaxsparse.sweep.check import load_config  # noqa: E402
from jaxsparse.sweep.spec import check_runs, load_module  # noqa: E402
from jaxsparse.train import prepare  # noqa: E402
from jaxsparse.train.resolve.parts import build_mesh  # noqa: E402
from jaxsparse.train.steps.state import abstract_state, create_state  # noqa: E402
from jaxsparse.train.steps.step import make_train_step  # noqa: E402

replication = load_module(str(ROOT / "configs" / "sweeps" / "replication.py"))


def spec_of(layers: int, width: int, batch: int, seq: int, steps: int = 10_000, sparsity: float = 0.5):
    """The sweep's own run definition for this shape (a sparse run; its events far from the timed steps)."""
    raw = replication.run("bench", replication.Shape(width, layers), steps, sparsity,
                          extra={"train.batch_size": batch, "train.seq_len": seq})
    return check_runs([raw], "bench")[0]


def config_of(layers: int, width: int, batch: int, seq: int):
    return load_config(spec_of(layers, width, batch, seq))


def build(config, mesh, batch):
    run = prepare(config)
    _, shardings = abstract_state(run.model, run.tx, mesh, models.DEFAULT_RULES, config.train.seq_len)
    state = create_state(run.model, run.tx, config.seed, config.train.seq_len, shardings)
    step = jax.jit(make_train_step(run.model, run.tx), in_shardings=(shardings, models.batch_sharding(mesh)),
                   out_shardings=(shardings, None), donate_argnums=(0,))
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    return step, state, run.plan.params.total


def startup_seconds(layers: int, width: int, batch: int, seq: int, steps: int) -> float:
    """Wall seconds of a real trainer process of `steps` steps (0: one step) with this shape."""
    spec = spec_of(layers, width, batch, seq, steps=max(1, steps), sparsity=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jaxsparse.train",
                        *spec.train_args(f"{tmp}/w", f"{ROOT}/{spec.config}")],
                       check=True, capture_output=True, env=dict(os.environ))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    ap.add_argument("--shapes", default="2x32,2x64,2x96,2x128,4x128,6x160",
                    help="LAYERSxWIDTH, comma-separated")
    ap.add_argument("--batch", default=f"{replication.BATCH}x{replication.SEQ}", help="BATCHxSEQ")
    ap.add_argument("--startup_steps", type=int, default=-1,
                    help=">= 0: also time a real trainer process per shape (that many steps)")
    args = ap.parse_args()
    batch_size, seq = (int(x) for x in args.batch.split("x"))
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    base = config_of(*shapes[0], batch_size, seq)
    mesh = build_mesh(base)
    it = data_lib.make_train_iterator(base.data, seq_len=seq, global_batch_size=batch_size)
    batch = data_lib.to_global_batch(next(it), models.batch_sharding(mesh))
    built = {s: build(config_of(*s, batch_size, seq), mesh, batch) for s in shapes}
    times: dict = {s: [] for s in shapes}
    for _ in range(args.repeats):
        for s in shapes:
            step, state, n = built[s]
            start = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            times[s].append((time.perf_counter() - start) / args.steps)
            built[s] = (step, state, n)
    load = os.getloadavg()[0]
    tokens = batch_size * seq
    first = statistics.median(times[shapes[0]])
    print(f"batch {batch_size} x {seq}, {args.repeats} repeats x {args.steps} steps, "
          f"load average {load:.2f} on {os.cpu_count()} cores")
    for s in shapes:
        med = statistics.median(times[s])
        n = built[s][2]
        print(f"  {s[0]} layers x d{s[1]:<4d} {n:>9,d} params  median {med * 1e3:7.2f} ms/step  "
              f"{tokens / med:9,.0f} tokens/s  step time x{med / first:5.2f}  "
              f"{tokens / med * n / 1e9:6.2f} G param-tokens/s")
    if args.startup_steps >= 0:
        for s in shapes:
            print(f"  {s[0]}x{s[1]}: a trainer process of {max(1, args.startup_steps)} step(s) takes "
                  f"{startup_seconds(*s, batch_size, seq, args.startup_steps):.1f} s")


if __name__ == "__main__":
    main()
