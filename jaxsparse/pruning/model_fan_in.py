"""n:m fan-in axes read from the model itself: ``fan_in_axes_from(model)``.

A layer knows which kernel axes it contracts with its input (its fan-in, fanin.py). This module
reads them, so that ``magnitude_pruning(..., structure="2:4", fan_in_axes=fan_in_axes_from(model))``
needs no hand-written axes:

* NNX (the module tree, walked without running it): ``nnx.Einsum`` from its einsum string (the
  kernel axes whose letters appear in the input and not in the output: ``"BTD,NDH->BTNH"`` gives
  ``(1,)``, ``"BTNH,NHD->BTD"`` ``(0, 1)``); ``nnx.LinearGeneral`` the ``in_features`` axes after
  its ``batch_axis`` ones; ``nnx.Linear`` axis 0.
* Linen (the module, traced by ``jax.eval_shape`` of ``model.init`` with ``model.init``'s own
  arguments; nothing is computed): ``nn.Einsum`` (its einsum string, also one given at call),
  ``nn.DenseGeneral`` (the ``axis`` axes after ``batch_dims``), ``nn.Dense`` axis 0, and
  ``MaskedDense`` / ``MaskedDenseGeneral`` of ``jaxsparse.pruning.linen``. Linen's ``init`` output
  alone (a params dict) does not say which axes a layer contracts, so the module is needed.

What it cannot know it refuses, naming the kernel, when the transform asks for that kernel: an
embedding table (a lookup contracts nothing), a convolution, an einsum whose kernel contracts no
axis with the input, and a kernel whose shape is not the one its layer made (stacked by
``nnx.vmap``/``nnx.scan``/``nn.scan``: pass ``fan_in_axes`` for it). A parameter of any other layer
(your own module's ``nnx.Param``) is left to the usual rule: a rank-2 kernel's axis 0, any other
rank refused by name (fanin.py).

Paths are those the transform sees (selection.py): '/'-joined, relative to the model, e.g.
``layers/0/attn/q/kernel`` (NNX) or ``block/attn/query/kernel`` (Linen, the ``params`` collection's
tree, as passed to ``tx.init``).
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxsparse.pruning import linen as masked_linen


@dataclasses.dataclass(frozen=True)
class Layer:
    """What a layer says about one of its kernels: its fan-in ``axes`` and ``shape`` as the layer
    made it, or ``refused``: why its fan-in cannot be known. ``kind`` names the layer type."""

    kind: str
    shape: tuple[int, ...]
    axes: tuple[int, ...] | None = None
    refused: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelFanIn:
    """A ``fan_in_axes`` function for ``magnitude_pruning``: ``(path, leaf) -> axes | None``.

    ``layers`` maps each kernel path the model names to its ``Layer``; a path not in it gives None
    (the transform's own rule). Raises ValueError naming the kernel for a refused layer and for a
    leaf whose shape is not the one its layer made."""

    layers: Mapping[str, Layer]

    def __call__(self, path: str, leaf: Any) -> tuple[int, ...] | None:
        layer = self.layers.get(path)
        if layer is None:
            return None
        if layer.refused is not None:
            raise ValueError(f"fan_in_axes_from: the fan-in of {path} ({layer.kind}) is unknown: {layer.refused}; "
                             "pass fan_in_axes for it, or exclude it from pruning")
        shape = tuple(np.shape(leaf))
        if shape != layer.shape:
            raise ValueError(f"fan_in_axes_from: {path} has shape {shape}, but its {layer.kind} made it "
                             f"{layer.shape} (stacked by nnx.vmap/nnx.scan/nn.scan?); pass fan_in_axes for it")
        return layer.axes


def fan_in_axes_from(model: Any, *init_args: Any, **init_kwargs: Any) -> ModelFanIn:
    """The fan-in axes of every kernel of ``model``, as a ``fan_in_axes`` for ``magnitude_pruning``.

    Args:
      model: an ``nnx.Module`` (no further arguments; abstract ones from ``nnx.eval_shape`` too), or
        a Linen ``nn.Module`` followed by the arguments of its ``model.init`` (rngs first, then the
        example inputs), traced abstractly.

    Raises:
      TypeError: ``model`` is neither, or an NNX module was given init arguments.
    """
    nnx = sys.modules.get("flax.nnx")  # an NNX model exists only once its program imported flax.nnx
    if nnx is not None and isinstance(model, nnx.Module):
        if init_args or init_kwargs:
            raise TypeError("fan_in_axes_from(nnx_model) takes no other argument: the module tree is read as it is")
        return ModelFanIn(_nnx_layers(model))
    if isinstance(model, nn.Module):
        if not init_args:
            raise TypeError("fan_in_axes_from(linen_model, *init_args): give the arguments of model.init "
                            "(rngs, then the example inputs), e.g. fan_in_axes_from(model, jax.random.key(0), x)")
        return ModelFanIn(_linen_layers(model, init_args, init_kwargs))
    raise TypeError(f"fan_in_axes_from: model={type(model).__name__} is neither an nnx.Module nor a flax.linen Module")


def einsum_fan_in(einsum_str: str) -> tuple[tuple[int, ...] | None, str | None]:
    """(fan-in axes, None) of the kernel (second operand) of ``"input,kernel->output"``, or
    (None, why) when it has none or cannot be read: the kernel axes whose letters appear in the
    input and not in the output (a letter in all three is a batch axis, not fan-in)."""
    spec = einsum_str.replace(" ", "")
    operands, arrow, out = spec.partition("->")
    x, comma, kernel = operands.partition(",")
    if not arrow or not comma or "," in kernel:
        return None, f"einsum {einsum_str!r} is not 'input,kernel->output'"
    if "." in kernel or len(set(kernel)) != len(kernel):
        return None, f"einsum {einsum_str!r}: the kernel's axes must be distinct letters without '...'"
    axes = tuple(i for i, c in enumerate(kernel) if c in x and c not in out)
    if not axes:
        return None, f"einsum {einsum_str!r} contracts no kernel axis with the input"
    return axes, None


def _einsum_layer(kind: str, einsum_str: str | None, shape: tuple[int, ...]) -> Layer:
    if einsum_str is None:
        return Layer(kind, shape, refused="no einsum string given at construction")
    axes, why = einsum_fan_in(einsum_str)
    return Layer(kind, shape, axes=axes, refused=why)


def _nnx_layers(model: Any) -> dict[str, Layer]:
    """Each layer's kernel in the ``nnx.Module`` tree ``model``, with the shape its own configuration
    gives it (so a kernel stacked by ``nnx.vmap``/``nnx.scan``, whose variable has more axes, is refused
    by the shape check). flax.nnx is imported here, not with this module: the trainer never needs it."""
    from flax import nnx

    refused = {nnx.Embed: ("embedding", "an embedding table (a lookup contracts nothing with an input)"),
               nnx.Conv: ("kernel", "a convolution (n:m along its window and channels is not read here)"),
               nnx.ConvTranspose: ("kernel", "a transposed convolution")}
    layers = {}
    for path, module in nnx.iter_modules(model):
        prefix = "".join(f"{p}/" for p in path)
        kind = _kind(module, "nnx")
        if isinstance(module, nnx.Einsum):
            layers[prefix + "kernel"] = _einsum_layer(kind, module.einsum_str, tuple(module.kernel_shape))
        elif isinstance(module, nnx.LinearGeneral):
            batch = tuple(module.batch_axis.values())
            shape = (*batch, *module.in_features, *module.out_features)
            fan_in = tuple(range(len(batch), len(batch) + len(module.in_features)))
            layers[prefix + "kernel"] = Layer(kind, shape, fan_in)
        elif isinstance(module, nnx.Linear):
            layers[prefix + "kernel"] = Layer(kind, (module.in_features, module.out_features), (0,))
        else:
            for cls, (name, what) in refused.items():
                if isinstance(module, cls):
                    layers[prefix + name] = Layer(kind, _shape(getattr(module, name)), refused=what)
    return layers


def _shape(variable: Any) -> tuple[int, ...]:
    """The shape of an NNX variable's value (an array or, from ``nnx.eval_shape``, a ShapeDtypeStruct)."""
    return tuple(jax.tree.leaves(variable)[0].shape)


def _linen_layers(model: nn.Module, init_args: tuple, init_kwargs: dict) -> dict[str, Layer]:
    layers: dict[str, Layer] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        name = "embedding" if isinstance(module, nn.Embed) else "kernel"
        if context.method_name == "__call__" and module.has_variable("params", name):
            shape = tuple(np.shape(nn.unbox(module.get_variable("params", name))))
            layer = _linen_layer(module, shape, args, kwargs)
            if layer is not None:
                layers["".join(f"{p}/" for p in module.path) + name] = layer
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(*init_args, **init_kwargs))
    return layers


