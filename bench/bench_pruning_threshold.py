"""Benchmark: one global magnitude-pruning mask update, bisection vs sort.

Kernels shaped like the 58M model's prunable weights (41.5M values: 24 of 512x512, 12 of
512x2048, 6 of 2048x512, one 512x32000). Both methods are jitted and timed interleaved in one
run (median of --repeats); the thresholds must be identical. Also: one non-event optimizer step
with ``optax.chain(adamw, magnitude_pruning)`` against plain ``adamw``, and one event step of that
chain (the whole transform: score, NaN/Inf check, bisection, masks), the figure the issue tracks.

    python bench/bench_pruning_threshold.py [--repeats 7] [--skip_sort]
    git show fc48c64:jaxsparse/pruning/transform.py > /tmp/old_transform.py
    python bench/bench_pruning_threshold.py --skip_sort --baseline_transform /tmp/old_transform.py
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from jaxsparse.pruning import Schedule, magnitude_pruning
from jaxsparse.pruning import topk

SHAPES = [(512, 512)] * 24 + [(512, 2048)] * 12 + [(2048, 512)] * 6 + [(512, 32000)]


def make_kernels():
    keys = jax.random.split(jax.random.key(0), len(SHAPES))
    return {f"k{i:02d}": jax.random.normal(k, s) * 0.02 for i, (k, s) in enumerate(zip(keys, SHAPES))}


@jax.jit
def bisection_masks(params, k):
    keys = [topk.score_bits(w, jnp.ones(w.shape, bool)) for w in params.values()]
    t = topk.global_threshold(keys, k)
    return t, {name: x >= t for name, x in zip(params, keys)}


@jax.jit
def sort_masks(params, k):
    flat = jnp.concatenate([jnp.abs(w).ravel() for w in params.values()])
    t = jnp.sort(flat)[flat.size - k]
    return jax.lax.bitcast_convert_type(t, jnp.int32), {n: jnp.abs(w) >= t for n, w in params.items()}


def timed(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--baseline_transform", help="another version's jaxsparse/pruning/transform.py to time "
                    "side by side with the current one (event and non-event steps)")
    ap.add_argument("--skip_sort", action="store_true", help="skip the sort comparison (slow on CPU)")
    args = ap.parse_args()
    params = make_kernels()
    n = sum(w.size for w in params.values())
    k = jnp.int32(round(args.density * n))
    print(f"{len(params)} kernels, {n / 1e6:.2f}M prunable values, keep k={int(k):,}")

    methods = {"bisection": bisection_masks} if args.skip_sort else {"bisection": bisection_masks, "sort": sort_masks}
    results = {name: fn(params, k) for name, fn in methods.items()}  # compile + check equality
    times = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            times[name].append(timed(fn, params, k))
    med = {name: statistics.median(v) for name, v in times.items()}
    if "sort" in results:
        (t_bis, m_bis), (t_sort, m_sort) = results["bisection"], results["sort"]
        same_m = all(bool(jnp.array_equal(m_bis[x], m_sort[x])) for x in params)
        print(f"identical threshold: {int(t_bis) == int(t_sort)}  identical masks: {same_m}")
    for name, v in med.items():
        print(f"  {name:10s} median {v * 1e3:9.1f} ms  (runs: {', '.join(f'{x*1e3:.0f}' for x in times[name])})")
    if "sort" in med:
        print(f"  speed-up of bisection over sort: {med['sort'] / med['bisection']:.1f}x")

    # Non-event step: adamw vs adamw + pruning (events far in the future).
    total = 10**6
    sched = Schedule("geometric", 0.8, 0.9, 0.95, 1000)
    grads = jax.tree.map(lambda w: w * 0.1, params)
    steps = {}
    for name, tx in (("adamw", optax.adamw(1e-3)),
                     ("adamw+pruning", optax.chain(optax.adamw(1e-3),
                                                   magnitude_pruning(sched, total)))):
        state = tx.init(params)

        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s
        steps[name] = (jax.jit(step), state)
        jax.block_until_ready(steps[name][0](params, state, grads))
    st = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, (fn, state) in steps.items():
            st[name].append(timed(fn, params, state, grads))
    smed = {name: statistics.median(v) for name, v in st.items()}
    for name, v in smed.items():
        print(f"  non-event step {name:14s} median {v * 1e3:8.1f} ms")
    print(f"  non-event overhead of the pruning transform: "
          f"{(smed['adamw+pruning'] / smed['adamw'] - 1) * 100:+.1f}%")
    event_step(params, grads, args.repeats, args.baseline_transform)


def event_step(params, grads, repeats: int, baseline: str | None) -> None:
    """Median time of one optimizer step that is a pruning event (global scope, magnitude score), and of
    the step after it (no event); with ``baseline`` (another version's transform.py, e.g. from
    ``git show REV:jaxsparse/pruning/transform.py``) both versions interleaved in this one run."""
    versions = {"current": magnitude_pruning}
    if baseline:
        spec = importlib.util.spec_from_file_location("baseline_transform", baseline)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        versions["baseline"] = module.magnitude_pruning
    total = 1000
    sched = Schedule("geometric", 0.8, 0.1, 0.9, 100)
    first_event = int(sched.event_steps(total)[1])
    runs, masks = {}, {}
    for name, make in versions.items():
        tx = optax.chain(optax.adamw(1e-3), make(sched, total))
        adam_state, prune_state = tx.init(params)

        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s
        fn = jax.jit(step)
        for kind, count in (("event", first_event - 1), ("no event", first_event)):
            state = (adam_state, prune_state._replace(count=jnp.int32(count)))
            out = jax.block_until_ready(fn(params, state, grads))
            masks[name] = out[1][1].masks if kind == "event" else masks[name]
            runs[(name, kind)] = (fn, state, [])
    for _ in range(repeats):
        for fn, state, times in runs.values():
            times.append(timed(fn, params, state, grads))
    for (name, kind), (_, _, times) in runs.items():
        print(f"  {kind:8s} step adamw+pruning ({name:8s}) median {statistics.median(times) * 1e3:8.1f} ms  "
              f"(runs: {', '.join(f'{x*1e3:.0f}' for x in times)})")
    if baseline:
        same = all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(masks["current"]),
                                                               jax.tree.leaves(masks["baseline"])))
        for kind in ("event", "no event"):
            ratio = statistics.median(runs[("current", kind)][2]) / statistics.median(runs[("baseline", kind)][2])
            print(f"  {kind} step, current / baseline median: {ratio:.3f}")
        print(f"  identical event masks current vs baseline: {same}")


if __name__ == "__main__":
    main()
