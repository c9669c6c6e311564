"""Cost of the checkpoint checksums per save, as a ratio to the save itself.

The state is the 58m model's TrainState from configs/paper.py:size=58m (params, the pruning
masks and both Adam moments; float32 params), built from its abstract shapes directly on the
devices with random values (zeros would compress and make the save look cheaper). Each
repetition times, side by side and in alternating order:
  checksum  `jaxsparse.train.workdir.checksum.state_checksums(state)` (jitted reduction on the devices,
            result fetched to the host)
  save      a synchronous orbax save of the same items without checksums (until on disk)
The figure of merit is median(checksum) / median(save); the median of per-repetition ratios is
printed beside it.

Usage: python bench/bench_checkpoint_checksum.py [--size 58m] [--reps 5] [--dir /tmp/...]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxsparse import models
from jaxsparse.train.workdir.checksum import state_checksums
from jaxsparse.train.resolve.run import prepare
from jaxsparse.train.steps.state import abstract_state


def random_state(size: str):
    """The TrainState of `size` on this machine's mesh, filled with random values."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
    import paper  # noqa: PLC0415
    config = paper.get_config(f"size={size}")
    config.train.steps, config.train.batch_size = 1000, jax.device_count()
    run = prepare(config)  # the model, transform and mesh, resolved once
    abstract, shardings = abstract_state(run.model, run.tx, run.mesh, models.DEFAULT_RULES, 128)
    leaves, treedef = jax.tree.flatten(abstract)

    def fill(key):
        keys = jax.random.split(key, len(leaves))
        out = []
        for k, leaf in zip(keys, leaves):
            if leaf.dtype == jnp.bool_:
                out.append(jax.random.bernoulli(k, 0.5, leaf.shape))
            elif jnp.issubdtype(leaf.dtype, jnp.floating):
                out.append(jax.random.normal(k, leaf.shape, leaf.dtype))
            else:
                out.append(jax.random.randint(k, leaf.shape, 0, 1000).astype(leaf.dtype))
        return jax.tree.unflatten(treedef, out)
    state = jax.jit(fill, out_shardings=shardings)(jax.random.key(0))
    return jax.block_until_ready(state), abstract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="58m")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where saves go (default: a temp dir)")
    args = parser.parse_args()

    state, abstract = random_state(args.size)
    leaves = jax.tree.leaves(abstract)
    nbytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)
    print(f"{args.size} state: {len(leaves)} arrays, {nbytes / 2**20:,.0f} MiB, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s)")
    root = tempfile.mkdtemp(dir=args.dir, prefix="bench_ckpt_")
    manager = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, create=True), item_names=("state",))

    def checksum() -> None:
        state_checksums(state)

    step = [0]

    def save() -> None:
        step[0] += 1
        manager.save(step[0], args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        manager.wait_until_finished()

    checksum()  # compile
    save()      # warm up the writer
    times: dict[str, list[float]] = {"checksum": [], "save": []}
    for rep in range(args.reps):
        order = ("checksum", "save") if rep % 2 == 0 else ("save", "checksum")
        for name in order:
            t0 = time.perf_counter()
            (checksum if name == "checksum" else save)()
            times[name].append(time.perf_counter() - t0)
        print(f"rep {rep + 1}/{args.reps}: checksum {times['checksum'][-1]:.3f} s, "
              f"save {times['save'][-1]:.3f} s", flush=True)
    manager.close()
    shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_rep = statistics.median(c / s for c, s in zip(times["checksum"], times["save"]))
    print(f"median checksum {med['checksum']:.3f} s ({nbytes / 2**30 / med['checksum']:.2f} GiB/s), "
          f"median save {med['save']:.3f} s")
    print(f"checksum / save: {med['checksum'] / med['save']:.3f} (ratio of medians), "
          f"{per_rep:.3f} (median of per-repetition ratios)")


if __name__ == "__main__":
    main()
