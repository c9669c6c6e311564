"""The fan-in of a kernel: the input axes an n:m group runs along.

A kernel's fan-in is the set of axes its layer contracts with the input. n:m sparsity (keep ``n``
of every ``m`` consecutive weights) has a hardware meaning only along the fan-in, so the groups run
there, over the fan-in axes flattened in row-major order:

* rank 2 (``nn.Dense``, ``[in, out]``): axis 0, inferred.
* anything else is ambiguous from the shape alone and must be given (``fan_in_axes_from(model)``,
  model_fan_in.py, reads it from an NNX or Linen model): ``nn.DenseGeneral`` q/k/v
  kernels ``[D, H, Dh]`` have fan-in ``(0,)``; its output kernels ``[H, Dh, D]`` ``(0, 1)``
  (fan-in H·Dh); a kernel stacked by ``nn.scan`` ``[L, in, out]`` ``(1,)``.

``fan_in_axes`` is a function ``(path, leaf) -> axes | None``: ``path`` the '/'-joined module path
(``"block/attn/q/kernel"``, boxes left out, see selection.py), ``leaf`` the array; it returns an int
or a tuple of ints (negative counts from the end), or None to infer.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.pruning import topk

FanInAxes = Callable[[str, Any], Any]

_HOW = ("pass fan_in_axes=fan_in_axes_from(model) to magnitude_pruning (read from an NNX or Linen model), or "
        "fan_in_axes=lambda path, leaf: ... (e.g. 0 for a DenseGeneral q/k/v kernel [D, H, Dh], (0, 1) for its "
        "output kernel [H, Dh, D], 1 for an nn.scan-stacked kernel [L, in, out])")


def resolve(fan_in_axes: FanInAxes | None, path: str, leaf: Any, m: int) -> tuple[int, ...]:
    """The sorted, non-negative fan-in axes of ``leaf``, checked against group size ``m``.

    Raises:
      ValueError: naming ``path`` when the axes are ambiguous (rank != 2 and not given), invalid,
        or their flattened size is not a multiple of ``m``.
    """
    shape = tuple(np.shape(leaf))
    given = None if fan_in_axes is None else fan_in_axes(path, leaf)
    if given is None:
        if len(shape) != 2:
            raise ValueError(f"structure n:m: the fan-in axes of {path} with shape {shape} are ambiguous "
                             f"(only a rank-2 kernel's, axis 0, is inferred); {_HOW}")
        given = (0,)
    raw = (given,) if isinstance(given, (int, np.integer)) else tuple(given)
    if not raw or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in raw):
        raise ValueError(f"fan_in_axes gave {given!r} for {path}: need an int or a non-empty tuple of ints")
    if any(not -len(shape) <= a < len(shape) for a in raw):
        raise ValueError(f"fan_in_axes gave {given!r} for {path} with shape {shape}: axis out of range")
    axes = tuple(sorted({int(a) % len(shape) for a in raw}))
    if len(axes) != len(raw) or len(axes) == len(shape):
        raise ValueError(f"fan_in_axes gave {given!r} for {path} with shape {shape}: axes must be distinct "
                         "and leave at least one output axis")
    fan_in = int(np.prod([shape[a] for a in axes]))
    if fan_in % m:
        raise ValueError(f"structure n:m: group size m={m} does not divide the fan-in {fan_in} (axes {axes}) "
                         f"of {path} with shape {shape}")
    return axes


def n_of_m_mask(scores: jax.Array, active: jax.Array, keep: jax.Array, m: int,
                axes: tuple[int, ...]) -> jax.Array:
    """``topk.n_of_m_mask`` with groups along the flattened fan-in ``axes`` (from ``resolve``).

    A kernel laid out ``[..., in, out]`` (fan-in axis -2) is passed straight through; any other is
    transposed to ``[fan-in axes, other axes]``, flattened to 2-D, masked and laid back out.
    """
    ndim = scores.ndim
    if axes == (ndim - 2,):
        return topk.n_of_m_mask(scores, active, keep, m)
    others = tuple(a for a in range(ndim) if a not in axes)
    perm = axes + others
    moved = tuple(scores.shape[a] for a in perm)
    fan_in = int(np.prod(moved[:len(axes)]))

    def flat(x):
        return jnp.transpose(x, perm).reshape(fan_in, -1)
    mask = topk.n_of_m_mask(flat(scores), flat(active), keep, m)
    return jnp.transpose(mask.reshape(moved), np.argsort(perm))
