"""Benchmark: the pruning transform against another version of the whole pruning package, side by side.

The other version (``--baseline``, a git revision) is extracted with ``git archive`` into a temporary
directory as a separately importable package (``baseline_pruning``), so each version runs with its own
event, top-k and selection code. Both build ``optax.chain(optax.adamw(1e-3), magnitude_pruning(...))``
over kernels shaped like the 58M model's prunable weights (41.5M values), global scope, and time,
interleaved, ``--repeats`` times each: an ordinary non-event step, the update right after an event (where
the current version checks that the transform is last), and an event step (all from the same state).
Reports medians, their ratio current / baseline, the median of the ratios of the interleaved pairs
(robust to load that drifts during the run), and whether both give the same masks and params.

    python3 bench/bench_pruning_versions.py [--baseline 270708b] [--repeats 15]
"""
from __future__ import annotations

import argparse
import importlib
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsparse import pruning
from jaxsparse.pruning import Schedule, get_masks

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPES = [(512, 512)] * 24 + [(512, 2048)] * 12 + [(2048, 512)] * 6 + [(512, 32000)]


def baseline_package(rev: str, into: pathlib.Path):
    """``jaxsparse/pruning`` at ``rev``, importable as ``baseline_pruning`` (its imports rewritten)."""
    archive = subprocess.run(["git", "archive", rev, "jaxsparse/pruning"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    package = into / "baseline_pruning"
    (into / "jaxsparse" / "pruning").rename(package)
    for path in package.glob("*.py"):
        path.write_text(path.read_text().replace("jaxsparse.pruning", "baseline_pruning"))
    sys.path.insert(0, str(into))
    return importlib.import_module("baseline_pruning")


def make_steps(package, params, total, sched):
    """The jitted step and initial state of adamw + ``package``'s transform (``sched`` in its own Schedule)."""
    own = package.Schedule(sched.kind, sched.final_sparsity, sched.start, sched.end, sched.interval)
    tx = optax.chain(optax.adamw(1e-3), package.magnitude_pruning(own, total))

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s
    return step, tx.init(params)


def KINDS(first_event: int) -> tuple[tuple[str, int], ...]:
    """(kind, updates applied so far) of the steps timed: an ordinary step (neither an event nor right
    after one), the update right after an event (the not-last check runs there), and an event."""
    return (("non-event", first_event + 1), ("after-event", first_event), ("event", first_event - 1))


def timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="270708b", help="git revision of the other pruning package")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    keys = jax.random.split(jax.random.key(0), len(SHAPES))
    params = {f"k{i:02d}": jax.random.normal(k, s) * 0.02 for i, (k, s) in enumerate(zip(keys, SHAPES))}
    grads = jax.tree.map(lambda w: w * 0.1, params)
    total, sched = 1000, Schedule("geometric", 0.8, 0.1, 0.9, 100)
    first_event = int(sched.event_steps(total)[1])  # an event computed by an update (not by init)
    with tempfile.TemporaryDirectory() as tmp:
        old = baseline_package(args.baseline, pathlib.Path(tmp))
        versions = {"current": pruning, "baseline": old}
        runs, outs = {}, {}
        for name, make in versions.items():
            step, (adam, prune) = make_steps(make, params, total, sched)
            for kind, count in KINDS(first_event):
                state = (adam, prune._replace(count=jnp.int32(count)))
                outs[(name, kind)] = jax.block_until_ready(step(params, state, grads))  # compile
                runs[(name, kind)] = (step, state, [])
        for _ in range(args.repeats):
            for step, state, times in runs.values():
                times.append(timed(step, params, state, grads)[0])
    n = sum(w.size for w in params.values())
    print(f"{len(params)} kernels, {n / 1e6:.1f}M prunable weights, {args.repeats} interleaved repetitions, "
          f"baseline {args.baseline}, {jax.devices()[0].platform}")
    for kind, _ in KINDS(first_event):
        med = {name: statistics.median(runs[(name, kind)][2]) for name in versions}
        paired = statistics.median(c / b for c, b in zip(runs[("current", kind)][2], runs[("baseline", kind)][2]))
        same_params = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(outs[("current", kind)][0]),
                                                                jax.tree.leaves(outs[("baseline", kind)][0])))
        same_masks = all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(get_masks(outs[("current", kind)][1])),
            jax.tree.leaves(outs[("baseline", kind)][1][1].masks)))
        print(f"  {kind:11s} step: current {med['current'] * 1e3:8.1f} ms, baseline {med['baseline'] * 1e3:8.1f} ms, "
              f"current / baseline {med['current'] / med['baseline']:.3f} (median of paired ratios {paired:.3f}); "
              f"same params {same_params}, "
              f"same masks {same_masks}")


if __name__ == "__main__":
    main()
