"""Synthetic runs drawn from a known law, for tests, demos and checking the fitter.

`sparse_dense_summaries` mimics the grid of Jin et al., ICLR 2025: sizes x final sparsities x token
budgets, each run pruned with a schedule whose average density comes from planning.average_density, and
its loss drawn from the N-bar law L(N-bar, D) times log-normal noise. The dicts carry the trainer's
summary.json keys. Sizes in parameters, tokens in tokens, compute in FLOPs, loss in nats.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxsparse.scaling.law import predict_loss
from jaxsparse.scaling.planning import average_density


def noisy_loss(params: dict[str, float], n: Any, d: Any, *, noise: float, rng: np.random.Generator) -> np.ndarray:
    """L(n, d) * exp(noise * standard normal): relative noise of about `noise`."""
    clean = predict_loss(params, n, d)
    return clean * np.exp(noise * rng.standard_normal(np.shape(clean)))


def sparse_dense_summaries(params: dict[str, float], *, sizes: Sequence[float] = (58e6, 162e6, 468e6),
                           sparsities: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8),
                           tokens_per_param: Sequence[float] = (200.0, 400.0), prunable_fraction: float = 0.8,
                           schedule: str = "geometric", start: float = 0.25, end: float = 0.75,
                           noise: float = 0.002, seed: int = 0) -> list[dict[str, Any]]:
    """Summary dicts for every (size, sparsity, token budget); eval loss follows the N-bar law."""
    rng = np.random.default_rng(seed)
    out = []
    for n0 in sizes:
        for sparsity in sparsities:
            rho = average_density(sparsity, start, end, schedule)
            prunable = prunable_fraction * n0
            n_avg = n0 - prunable * (1.0 - rho)
            for tpp in tokens_per_param:
                tokens = tpp * n0
                loss = float(noisy_loss(params, n_avg, tokens, noise=noise, rng=rng))
                out.append({
                    "n_total": n0, "n_prunable": prunable, "n_avg": n_avg, "n_avg_prunable": prunable * rho,
                    "n_final": n0 - prunable * sparsity, "tokens": tokens, "steps": 1000,
                    "final_sparsity": sparsity, "final_train_loss": loss + 0.01, "final_eval_loss": loss,
                    "flops": 6.0 * n_avg * tokens,
                    "config": {"schedule": schedule, "start": start, "end": end, "final_sparsity": sparsity},
                })
    return out

