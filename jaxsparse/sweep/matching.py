"""Sizes, steps and N̄-matched sparsities of sweep runs, computed from a training config alone.

A matched pair (the paper's central comparison, Jin et al., ICLR 2025, section 2) is a sparse run
of a bigger model whose exact N̄ (all parameters, averaged over its steps) equals a dense run's
size N at the same number of tokens D, so both cost the same training FLOPs (about 6 N̄ D).
Units: parameters are counts; budgets are tokens per total parameter; steps are optimizer steps.
"""
from __future__ import annotations

from typing import Callable

import ml_collections

from jaxsparse.data import ByteTokenizer
from jaxsparse.models import ParamCounts
from jaxsparse.pruning import Schedule, average_param_count
from jaxsparse.train.resolve.parts import measured, model_config, total_steps


def config_param_counts(config: ml_collections.ConfigDict) -> ParamCounts:
    """Parameter counts of the model `config` trains with the byte tokenizer (the embedded
    corpus's), the vocabulary padded as the trainer pads it: measured as the trainer's plan
    measures them (`parts.measured`: the family's init, config.pruning's prunable leaves)."""
    return measured(config, model_config(config, ByteTokenizer.vocab_size))[1]


def steps_for(config: ml_collections.ConfigDict, budget: float, n_total: int) -> int:
    """Optimizer steps of `budget` tokens per parameter of an `n_total`-parameter model at
    `config`'s batch and sequence length (the trainer's own rounding: whole steps, up)."""
    c = config.copy_and_resolve_references()
    c.train.steps, c.train.budget = 0, float(budget)
    return total_steps(c, n_total)


def n_avg(counts: ParamCounts, schedule: Schedule, steps: int) -> float:
    """Exact N̄ over all parameters of a `steps`-step run of a model with `counts` under `schedule`."""
    return average_param_count(schedule, steps, counts.prunable, counts.other).total


def matched_sparsity(n_avg_at: Callable[[float], float], target: float, digits: int = 4) -> float:
    """The final sparsity S (rounded to `digits`) at which `n_avg_at(S)` (N̄, falling in S) equals
    `target` parameters. Raises ValueError when no S in [0, 0.999] reaches it."""
    lo, hi = 0.0, 0.999
    if not n_avg_at(hi) <= target <= n_avg_at(lo):
        raise ValueError(f"no final sparsity in [0, {hi}] gives N̄ = {target:,.0f} parameters "
                         f"(N̄ ranges over [{n_avg_at(hi):,.0f}, {n_avg_at(lo):,.0f}])")
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if n_avg_at(mid) > target else (lo, mid)
    return round((lo + hi) / 2, digits)
