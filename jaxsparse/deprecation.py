"""Renamed public names that still resolve, with a `DeprecationWarning` (docs/migrating.md lists them).

A package keeps an old name by ending with
``__getattr__ = renamed_names(__name__, {"Old": "New"}, globals())``: Python calls it only for names
the module does not define, so every access to ``Old`` warns and returns the current ``New``.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping


def renamed_names(module: str, renames: Mapping[str, str], namespace: Mapping[str, Any]
                  ) -> Callable[[str], Any]:
    """A module ``__getattr__`` that maps each old name in `renames` to the current name's value in
    `namespace` (the module's globals), warning on every access; other names raise AttributeError."""

    def __getattr__(name: str) -> Any:
        if name not in renames:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new = renames[name]
        warnings.warn(f"{module}.{name} is deprecated: use {module}.{new} (see docs/migrating.md)",
                      DeprecationWarning, stacklevel=2)
        return namespace[new]

    return __getattr__
