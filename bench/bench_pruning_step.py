"""Benchmark: an ordinary (non-event) train step with the pruning transform against the same step without it.

Two workloads, each a pair of jitted train steps timed interleaved (``--repeats`` repetitions of
``--steps`` steps each, alternating which goes first), reporting the median step time of each, the
ratio of the medians and the median of the paired ratios (robust to load that drifts during the run),
in wall-clock time and in this process's CPU time (less disturbed by other jobs on a shared machine):

* ``nnx``: a small NNX project shaped like a Gemma-style client: ``nnx.Embed`` (tied head), 2 decoder
  layers of d_model 64 with ``nnx.Einsum`` attention kernels (q ``[N, D, H]``, kv ``[2, K, D, H]``,
  out ``[N, H, D]``) and an ``nnx.Linear`` gated MLP, ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` under
  ``nnx.jit``; ``tx`` is ``optax.adamw`` against ``optax.chain(optax.adamw, magnitude_pruning(...))``, with
  the default ``report="raise"`` and with ``report="off"`` (no host callback compiled into the step).
  Two more measurements split the difference: an ``nnx.jit`` call that does nothing, given each
  optimizer (what ``nnx.jit`` itself pays per call for the transform's state: count, invalid, one mask
  per kernel, and their two containers), and how many step calls return before their loss is
  computed (asynchronous dispatch: the host's per-call work overlaps the computation; on the CPU
  backend a program holding a host callback runs synchronously, so with ``report="raise"`` none do).
* ``default``: the default config's train step (configs/default.py, its mesh and batch), dense (plain
  AdamW, no masks) against sparse (AdamW + the transform, the model applying its masks).

The schedules start pruning at step 2,500 of 10,000, so every timed step is an ordinary one.

``--baseline REV`` also times, in the same interleaving, the transform of the pruning package at git
revision REV (extracted as in bench_pruning_versions.py), for a before/after figure.

    python3 bench/bench_pruning_step.py [--workload nnx|default|both] [--repeats 30] [--steps 5] [--baseline REV]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxsparse.pruning import Schedule, magnitude_pruning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pruning_versions import baseline_package  # noqa: E402

TOTAL = 10_000
SCHEDULE = Schedule("geometric", 0.75, 0.25, 0.75, 100)
LABELS = {"without": "without the transform", "with": "with the transform", "report off": "with, report='off'",
          "baseline": "with the baseline"}


class Attention(nnx.Module):
    def __init__(self, d, heads, kv_heads, head_dim, rngs):
        self.q = nnx.Einsum("BTD,NDH->BTNH", (heads, d, head_dim), rngs=rngs)
        self.kv = nnx.Einsum("BSD,CKDH->CBSKH", (2, kv_heads, d, head_dim), rngs=rngs)
        self.out = nnx.Einsum("BTNH,NHD->BTD", (heads, head_dim, d), rngs=rngs)
        self.groups = heads // kv_heads

    def __call__(self, x):
        q = self.q(x)
        k, v = self.kv(x)
        k, v = (jnp.repeat(t, self.groups, axis=2) for t in (k, v))
        logits = jnp.einsum("BTNH,BSNH->BNTS", q, k) / jnp.sqrt(q.shape[-1])
        causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        weights = jax.nn.softmax(jnp.where(causal, logits, -1e9), axis=-1)
        return self.out(jnp.einsum("BNTS,BSNH->BTNH", weights, v))


class Block(nnx.Module):
    def __init__(self, d, rngs):
        self.attn_norm = nnx.RMSNorm(d, rngs=rngs)
        self.attn = Attention(d, heads=4, kv_heads=2, head_dim=16, rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(d, rngs=rngs)
        self.gate = nnx.Linear(d, 4 * d, use_bias=False, rngs=rngs)
        self.up = nnx.Linear(d, 4 * d, use_bias=False, rngs=rngs)
        self.down = nnx.Linear(4 * d, d, use_bias=False, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.attn_norm(x))
        h = self.mlp_norm(x)
        return x + self.down(jax.nn.gelu(self.gate(h)) * self.up(h))


class Decoder(nnx.Module):
    """A 2-layer Gemma-style decoder, d_model 64, vocabulary 256, tied embedding."""

    def __init__(self, rngs, vocab=256, d=64, layers=2):
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.blocks = nnx.List([Block(d, rngs) for _ in range(layers)])
        self.final_norm = nnx.RMSNorm(d, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.embed.attend(self.final_norm(x))


def nnx_steps(batch, baseline=None):
    """{name: (step, args)} for the NNX client, without and with the transform (and with the
    ``baseline`` package's transform, if given)."""
    @nnx.jit
    def step(model, opt, tokens):
        def loss_fn(m):
            logits = m(tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    txs = {"without": optax.adamw(1e-3), "with": optax.chain(optax.adamw(1e-3), magnitude_pruning(SCHEDULE, TOTAL)),
           "report off": optax.chain(optax.adamw(1e-3), magnitude_pruning(SCHEDULE, TOTAL, report="off"))}
    if baseline is not None:
        own = baseline.Schedule(SCHEDULE.kind, SCHEDULE.final_sparsity, SCHEDULE.start, SCHEDULE.end, SCHEDULE.interval)
        txs["baseline"] = optax.chain(optax.adamw(1e-3), baseline.magnitude_pruning(own, TOTAL))
    out = {}
    for name, tx in txs.items():
        model = Decoder(nnx.Rngs(0))
        out[name] = (step, (model, nnx.Optimizer(model, tx, wrt=nnx.Param), batch))
    return out


@nnx.jit
def _noop(model, opt, tokens):
    """An ``nnx.jit`` call that computes nothing: only ``nnx.jit``'s own per-call work on its arguments."""
    del model, opt
    return tokens[0, 0]


def noop_pair(pair):
    """{name: (noop, args)} for the "without" and "with" entries of ``nnx_steps``' result."""
    return {name: (_noop, pair[name][1]) for name in ("without", "with")}


def returned_early(pair, calls):
    """{name: how many of ``calls`` step calls returned before their result was computed}."""
    out = {}
    for name, (step, args) in pair.items():
        early = 0
        for _ in range(calls):
            loss = step(*args)
            early += not loss.is_ready()
            jax.block_until_ready(loss)
        out[name] = early
    return out


def default_steps():
    """{name: (step, args)} for the default config's train step, dense and sparse (bench/
    bench_train_sparse_vs_dense.py builds them the same way)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))
    import default  # noqa: PLC0415
    from bench_train_sparse_vs_dense import build  # noqa: PLC0415

    from jaxsparse import data as data_lib  # noqa: PLC0415
    from jaxsparse import models  # noqa: PLC0415
    from jaxsparse.train.resolve.parts import build_mesh  # noqa: PLC0415

    base = default.get_config()
    mesh = build_mesh(base)
    it = data_lib.make_train_iterator(base.data, seq_len=base.train.seq_len,
                                      global_batch_size=base.train.batch_size)
    batch = data_lib.to_global_batch(next(it), models.batch_sharding(mesh))
    dense = base.copy_and_resolve_references()
    dense.pruning.schedule, dense.pruning.final_sparsity = "dense", 0.0
    out = {}
    for name, config in (("without", dense), ("with", base)):
        step, state = build(config, TOTAL, batch, mesh)
        out[name] = [step, state, batch]
    return out


def time_pair(pair, repeats, steps, functional):
    """{"wall": {name: per-step seconds}, "cpu": {...}}: wall-clock time and this process's CPU time
    (all its threads) of each step, interleaved. The CPU time is far less disturbed by other jobs on a
    loaded machine; both are reported."""
    times = {name: [] for name in pair}
    cpu = {name: [] for name in pair}
    for r in range(repeats):
        for name in (list(pair) if r % 2 == 0 else list(pair)[::-1]):  # the order alternates
            step, args = pair[name][0], pair[name][1:] if functional else pair[name][1]
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                if functional:  # (state, metrics) = step(state, batch)
                    state, out = step(*args)
                    args = [state, args[1]]
                else:
                    out = step(*args)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / steps)
            cpu[name].append((time.process_time() - start_cpu) / steps)
            if functional:
                pair[name][1] = args[0]
    return {"wall": times, "cpu": cpu}


def report(title, clocks):
    print(f"{title}: {len(clocks['wall']['with'])} interleaved repetitions")
    for clock, times in clocks.items():
        print(f" {clock} time:")
        _report_clock(times)


def _report_clock(times):
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in times:
        label = LABELS[name]
        line = f"  {label:22s} {med[name] * 1e3:9.3f} ms/step"
        if name != "without":
            paired = statistics.median(w / o for w, o in zip(times[name], times["without"]))
            line += f"  ratio of medians {med[name] / med['without']:.3f}, median of paired ratios {paired:.3f}"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("nnx", "default", "both"), default="both")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed repetition")
    ap.add_argument("--baseline", default=None,
                    help="git revision: also time its pruning package's transform (nnx workload)")
    args = ap.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {len(jax.devices())} device(s)")
    if args.workload in ("nnx", "both"):
        batch = jax.random.randint(jax.random.key(1), (8, 33), 0, 256)
        with tempfile.TemporaryDirectory() as tmp:
            baseline = None if args.baseline is None else baseline_package(args.baseline, Path(tmp))
            pair = nnx_steps(batch, baseline)
        for step, step_args in pair.values():  # compile, and one step each
            jax.block_until_ready(step(*step_args))
        report("NNX Gemma-style client, 2 layers, d_model 64, batch 8 x 32",
               time_pair(pair, args.repeats, args.steps, functional=False))
        noops = noop_pair(pair)
        for step, step_args in noops.values():
            jax.block_until_ready(step(*step_args))
        report("an nnx.jit call that does nothing, given each optimizer",
               time_pair(noops, args.repeats, args.steps, functional=False))
        early = returned_early(pair, 4 * args.steps)
        print("step calls that returned before their loss was computed: "
              + ", ".join(f"{LABELS[name]} {n} of {4 * args.steps}" for name, n in early.items()))
    if args.workload in ("default", "both"):
        report("default config train step (dense / sparse)",
               time_pair(default_steps(), args.repeats, max(1, args.steps // 5), functional=True))


if __name__ == "__main__":
    main()
