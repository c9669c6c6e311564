"""Renamed public names (docs/migrating.md, "Names") still resolve to the current object and warn."""
from __future__ import annotations

import importlib

import pytest

RENAMED = [
    ("jaxsparse.sweep", "Run", "RunSpec"),
    ("jaxsparse.sweep.spec", "Run", "RunSpec"),
    ("jaxsparse.scaling", "Plan", "ComputePlan"),
    ("jaxsparse.scaling.planning", "Plan", "ComputePlan"),
    ("jaxsparse.data", "validate", "validate_data_config"),
    ("jaxsparse.data.config", "validate", "validate_data_config"),
    ("jaxsparse.sweep.matching", "param_counts", "config_param_counts"),
    ("jaxsparse.pruning", "MagnitudePruningState", "PruningState"),
    ("jaxsparse.pruning.state", "MagnitudePruningState", "PruningState"),
    ("jaxsparse.pruning.transform", "MagnitudePruningState", "PruningState"),
]


@pytest.mark.parametrize("module, old, new", RENAMED)
def test_an_old_name_warns_and_is_the_new_one(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: use .*{new}"):
        value = getattr(mod, old)
    assert value is getattr(mod, new)
    assert old not in getattr(mod, "__all__", [])  # `import *` gives only current names


@pytest.mark.parametrize("module", sorted({m for m, _, _ in RENAMED}))
def test_other_missing_names_still_raise_attribute_error(module):
    mod = importlib.import_module(module)
    with pytest.raises(AttributeError, match="no_such_name"):
        mod.no_such_name  # noqa: B018
    assert not hasattr(mod, "no_such_name")
