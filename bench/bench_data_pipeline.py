"""Input pipeline throughput against the train step's token consumption, side by side in one run.

Pipeline: tokens/s of `jaxsparse.data.make_train_iterator` for the default data config (embedded
Shakespeare, SentencePiece tokenizer, data.shards logical shards) at seq_len 256 and global batch 16,
one process (it runs every shard); tokens counted
as batch rows x seq_len (the `inputs` tokens a train step consumes). Train: tokens/s of a jitted
forward + backward + optax.adamw update of the "demo" model on the same batch shape. Repetitions of
the two are interleaved; medians are reported and their ratio is the figure of merit
(goal: pipeline >= 10x train).

Usage: python bench/bench_data_pipeline.py [--reps 5] [--batches 50] [--steps 3] [--data_dir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsparse import data
from jaxsparse.models import Transformer, get_config

GOAL = 10.0


def _train_step_fn(model: nn.Module, tx: optax.GradientTransformation):
    def loss_fn(params: Any, masks: Any, batch: dict[str, jax.Array]) -> jax.Array:
        logits = model.apply({"params": params, "masks": masks}, batch["inputs"])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        return (losses * batch["weights"]).sum() / batch["weights"].sum()

    @jax.jit
    def step(params, masks, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, masks, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions of each measurement")
    parser.add_argument("--batches", type=int, default=50, help="pipeline batches timed per repetition")
    parser.add_argument("--steps", type=int, default=3, help="train steps timed per repetition")
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="global batch size (rows)")
    parser.add_argument("--data_dir", default=None, help="tfds data dir (default: data.default_config())")
    args = parser.parse_args()

    cfg = data.default_config()
    if args.data_dir:
        cfg.data_dir = args.data_dir
    start = time.perf_counter()
    tok = data.get_tokenizer(cfg)  # builds the dataset and trains the tokenizer on first use
    prepare_s = time.perf_counter() - start
    kw = dict(seq_len=args.seq_len, global_batch_size=args.batch, process_index=0, process_count=1)
    start = time.perf_counter()
    it = data.make_train_iterator(cfg, **kw)
    first = next(it)
    first_batch_s = time.perf_counter() - start

    model = Transformer(get_config("demo", vocab_size=tok.vocab_size, max_seq_len=args.seq_len))
    variables = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.asarray(first["inputs"])))
    params, masks = variables["params"], variables["masks"]
    tx = optax.adamw(3e-4, weight_decay=0.1)
    opt_state = tx.init(params)
    step = _train_step_fn(model, tx)
    batch = jax.device_put({k: jnp.asarray(v) for k, v in first.items()})
    for _ in range(2):  # compile + warm up
        params, opt_state, loss = step(params, masks, opt_state, batch)
    jax.block_until_ready(loss)

    tokens_per_batch = args.batch * args.seq_len
    pipe_rates, train_rates = [], []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        pipe_rates.append(args.batches * tokens_per_batch / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(args.steps):
            params, opt_state, loss = step(params, masks, opt_state, batch)
        jax.block_until_ready(loss)
        train_rates.append(args.steps * tokens_per_batch / (time.perf_counter() - t0))
    it.close()

    pipe, train = statistics.median(pipe_rates), statistics.median(train_rates)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    result = {
        "dataset": cfg.dataset,
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "seq_len": args.seq_len,
        "global_batch_size": args.batch,
        "shards": cfg.shards,
        "read_threads": cfg.read_threads,
        "reps": args.reps,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "demo_model_params": n_params,
        "prepare_s": round(prepare_s, 3),  # dataset build + tokenizer training; ~0 when cached
        "first_batch_s": round(first_batch_s, 3),
        "pipeline_tokens_per_s_median": round(pipe),
        "pipeline_tokens_per_s_all": [round(r) for r in pipe_rates],
        "train_tokens_per_s_median": round(train),
        "train_tokens_per_s_all": [round(r) for r in train_rates],
        "ratio_pipeline_over_train": round(pipe / train, 2),
        "goal": f">= {GOAL:g}x: {'MET' if pipe / train >= GOAL else 'NOT MET'}",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
