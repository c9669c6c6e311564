"""jaxsparse.pruning: scheduled pruning for any Flax/optax project.

This package imports nothing else from jaxsparse and needs only jax, flax, optax and numpy (flax
for ``jaxsparse.pruning.linen`` and ``fan_in_axes_from``). Public API:

* ``Schedule``: density over training (geometric, cubic, linear, one_shot, dense).
* ``magnitude_pruning``: the optax transform (last element of an ``optax.chain``); ``score=``
  plugs in another score: ``random_scores(seed)``, ``saliency`` (|w*g|, with ``with_gradients``)
  or your own function (contract in ``jaxsparse.pruning.scores``); ``min_density=`` a floor per
  tensor; ``fan_in_axes=`` the input axes of "n:m" groups (``jaxsparse.pruning.fanin``), read from
  an NNX or Linen model by ``fan_in_axes_from(model)`` (``jaxsparse.pruning.model_fan_in``);
  ``report=`` (one of ``REPORTS``) how the step itself reports what an event found.
* ``get_masks`` / ``mask_collection``: the masks held in an optimizer state, and their Flax
  ``masks``-collection form; ``check_events``: raise if an event met NaN/Inf weights or found the
  transform not last in the chain, warn naming a tensor that lost every weight.
* ``sparsity_summary``: per-tensor and total sparsity; ``average_param_count``: N̄.
* ``score_by_name``: a score from its config name (one of ``SCORES``).
"""
from jaxsparse.pruning.accounting import (AverageParamCount, SparsitySummary, TensorSparsity,
                                          average_param_count, sparsity_summary)
from jaxsparse.pruning.model_fan_in import ModelFanIn, fan_in_axes_from
from jaxsparse.pruning.schedule import KINDS, Schedule
from jaxsparse.pruning.scores import SCORES, score_by_name, magnitude, random_scores, saliency, with_gradients
from jaxsparse.pruning.selection import prunable_flags
from jaxsparse.pruning.structure import parse_structure, realised_densities
from jaxsparse.pruning.state import (REPORTS, PruningState, check_events,
                                     find_pruning_states, get_masks, mask_collection)
from jaxsparse.pruning.arguments import SCOPES
from jaxsparse.pruning.transform import magnitude_pruning

__all__ = [
    "KINDS", "REPORTS", "SCOPES", "SCORES", "AverageParamCount", "ModelFanIn", "PruningState",
    "Schedule", "SparsitySummary", "TensorSparsity", "average_param_count", "check_events", "fan_in_axes_from",
    "find_pruning_states", "get_masks", "magnitude", "magnitude_pruning", "mask_collection",
    "parse_structure", "prunable_flags", "random_scores", "realised_densities", "saliency",
    "score_by_name", "sparsity_summary", "with_gradients",
]
