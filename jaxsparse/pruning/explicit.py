"""Explicit-axis meshes (``jax.make_mesh``'s default ``AxisType.Explicit``, ``jax.set_mesh``).

Under an explicit mesh every array's type carries its sharding (``jax.typeof(x).sharding``) and
each operation must be legal for it: a ``lax.cond``'s branches and a ``where``'s cases must agree,
and a reshape may not move a sharded axis where it cannot stay sharded. The transform therefore
gives every mask its kernel's sharding (``like``), and runs computations whose intermediate layouts
have no sharding of their own (the n:m groups) with the mesh axes in Auto mode (``auto_layout``), so
the compiler places them as on an auto mesh and the result comes back sharded like the kernel.
On auto meshes, and for arrays outside any mesh, both are the identity.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
from jax.sharding import AxisType, NamedSharding


def sharding_of(x: Any) -> NamedSharding | None:
    """``x``'s sharding when it names an explicit mesh axis (``jax.typeof(x).sharding``), else None."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return None
    mesh = sharding.mesh
    if not any(t == AxisType.Explicit for t in getattr(mesh, "axis_types", ())):
        return None
    return sharding


def like(x: jax.Array, ref: Any) -> jax.Array:
    """``x`` (same shape as ``ref``) resharded to ``ref``'s explicit sharding; ``x`` when ``ref``
    has none or ``x`` has it already (no operation is added then)."""
    sharding = sharding_of(ref)
    if sharding is None or jax.typeof(x).sharding == sharding:
        return x
    return jax.sharding.reshard(x, sharding)


def auto_layout(fn: Callable[..., jax.Array], ref: Any, *args: Any) -> jax.Array:
    """``fn(*args)``; under an explicit mesh computed with its axes in Auto mode and returned with
    ``ref``'s sharding (``jax.sharding.auto_axes``)."""
    sharding = sharding_of(ref)
    if sharding is None:
        return fn(*args)
    return jax.sharding.auto_axes(fn, out_sharding=sharding)(*args)
