"""The optimizer: AdamW with warm-up + cosine, global-norm clipping, then scheduled pruning by the
score `pruning.score` names (magnitude by default; left out for pruning.schedule = "dense").

Jin et al. (ICLR 2025), section 5: AdamW (b1 0.9, b2 0.95, eps 1e-8, weight decay 0.1), clipping
1.0, linear warm-up then cosine decay to 10% of the peak. The pruning transform is the last element of the
chain, so after `optax.apply_updates` pruned weights are exactly zero at every step, and the
masks live once, in its state (`jaxsparse.pruning.get_masks(opt_state)`).
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

from jaxsparse.errors import ConfigError
from jaxsparse.pruning import Schedule, scheduled_pruning, with_gradients
from jaxsparse.pruning.scores import registered_score


def resolve_optimizer(config: ml_collections.ConfigDict, steps: int, abstract_params: Any = None
                      ) -> tuple[Schedule, optax.Schedule, optax.GradientTransformation]:
    """(pruning Schedule, learning-rate schedule, optax transform) of a config run for `steps`.
    With `abstract_params`, the transform's state is built abstractly, which checks the pruning
    arguments against the model (n:m groups that do not divide a kernel, patterns). Raises
    ConfigError naming config.pruning when the schedule does not fit `steps` or an argument is bad."""
    sched = pruning_schedule(config)
    try:
        sched.check_fits(steps)
    except ValueError as err:
        raise ConfigError(f"config.pruning: {err}") from err
    learning_rate = learning_rate_schedule(config, steps)
    try:  # the pruning library raises ValueError for its arguments (structure, scope, patterns)
        tx = make_optimizer(config, steps, sched, learning_rate)
        if abstract_params is not None:
            jax.eval_shape(tx.init, abstract_params)
    except ValueError as err:
        raise ConfigError(f"config.pruning: {err}") from err
    return sched, learning_rate, tx


def pruning_schedule(config: ml_collections.ConfigDict) -> Schedule:
    """The pruning Schedule of a training config (built once per run, by `resolve_optimizer`)."""
    p = config.pruning
    try:
        return Schedule(p.schedule, float(p.final_sparsity), float(p.start), float(p.end),
                        p.interval)
    except ValueError as err:
        raise ConfigError(f"config.pruning: {err}") from err


def warmup_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
    """train.warmup_steps, or 10% of the run (at most 1000) when it is -1."""
    if config.train.warmup_steps >= 0:
        return min(config.train.warmup_steps, total_steps)
    return min(1000, max(1, total_steps // 10))


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then cosine to min_lr_ratio x peak at total_steps."""
    peak = config.train.learning_rate
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup_steps(config, total_steps),
        decay_steps=max(total_steps, warmup_steps(config, total_steps) + 1),
        end_value=peak * config.train.min_lr_ratio)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int, schedule: Schedule,
                   learning_rate: optax.Schedule) -> optax.GradientTransformationExtraArgs:
    """clip -> adamw(`learning_rate`) -> scheduled_pruning(`schedule`, the registered score
    `pruning.score`), for a run of `total_steps` steps (both schedules are the run's own, built once
    by `resolve_optimizer`); wrapped in `with_gradients` when that score needs the raw gradient."""
    t, p = config.train, config.pruning
    score = registered_score(p.score)
    parts = []
    if t.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(t.grad_clip))
    parts.append(optax.adamw(learning_rate, b1=t.b1, b2=t.b2,
                             eps=t.eps, weight_decay=t.weight_decay))
    if schedule.kind != "dense":  # a dense run carries no masks and pays nothing for pruning
        parts.append(scheduled_pruning(schedule, total_steps, scope=p.scope,
                                       structure=p.structure or None, include=p.include or None,
                                       exclude=p.exclude or None, score=score.build(config.seed),
                                       fan_in_axes=_fan_in,
                                       report="off"))  # the loop reads check_events after every event
    return with_gradients(optax.chain(*parts)) if score.needs_gradients else optax.chain(*parts)


def _fan_in(path: str, kernel) -> int:
    """Fan-in axis of the models' kernels, laid out ``[..., in, out]`` (a leading layers axis under
    ``nn.scan``), for "n:m" groups."""
    del path
    return kernel.ndim - 2
