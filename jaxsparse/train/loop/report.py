"""What a run reports: the records a step adds to metrics.jsonl (`train_record`, `event_record`
with per-layer sparsity), built from what `jaxsparse.train.loop.actions.after_step` measured, and
the end-of-run outputs: WORKDIR/summary.json (the scaling-law fitter's input, with the loop's
`measured` entries) and PNG plots."""
from __future__ import annotations

import functools
import json
import os
import time
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from jaxsparse.pruning.selection import named_leaves
from jaxsparse.train.resolve.plan import Plan
from jaxsparse.train.workdir import layout

if TYPE_CHECKING:  # types only: the sweep's tests import write_summary without the loop's data
    from jaxsparse.train.loop.session import Carry
    from jaxsparse.train.resolve.run import Run


def measured(run: Run, carry: Carry) -> dict[str, Any]:
    """summary.json's measured entries once `run`'s final step is done (`carry`: the loop's)."""
    params = run.plan.params
    final_active = params.prunable if run.schedule.kind == "dense" else carry.active
    return {"n_avg_realised": carry.active_sum / run.steps,
            "n_final": params.other + final_active,
            "final_sparsity": 1.0 - final_active / params.prunable,
            "final_train_loss": float(np.mean(carry.losses)) if carry.losses else None,
            "final_eval_loss": carry.eval_loss}


def finish(workdir: str, run: Run, final: dict[str, Any], records: list[dict[str, Any]]
           ) -> tuple[dict[str, Any], str | None]:
    """The end of a run (process 0): summary.json (`write_summary` of `run`'s config and plan
    with `final`) and, when `run.plots`, training.png of `records` (metrics.jsonl's). Returns
    (summary.json, the console's last line); ({}, None) on other processes."""
    if jax.process_index() != 0:
        return {}, None
    result = write_summary(workdir, run.config, run.plan, final)
    if run.plots:
        plot_run(workdir, records)
    loss = final["final_eval_loss"]
    return result, (f"done: eval loss {'none' if loss is None else f'{loss:.4f}'}, sparsity "
                    f"{final['final_sparsity']:.4f}; summary in {layout.summary_path(workdir)}")


def write_summary(workdir: str, config: ml_collections.ConfigDict, plan: Plan,
                  final: dict[str, Any]) -> dict[str, Any]:
    """Write summary.json atomically and return it.

    Keys: config (resolved), n_total, n_prunable, n_avg (N̄ over all parameters),
    n_avg_prunable, n_final (active at the end), tokens, steps, final_sparsity (realised),
    final_train_loss, final_eval_loss, flops (sparsity-aware training FLOPs), plus `final`'s
    other entries.
    """
    summary = {
        "config": config.to_dict(),
        "n_total": plan.params.total,
        "n_prunable": plan.params.prunable,
        "n_avg": plan.n_avg,
        "n_avg_prunable": plan.n_avg_prunable,
        "tokens": plan.tokens,
        "steps": plan.steps,
        "flops": plan.flops,
        **final,
    }
    path = layout.summary_path(workdir)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
    os.replace(tmp, path)
    return summary


def plot_run(workdir: str, records: list[dict[str, Any]]) -> str:
    """WORKDIR/training.png: loss (train and eval), density and active parameters against step,
    from `records` (metrics.jsonl's, `jaxsparse.train.workdir.records`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    if evals:
        axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-",
                     label="eval")
    axes[0].set(xlabel="step", ylabel="loss (nats/token)", title="Loss")
    axes[0].legend()
    axes[1].plot([r["step"] for r in train], [r["density"] for r in train], drawstyle="steps-post")
    axes[1].set(xlabel="step", ylabel="density (kept fraction of prunable)",
                title="Density", ylim=(0, 1.05))
    axes[2].plot([r["step"] for r in train], [r["active_params"] for r in train],
                 drawstyle="steps-post", label="active")
    axes[2].plot([r["step"] for r in train], [r["n_avg_so_far"] for r in train], "--",
                 label="N̄ so far")
    axes[2].set(xlabel="step", ylabel="parameters", title="Active parameters")
    axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = layout.plot_path(workdir)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def event_record(run: Run, done: int, named: list, active: int, replicated: NamedSharding) -> dict:
    """The pruning_event record of step `done` of `run` (`named`: the masks'
    (names, mask) leaves, `named_leaves`; `active`: their kept weights): density, scheduled
    density and per-layer sparsity."""
    return {"density": active / run.plan.params.prunable,
            "scheduled_density": float(run.schedule.density_at(done, run.steps)),
            "per_layer_sparsity": layer_sparsity(named, replicated)}


def per_layer_sparsity(masks: Any, replicated: NamedSharding) -> dict[str, float]:
    """Sparsity per mask of a masks collection; a kernel stacked by nn.scan (rank >= 3) gets one
    entry per layer, named ``path[i]``."""
    return layer_sparsity(named_leaves(masks), replicated)


def layer_sparsity(named: list, replicated: NamedSharding) -> dict[str, float]:
    """`per_layer_sparsity` of the masks' (names, mask) leaves (`named_leaves`)."""
    flat = [("/".join(names), m) for names, m in named]
    counts = _kept_counter(replicated)([m for _, m in flat])
    out = {}
    for (path, m), c in zip(flat, jax.device_get(counts)):
        per = int(np.prod(m.shape[1:])) if m.ndim >= 3 else int(np.prod(m.shape))
        if m.ndim >= 3:
            out.update({f"{path}[{i}]": 1.0 - int(ci) / per for i, ci in enumerate(c)})
        else:
            out[path] = 1.0 - int(c) / per
    return out


def _kept_counts(masks: list[jax.Array]) -> list[jax.Array]:
    """int32 count of True per mask, per layer for scanned (rank >= 3) masks."""
    return [jnp.sum(m, axis=tuple(range(1, m.ndim)) if m.ndim >= 3 else None, dtype=jnp.int32) for m in masks]


@functools.lru_cache(maxsize=None)
def _kept_counter(replicated: NamedSharding) -> Any:
    """`_kept_counts` jitted once per output sharding (so each pruning event reuses one compile)."""
    return jax.jit(_kept_counts, out_shardings=replicated)


def train_record(run: Run, carry: Carry, done: int, losses: list[float], norms: list[float],
                 active: int, flops_per_token: float) -> dict:
    """The metrics.jsonl record of the log interval ending at step `done` (`carry`: where and when
    the interval began, `step_at_log` and `t_log`, and N̄ so far; `active`: prunable weights in
    force; `flops_per_token`: training FLOPs per token at that density, `train_flops_per_token`)."""
    plan, now = run.plan, time.time()
    tok_s = plan.tokens_per_step * (done - carry.step_at_log) / max(now - carry.t_log, 1e-9)
    density = active / plan.params.prunable
    tflops = flops_per_token * tok_s / 1e12
    record = {"loss": float(sum(losses) / len(losses)), "learning_rate": float(run.learning_rate(done - 1)),
              "grad_norm": norms[-1], "tokens_per_s": tok_s,
              "step_time_s": (now - carry.t_log) / max(done - carry.step_at_log, 1),
              "density": density, "active_params": plan.params.other + active,
              "n_avg_so_far": carry.active_sum / done, "tflops_per_s": tflops}
    peak = run.peak_tflops_per_device
    if peak > 0:
        record["mfu"] = tflops / (peak * jax.device_count())
    return record
