"""Checksums of a train state's arrays, computed on the devices that hold them.

`state_checksums(tree)` returns ``{path: "xxxxxxxx"}`` (8 hex digits, 32 bits) for every array
leaf. Each element's bit pattern is mixed with its global flat index by a bijective 32-bit hash
and the results are summed modulo 2**32 under `jax.jit`: every device reduces its own shard,
and XLA's all-reduce combines the partial sums across devices and hosts, so every process gets
the same value. Because the sum is over global indices it does not depend on the sharding or
on the number of processes: a checkpoint written by 2 processes verifies on 1.

Any single changed element (e.g. one flipped bit) changes the checksum (the hash is a
bijection); several changes cancel with probability about 2**-32.
`json_checksum(obj)` is the matching digest of a JSON-serialisable object (the data state).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_GOLDEN = np.uint32(0x9E3779B9)


def _mix(x: jax.Array) -> jax.Array:
    """A bijective 32-bit finaliser (xor-shift-multiply, as in MurmurHash3's fmix32)."""
    x = x ^ (x >> 16)
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _words(x: jax.Array) -> jax.Array:
    """The bit pattern of `x` as uint32 words (sub-word dtypes widened, 64-bit ones split)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    bits = x.dtype.itemsize * 8
    if bits == 32:
        return lax.bitcast_convert_type(x, jnp.uint32)
    if bits < 32:
        return lax.bitcast_convert_type(x, getattr(jnp, f"uint{bits}")).astype(jnp.uint32)
    return lax.bitcast_convert_type(x, jnp.uint32)  # 64-bit: a trailing axis of 2 words


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
    """uint32 array of `shape` holding each element's row-major flat index (mod 2**32)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in range(len(shape) - 1, -1, -1):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


def _leaf_checksum(x: jax.Array) -> jax.Array:
    words = _words(x)
    mixed = _mix(words ^ _mix(_flat_index(words.shape) + _GOLDEN))
    return jnp.sum(mixed, dtype=jnp.uint32)


@jax.jit
def _checksums(leaves: list[jax.Array]) -> list[jax.Array]:
    return [_leaf_checksum(x) for x in leaves]


def _path(path: tuple) -> str:
    return jax.tree_util.keystr(path)


def state_checksums(tree: Any) -> dict[str, str]:
    """{leaf path (jax keystr): 8 hex digits} of every array leaf of `tree` (jax or numpy
    arrays). Collective when the leaves span several processes: every process must call it."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    sums = jax.device_get(_checksums([leaf for _, leaf in flat]))
    return {_path(p): f"{int(s):08x}" for (p, _), s in zip(flat, sums)}


def other_layout(expected: Any, tree: Any) -> str | None:
    """What differs between the leaf paths recorded in `expected` (a checkpoint's state checksums)
    and those of `tree` (e.g. an abstract train state), or None when they are the same (or nothing
    was recorded): a state of another layout, written by another version of jaxsparse."""
    if not isinstance(expected, dict):
        return None
    paths = {_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    lacks, extra = sorted(paths - set(expected)), sorted(set(expected) - paths)
    if not lacks and not extra:
        return None
    return (f"it lacks {len(lacks)} leaf path(s) this version's train state has ({', '.join(lacks[:3])}"
            f"{' ...' if len(lacks) > 3 else ''}) and holds {len(extra)} it has not ({', '.join(extra[:3])}"
            f"{' ...' if len(extra) > 3 else ''})")


def json_checksum(obj: Any) -> str:
    """sha256 (hex) of `obj`'s canonical JSON (sorted keys): for small JSON items."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mismatches(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Paths whose checksum differs, or that one side lacks (sorted)."""
    keys = set(expected) | set(actual)
    return sorted(k for k in keys if expected.get(k) != actual.get(k))
