"""Which parameters are prunable, named by their '/'-joined pytree path.

The default rule (Jin et al., ICLR 2025): every array of rank >= 2 whose path does not contain
``embed`` (case-insensitive). For a Flax LLaMA-style model that is every linear kernel
(attention q/k/v/o, the MLP matrices) and the untied LM head, and not the token embedding or
the norm scales. ``include``/``exclude`` regular expressions (``re.search`` on the path)
override the rule: a leaf is prunable iff it has rank >= 1 and
``(include matches if include else default rule) and not (exclude matches)``.
Only floating-point leaves are ever prunable: integer and bool leaves (step counters, index
tables) are left alone even when ``include`` names them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_EXCLUDE = r"(?i)embed"


BOX_ATTRIBUTES = ("value", "raw_value")


def is_box(node: Any) -> bool:
    """True for a box around one array: ``nn.Partitioned``/``nn.LogicallyPartitioned`` params, an NNX
    ``Variable`` (state without ``nnx.as_pure``), i.e. a pytree node that is not a tuple, list or
    mapping and whose one child is its ``value``/``raw_value`` attribute. A NamedTuple or dict field
    that happens to be called ``value`` is not a box."""
    if node is None or isinstance(node, (tuple, list, Mapping, jax.Array, np.ndarray, np.generic)):
        return False
    children = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)[0]
    return (len(children) == 1 and len(children[0][0]) == 1
            and isinstance(children[0][0][0], jax.tree_util.GetAttrKey)
            and children[0][0][0].name in BOX_ATTRIBUTES)


def named_leaves(tree: Any) -> list[tuple[list[str], Any]]:
    """``(module path names, leaf)`` for every leaf of ``jax.tree.leaves(tree)``, in that order.

    A boxed array is named by the path to its box, so a boxed kernel is ``['q', 'kernel']`` like a
    bare one; every other key (dict keys, attributes, sequence indices) is part of the name."""
    out = []
    for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_box)[0]:
        names = path_names(path)
        out.extend((names, leaf) for leaf in (jax.tree.leaves(node) if is_box(node) else [node]))
    return out


def leaf_paths(tree: Any) -> list[str]:
    """The '/'-joined module path of every leaf of ``jax.tree.leaves(tree)``, e.g. ``layers_0/attn/q/kernel``."""
    return ["/".join(names) for names, _ in named_leaves(tree)]


def path_names(path: Sequence[Any]) -> list[str]:
    """The names of a pytree key path, each key as it is (boxes are handled by ``named_leaves``)."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(str(key.name))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return parts


def compile_pattern(name: str, pattern: str | None) -> re.Pattern | None:
    """Compile ``pattern`` or raise a ValueError naming the argument."""
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise ValueError(f"{name}={pattern!r} must be a regular expression string or None")
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{name}={pattern!r} is not a valid regular expression: {err}") from err


class Prunable(NamedTuple):
    """Every leaf of a params tree, in ``jax.tree.leaves`` order: its '/'-joined module path and
    whether the pruning transform masks it."""

    paths: list[str]
    flags: list[bool]


def prunable_flags(params: Any, include: str | None = None, exclude: str | None = None) -> Prunable:
    """Paths and prunable flags of the leaves of ``params``, in ``jax.tree.leaves`` order.

    Raises:
      ValueError: when ``include`` or ``exclude`` matches no parameter path, or nothing at all
        is prunable.
    """
    inc = compile_pattern("include", include)
    exc = compile_pattern("exclude", exclude)
    default_exc = re.compile(DEFAULT_EXCLUDE)
    named = named_leaves(params)
    paths = ["/".join(names) for names, _ in named]
    for name, pat in (("include", inc), ("exclude", exc)):
        if pat is not None and not any(pat.search(p) for p in paths):
            raise ValueError(
                f"{name}={pat.pattern!r} matches no parameter; parameter paths are: "
                + ", ".join(paths[:20]) + (" ..." if len(paths) > 20 else ""))
    flags = []
    for path, (_, leaf) in zip(paths, named):
        ndim = len(getattr(leaf, "shape", ()))
        if inc is not None:
            keep = ndim >= 1 and bool(inc.search(path))
        else:
            keep = ndim >= 2 and not default_exc.search(path)
        if exc is not None and exc.search(path):
            keep = False
        keep = keep and _is_float(leaf)
        flags.append(keep)
    if not any(flags):
        raise ValueError(
            f"no prunable parameter (include={include!r}, exclude={exclude!r}); by default "
            "prunable means floating point, rank >= 2 and no 'embed' in the path; parameter paths are: "
            + ", ".join(paths[:20]))
    return Prunable(paths, flags)


def _is_float(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        dtype = np.asarray(leaf).dtype
    return bool(jnp.issubdtype(dtype, jnp.floating))
