"""Flax Linen helpers: read a kernel's mask from the ``masks`` variable collection.

The pruning transform keeps the masks in the optimizer state (``get_masks``); a Linen model reads
them as a variable collection, fed on every apply::

    masks = mask_collection(get_masks(opt_state))
    logits = model.apply({"params": params, "masks": masks}, x)

Inside a module, ``kernel = masked(self, kernel)`` multiplies a kernel by its mask (the variable
``masks/<module path>/kernel``, same shape, bool), so a pruned weight gets exactly zero gradient.
``MaskedDense`` is ``nn.Dense`` built that way, ``MaskedDenseGeneral`` ``nn.DenseGeneral`` (kernel
``[*input axes, *features]``, e.g. q/k/v ``[D, H, Dh]`` and an output ``[H, Dh, D]``). The mask
variable is declared at ``init`` (all True) so that ``model.init`` returns the collection's layout;
``apply`` without a ``masks`` collection uses the kernel as it is (the pruned weights are already exactly 0 after
``optax.apply_updates``; only their gradient is then non-zero, and the transform discards it).

This module and model_fan_in.py (which reads fan-in axes from a model) are the ones that import flax.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MASKS = "masks"


def masked(module: nn.Module, kernel: jax.Array, name: str = "kernel") -> jax.Array:
    """``kernel * mask``, the mask being the ``masks`` variable ``name`` of ``module`` (declared at
    init as all-True bool of ``kernel.shape``); ``kernel`` unchanged when no mask is given."""
    if module.is_initializing() or module.has_variable(MASKS, name):
        mask = module.variable(MASKS, name, jnp.ones, kernel.shape, bool).value
        if mask.shape != kernel.shape:
            raise ValueError(f"mask {MASKS}/{'/'.join(module.path)}/{name} has shape {mask.shape}, "
                             f"the kernel {kernel.shape}")
        return kernel * mask.astype(kernel.dtype)
    return kernel


class MaskedDense(nn.Module):
    """``y = x @ (kernel * mask) + bias``; kernel (in_features, features), mask from ``masks``.

    Attributes: as ``nn.Dense`` (features, use_bias, dtype, param_dtype, kernel_init, bias_init).
    """

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (jnp.shape(x)[-1], self.features), self.param_dtype)
        kernel = masked(self, kernel)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jnp.matmul(x, kernel)
        return y if bias is None else y + bias


class MaskedDenseGeneral(nn.Module):
    """``nn.DenseGeneral`` with its kernel multiplied by its mask from ``masks``.

    Contracts the input axes ``axis`` with the kernel's leading axes: kernel
    ``[*x.shape[axis], *features]``, bias ``[*features]``; the output replaces the input axes by
    ``features``. Those leading kernel axes are the fan-in: for "n:m" structure tell the transform
    with ``fan_in_axes``, e.g. ``(0,)`` for q/k/v kernels ``[D, H, Dh]`` and ``(0, 1)`` for an output
    kernel ``[H, Dh, D]`` (``axis=(-2, -1)``).

    Attributes: as ``nn.DenseGeneral`` without ``batch_dims`` (features, axis, use_bias, dtype,
    param_dtype, kernel_init, bias_init); a ``kernel_init`` wrapped in ``nn.with_partitioning`` gives
    ``nn.Partitioned`` params as usual (the mask stays an unboxed bool array).
    """

    features: int | Sequence[int]
    axis: int | Sequence[int] = -1
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = _tuple(self.features)
        axis = tuple(sorted(a % x.ndim for a in _tuple(self.axis)))
        in_shape = tuple(x.shape[a] for a in axis)
        init = _folded_init(self.kernel_init, int(np.prod(in_shape)))
        kernel = masked(self, self.param("kernel", init, in_shape + features, self.param_dtype))
        bias = self.param("bias", self.bias_init, features, self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        dims = ((axis, tuple(range(len(axis)))), ((), ()))
        y = jax.lax.dot_general(x, kernel, dims)
        return y if bias is None else y + bias


def _folded_init(kernel_init: Callable, fan_in: int) -> Callable:
    """An initialiser of ``[*input axes, *features]`` kernels that draws ``kernel_init`` for the matrix
    ``[fan_in, rest]`` and folds it into the requested shape, so fan-in scaled initialisers see the true
    fan-in (``nn.DenseGeneral`` draws its kernels the same way, so the two agree). A box returned by
    ``kernel_init`` (``nn.with_partitioning``) is kept around the folded array."""

    def init(key, shape, dtype=jnp.float32):
        drawn = kernel_init(key, (fan_in, int(np.prod(shape)) // fan_in), dtype)
        if isinstance(drawn, nn.meta.AxisMetadata):
            return nn.meta.replace_boxed(drawn, drawn.unbox().reshape(shape))
        return drawn.reshape(shape)
    return init


def _tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return (int(x),) if isinstance(x, (int, np.integer)) else tuple(int(v) for v in x)

