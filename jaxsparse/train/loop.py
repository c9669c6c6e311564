"""The training loop: compose data, model, optimizer, checkpoints and metrics for one run.

`train(config, workdir)` validates everything before any compute, resumes from the latest
complete checkpoint in WORKDIR/checkpoints, trains `steps` steps with the jitted sharded step,
evaluates, checkpoints (every `checkpoint.every_steps`, at the end and on SIGTERM) and writes
metrics.jsonl, summary.json and training.png (process 0 only).
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxsparse import data as data_lib
from jaxsparse import models
from jaxsparse.pruning import summary
from jaxsparse.pruning.selection import path_str
from jaxsparse.train import compile_target  # tpu: train.grad_accum="auto"
from jaxsparse.train import config as config_lib
from jaxsparse.train import report
from jaxsparse.train.checkpointing import Checkpointer, identity
from jaxsparse.train.metrics import MetricsWriter, Progress, say
from jaxsparse.train.optimizer import learning_rate_schedule, make_optimizer
from jaxsparse.train.plan import run_plan, train_flops_per_token
from jaxsparse.train.run_setup import build_mesh, check_workdir, resolve_vocab
from jaxsparse.train.state import abstract_state, create_state
from jaxsparse.train.step import active_params, make_eval_step, make_train_step, model_masks


class _Preemption:
    """Turns SIGTERM into a flag checked between steps (then: checkpoint and stop)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            del signum, frame
            self.requested = True
        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: no preemption handling
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self) -> bool:
        """Whether any process was asked to stop (all processes agree on the answer)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.any(flags))


def prepare(config: ml_collections.ConfigDict, workdir: str | None) -> dict[str, Any]:
    """Validate the config (and workdir), resolve the vocabulary and mesh, and plan the run."""
    config_lib.validate(config)
    if workdir is not None:
        check_workdir(workdir)
    vocab = resolve_vocab(config)
    config = compile_target.resolve_grad_accum(config, vocab)  # tpu: train.grad_accum="auto" -> an int
    mesh = build_mesh(config)
    plan = run_plan(config, vocab, dict(mesh.shape))
    return {"vocab": vocab, "mesh": mesh, "plan": plan, "config": config}


def _evaluate(eval_step, state, batches, sharding) -> float:
    sums = [eval_step(state, data_lib.to_global_batch(b, sharding)) for b in batches]
    sums = jax.device_get(sums)
    return float(sum(s["loss_sum"] for s in sums) / max(1.0, sum(s["weights"] for s in sums)))


def _per_layer_sparsity(masks: Any, replicated: NamedSharding) -> dict[str, float]:
    """Sparsity per mask; a kernel stacked by nn.scan (rank >= 3) gets one entry per layer,
    named ``path[i]``."""
    flat = [(path_str(p), m) for p, m in jax.tree_util.tree_flatten_with_path(masks)[0]]
    counts = jax.jit(lambda ms: [jnp.sum(m, axis=tuple(range(1, m.ndim)) if m.ndim >= 3
                                         else None, dtype=jnp.int32) for m in ms],
                     out_shardings=replicated)([m for _, m in flat])
    out = {}
    for (path, m), c in zip(flat, jax.device_get(counts)):
        per = int(np.prod(m.shape[1:])) if m.ndim >= 3 else int(np.prod(m.shape))
        if m.ndim >= 3:
            out.update({f"{path}[{i}]": 1.0 - int(ci) / per for i, ci in enumerate(c)})
        else:
            out[path] = 1.0 - int(c) / per
    return out


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Run (or resume) the training described by `config` in `workdir`; return summary.json
    (or {"preempted_at": step} after a SIGTERM)."""
    prep = prepare(config, workdir)
    config = prep["config"]  # tpu: with train.grad_accum resolved
    mesh, plan, vocab = prep["mesh"], prep["plan"], prep["vocab"]
    steps, seq = plan["steps"], config.train.seq_len
    model_cfg = config_lib.model_config(config, vocab)
    model = models.Transformer(model_cfg)
    tx = make_optimizer(config, steps)
    sched = config_lib.schedule(config)
    abstract, shardings = abstract_state(model, tx, mesh, models.DEFAULT_RULES, seq)
    ckpt = Checkpointer(workdir, config.checkpoint.keep, config.checkpoint.async_save)
    ident = identity(config, model_cfg, steps)
    latest = ckpt.latest_step()
    progress_meta: dict[str, Any] = {}
    if latest is not None:
        ckpt.check_compatible(latest, ident)  # before anything is written
        progress_meta = ckpt.read_meta(latest).get("progress", {})
        summary_path = os.path.join(workdir, "summary.json")
        if latest == steps and os.path.exists(summary_path):
            say(f"nothing to do: {workdir} holds a finished run ({summary_path})")
            with open(summary_path, encoding="utf-8") as f:
                return json.load(f)
    is_main = jax.process_index() == 0
    train_iter = data_lib.make_train_iterator(config.data, seq_len=seq,
                                              global_batch_size=config.train.batch_size,
                                              seed=config.seed)
    eval_batches = data_lib.make_eval_batches(config.data, seq_len=seq,
                                              global_batch_size=config.train.batch_size,
                                              num_batches=config.eval.batches)
    if latest is not None:
        state, data_state = ckpt.restore(latest, abstract)
        train_iter.set_state(data_state)
        say(f"resumed from {ckpt.directory}/{latest}")
    else:
        state = create_state(model, tx, config.seed, seq, shardings)
    batch_sharding = models.batch_sharding(mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    train_step = jax.jit(make_train_step(model, tx, config.train.grad_accum, mesh),  # tpu: mesh
                         in_shardings=(shardings, batch_sharding),
                         out_shardings=(shardings, replicated), donate_argnums=(0,))
    eval_step = jax.jit(make_eval_step(model, config.train.grad_accum, mesh),  # tpu: mesh
                        in_shardings=(shardings, batch_sharding), out_shardings=replicated)
    count_active = jax.jit(active_params, in_shardings=(shardings,), out_shardings=replicated)
    lr_at = learning_rate_schedule(config, steps)

    n_prunable = plan["params"]["prunable"]
    n_other = plan["params"]["total"] - n_prunable
    tokens_per_step = plan["tokens_per_step"]
    start = int(jax.device_get(state.step))
    writer = MetricsWriter(workdir, enabled=is_main, tensorboard=config.metrics.tensorboard,
                           keep_until=start)
    progress = Progress(steps, start)
    dense = sched.kind == "dense"  # no pruning transform: every prunable weight stays active
    active = n_prunable if dense else int(jax.device_get(count_active(state)))
    def log_event(step: int, masks: Any, active: int) -> None:
        writer.write("pruning_event", step, {
            "density": active / n_prunable,
            "scheduled_density": float(sched.density_at(step, steps)),
            "per_layer_sparsity": _per_layer_sparsity(masks, replicated)})

    if start == 0 and not dense and sched.is_event(0, steps):  # an event applied in init
        log_event(0, model_masks(state.opt_state), active)
    # sum over done steps of the active parameters in force (for N̄ so far), kept in checkpoints
    active_sum = float(progress_meta.get("active_sum", 0.0))
    losses: list[float] = list(progress_meta.get("losses", []))

    def meta() -> dict:
        return {"identity": ident, "config": config.to_dict(),
                "progress": {"active_sum": active_sum, "losses": losses}}

    pending: list[dict] = []
    last_good = latest
    t_log, step_at_log = time.time(), start
    eval_loss = float("nan")
    every = config.eval.every_steps
    single = jax.process_count() == 1
    with _Preemption() as preempt:
        for step in range(start, steps):
            state, metrics = train_step(state, data_lib.to_global_batch(next(train_iter),
                                                                        batch_sharding))
            pending.append(metrics)
            active_sum += n_other + active
            done = step + 1
            event = bool(sched.is_event(done, steps)) and done < steps
            log_now = done % config.train.log_every_steps == 0 or done == steps or event
            ckpt_now = bool(config.checkpoint.every_steps
                            and done % config.checkpoint.every_steps == 0)
            eval_now = bool(every and done % every == 0 and done < steps)
            # one process: the flag at every step; several: agreed on at log/checkpoint steps
            stop = preempt.requested if single else (
                preempt.agreed() if (log_now or ckpt_now) else False)
            if not (log_now or ckpt_now or eval_now or stop):
                continue
            fetched = jax.device_get(pending)
            pending = []
            losses = [float(m["loss"]) for m in fetched]
            norms = [float(m["grad_norm"]) for m in fetched]
            if not all(math.isfinite(x) for x in losses + norms):
                ckpt.wait()
                raise FloatingPointError(
                    f"training diverged: loss {losses[-1]} / grad norm {norms[-1]} is not finite "
                    f"by step {done}; stopped. The last good checkpoint "
                    f"({'none' if last_good is None else f'{ckpt.directory}/{last_good}'}) "
                    "is intact; lower config.train.learning_rate or check the data.")
            if event:
                masks = model_masks(state.opt_state)
                active = summary(masks).active
                log_event(done, masks, active)
            now = time.time()
            tok_s = tokens_per_step * (done - step_at_log) / max(now - t_log, 1e-9)
            density = active / n_prunable
            tflops = train_flops_per_token(model_cfg, seq, n_prunable, density) * tok_s / 1e12
            record = {
                "loss": float(np.mean(losses)), "learning_rate": float(lr_at(step)),
                "grad_norm": norms[-1], "tokens_per_s": tok_s,
                "step_time_s": (now - t_log) / max(done - step_at_log, 1),
                "density": density, "active_params": n_other + active,
                "n_avg_so_far": active_sum / done, "tflops_per_s": tflops,
            }
            peak = config.metrics.peak_tflops_per_device
            if peak > 0:
                record["mfu"] = tflops / (peak * jax.device_count())
            writer.write("train", done, record)
            if is_main and (log_now or stop):
                progress.log(done, record["loss"], density, tok_s)
            if ckpt_now or stop:  # before any eval: a preempted run has little time left
                ckpt.save(done, state, train_iter.get_state(), meta(), force=stop)
                last_good = done
            if stop:
                ckpt.close()
                writer.close()
                say(f"SIGTERM: checkpoint saved at step {done}; rerun the same command to resume")
                return {"preempted_at": done}
            if eval_now:
                eval_loss = _evaluate(eval_step, state, eval_batches, batch_sharding)
                writer.write("eval", done, {"eval_loss": eval_loss})
            t_log, step_at_log = time.time(), done  # eval and checkpoint time not in tokens/s
    if last_good != steps:
        ckpt.save(steps, state, train_iter.get_state(), meta(), force=True)
    eval_loss = _evaluate(eval_step, state, eval_batches, batch_sharding)
    writer.write("eval", steps, {"eval_loss": eval_loss})
    ckpt.close()
    final_active = n_prunable if dense else summary(model_masks(state.opt_state)).active
    final = {
        "n_avg_realised": active_sum / steps,
        "n_final": n_other + final_active,
        "final_sparsity": 1.0 - final_active / n_prunable,
        "final_train_loss": float(np.mean(losses)) if losses else None,
        "final_eval_loss": eval_loss,
    }
    result = {}
    if is_main:
        result = report.write_summary(workdir, config, plan, final)
        if config.metrics.plots:
            report.plot_run(workdir)
        say(f"done: eval loss {eval_loss:.4f}, sparsity {final['final_sparsity']:.4f}; "
            f"summary in {os.path.join(workdir, 'summary.json')}")
    writer.close()
    return result
