"""jaxsparse.pruning: scheduled pruning for any Flax/optax project (guide: docs/pruning.md).

This package imports nothing else from jaxsparse and needs only jax, flax, optax and numpy (flax
for ``jaxsparse.pruning.linen`` and ``fan_in_axes_from``). Its public, stable names are the twelve
below, plus the modules ``jaxsparse.pruning.linen`` (Flax Linen layers that apply masks) and
``jaxsparse.pruning.scores`` (the score contract and the registry of scores chosen by name). Other
modules are the library's internals, imported by the jaxsparse trainer from where they are defined.

* ``Schedule``: density over training (geometric, cubic, linear, one_shot, dense).
* ``magnitude_pruning``: the optax transform of Jin et al. (ICLR 2025), last element of an
  ``optax.chain``, ranking weights by |w|; ``scheduled_pruning``: the same transform with any
  score (``score=``: ``random_scores(seed)``, ``saliency`` (|w*g|, under ``with_gradients``) or
  your own function).
* ``get_masks`` / ``mask_collection``: the masks held in an optimizer state, and their Flax
  ``masks``-collection form; ``check_events``: raise if an event met NaN/Inf weights or found the
  transform not last in the chain, warn naming a tensor that lost every weight.
* ``sparsity_summary``: per-tensor and total sparsity; ``average_param_count``: N̄.
* ``fan_in_axes_from``: the input axes of "n:m" groups, read from an NNX or Linen model.
"""
from jaxsparse.pruning.accounting import average_param_count, sparsity_summary
from jaxsparse.pruning.model_fan_in import fan_in_axes_from
from jaxsparse.pruning.schedule import Schedule
from jaxsparse.pruning.scores import random_scores, saliency, with_gradients
from jaxsparse.pruning.state import check_events, get_masks, mask_collection
from jaxsparse.pruning.transform import magnitude_pruning, scheduled_pruning

__all__ = [
    "Schedule", "average_param_count", "check_events", "fan_in_axes_from", "get_masks", "magnitude_pruning",
    "mask_collection", "random_scores", "saliency", "scheduled_pruning", "sparsity_summary", "with_gradients",
]
