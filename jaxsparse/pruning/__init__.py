"""jaxsparse.pruning: scheduled magnitude pruning for any Flax/optax project.

This package imports nothing else from jaxsparse. Public API:

* ``Schedule``: density over training (geometric, cubic, linear, one_shot, dense).
* ``magnitude_pruning``: the optax transform (last element of an ``optax.chain``).
* ``get_masks`` / ``mask_collection``: the masks held in an optimizer state, and their Flax
  ``masks``-collection form.
* ``summary``: per-tensor and total sparsity; ``average_param_count``: N̄.
"""
from jaxsparse.pruning.accounting import (AverageParamCount, SparsitySummary, TensorSparsity,
                                          average_param_count, summary)
from jaxsparse.pruning.schedule import KINDS, Schedule
from jaxsparse.pruning.selection import prunable_flags
from jaxsparse.pruning.structure import parse_structure, realised_densities
from jaxsparse.pruning.transform import (SCOPES, MagnitudePruningState, get_masks,
                                         magnitude_pruning, mask_collection)

__all__ = [
    "KINDS", "SCOPES", "AverageParamCount", "MagnitudePruningState", "Schedule",
    "SparsitySummary", "TensorSparsity", "average_param_count", "get_masks",
    "magnitude_pruning", "mask_collection", "parse_structure", "prunable_flags",
    "realised_densities", "summary",
]