def _linen_layer(module: nn.Module, shape: tuple[int, ...], args: tuple, kwargs: dict) -> Layer | None:
    kind = _kind(module, "nn")
    if isinstance(module, nn.Einsum):
        given = args[1] if len(args) > 1 else kwargs.get("einsum_str")
        return _einsum_layer(kind, given if given is not None else module.einsum_str, shape)
    if isinstance(module, (nn.DenseGeneral, masked_linen.MaskedDenseGeneral)):
        n_axis = len(_as_tuple(module.axis))
        start = len(_as_tuple(getattr(module, "batch_dims", ())))
        return Layer(kind, shape, tuple(range(start, start + n_axis)))
    if isinstance(module, (nn.Dense, masked_linen.MaskedDense)):
        return Layer(kind, shape, (0,))
    if isinstance(module, nn.Embed):
        return Layer(kind, shape, refused="an embedding table (a lookup contracts nothing with an input)")
    if isinstance(module, (nn.Conv, nn.ConvTranspose)):
        return Layer(kind, shape, refused="a convolution (n:m along its window and channels is not read here)")
    return None


def _kind(module: Any, flax_prefix: str) -> str:
    """``nnx.Einsum`` / ``nn.Dense`` for a flax layer, the bare class name for any other."""
    cls = type(module)
    return f"{flax_prefix}.{cls.__name__}" if cls.__module__.startswith("flax.") else cls.__name__


def _as_tuple(x: Any) -> tuple:
    return (x,) if isinstance(x, (int, np.integer)) else tuple(x)
