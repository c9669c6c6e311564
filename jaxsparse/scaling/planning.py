"""Compute planning with a fitted law: the compute-optimal sparse run for a FLOP budget.

Training compute is C = 6 * N-bar * D FLOPs (N-bar: average parameter count over training, D: tokens;
Jin et al., ICLR 2025). For a pruning schedule, N-bar = N0 * (1 - p * (1 - rho)), with N0 the initial dense
size (parameters), p the prunable fraction of the parameters and rho the schedule's average density of the
prunable part. Since the law depends on N-bar and D only, the best N-bar for budget C is the dense
compute-optimal size; the sparse run reaches the same predicted loss with a final (inference) size of
N0 * (1 - p * S) instead of N-bar.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxsparse.scaling.law import ScalingLawFit

SCHEDULES = ("geometric", "cubic", "linear", "one_shot")


def average_density(final_sparsity: float, start: float = 0.25, end: float = 0.75,
                    schedule: str = "geometric") -> float:
    """Average over training of the prunable part's density (fraction kept), continuous closed forms.

    Jin et al., ICLR 2025, with a = start, b = end (fractions of training), delta = 1 - S:
      geometric: a + (b - a)(1 - delta)/ln(1/delta) + (1 - b) delta     (-> 1 as S -> 0)
      cubic:     1 - S (3/4 (b - a) + (1 - b))
      linear:    1 - S (1/2 (b - a) + (1 - b))
      one_shot:  a + (1 - a) delta   (all pruning at t_s; `end` unused)
    The exact discrete average (an event every f steps) differs by O(f/T).
    """
    _check_schedule(final_sparsity, start, end, schedule)
    s, a, b = float(final_sparsity), float(start), float(end)
    keep = 1.0 - s
    if schedule == "geometric":
        ramp = 1.0 if s == 0.0 else (1.0 - keep) / math.log(1.0 / keep)
        return a + (b - a) * ramp + (1.0 - b) * keep
    if schedule == "cubic":
        return 1.0 - s * (0.75 * (b - a) + (1.0 - b))
    if schedule == "linear":
        return 1.0 - s * (0.5 * (b - a) + (1.0 - b))
    return a + (1.0 - a) * keep


def _check_schedule(final_sparsity: float, start: float, end: float, schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if not 0.0 <= final_sparsity < 1.0:
        raise ValueError(f"final sparsity must be in [0, 1), got {final_sparsity}")
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"need 0 <= start <= end <= 1 (fractions of training), got start={start}, end={end}")


@dataclasses.dataclass
class ComputePlan:
    """A compute-optimal plan. Sizes in parameters, tokens in tokens, compute in FLOPs, loss in nats.

    n_initial: dense size to start from (N0); n_avg: N-bar; n_final: active parameters after pruning
    (inference size); tokens: D = flops / (6 n_avg); predicted_loss: L(n_avg, tokens);
    dense_equal_loss_size: the dense model reaching predicted_loss on the same tokens (same compute);
    inference_saving: 1 - n_final / dense_equal_loss_size.
    """

    flops: float
    final_sparsity: float
    schedule: str
    start: float
    end: float
    prunable_fraction: float
    average_density: float
    n_initial: float
    n_avg: float
    n_final: float
    tokens: float
    predicted_loss: float
    dense_equal_loss_size: float
    inference_saving: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compute_optimal_size(law: ScalingLawFit, flops: float) -> float:
    """N-bar minimising L(N, flops / (6 N)): (alpha A / (beta B))^(1/(alpha+beta)) (C/6)^(beta/(alpha+beta))."""
    if not (law.alpha > 0 and law.beta > 0 and law.A > 0 and law.B > 0):
        raise ValueError(f"planning needs A, B, alpha, beta > 0; got {law.params()}")
    total = law.alpha + law.beta
    return (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / total) * (flops / 6.0) ** (law.beta / total)


def plan(law: ScalingLawFit, flops: float, *, final_sparsity: float, start: float = 0.25, end: float = 0.75,
         schedule: str = "geometric", prunable_fraction: float = 1.0) -> ComputePlan:
    """Initial size N0 and tokens D minimising the predicted loss for `flops` of training compute.

    prunable_fraction: share of the parameters that pruning touches (1.0 when the law was fitted on
    N-bar over prunable parameters; below 1 with embeddings and norms counted in N).
    """
    if not (math.isfinite(flops) and flops > 0):
        raise ValueError(f"flops (training compute budget) must be finite and > 0, got {flops}")
    if not 0.0 < prunable_fraction <= 1.0:
        raise ValueError(f"prunable_fraction must be in (0, 1], got {prunable_fraction}")
    rho = average_density(final_sparsity, start, end, schedule)
    n_avg = compute_optimal_size(law, flops)
    n_initial = n_avg / (1.0 - prunable_fraction * (1.0 - rho))
    n_final = n_initial * (1.0 - prunable_fraction * final_sparsity)
    tokens = flops / (6.0 * n_avg)
    loss = float(law.predict(n_avg, tokens))
    dense = float(law.size_for_loss(loss, tokens))
    return ComputePlan(flops=float(flops), final_sparsity=float(final_sparsity), schedule=schedule, start=float(start),
                end=float(end), prunable_fraction=float(prunable_fraction), average_density=rho,
                n_initial=n_initial, n_avg=n_avg, n_final=n_final, tokens=tokens, predicted_loss=loss,
                dense_equal_loss_size=dense, inference_saving=1.0 - n_final / dense)
