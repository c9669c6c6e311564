"""Flax Linen helpers: read a kernel's mask from the ``masks`` variable collection.

The pruning transform keeps the masks in the optimizer state (``get_masks``); a Linen model reads
them as a variable collection, fed on every apply::

    masks = mask_collection(get_masks(opt_state))
    logits = model.apply({"params": params, "masks": masks}, x)

Inside a module, ``kernel = masked(self, kernel)`` multiplies a kernel by its mask (the variable
``masks/<module path>/kernel``, same shape, bool), so a pruned weight gets exactly zero gradient.
``MaskedDense`` is ``nn.Dense`` built that way. The mask variable is declared at ``init`` (all
True) so that ``model.init`` returns the collection's layout; ``apply`` without a ``masks``
collection uses the kernel as it is (the pruned weights are already exactly 0 after
``optax.apply_updates``; only their gradient is then non-zero, and the transform discards it).

Only this module of ``jaxsparse.pruning`` imports flax.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

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
