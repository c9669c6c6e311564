"""End-of-run outputs: WORKDIR/summary.json (the scaling-law fitter's input, with the loop's
`measured` entries) and PNG plots."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import jax
import ml_collections
import numpy as np

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
