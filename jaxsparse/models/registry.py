"""The model seam: model families by name, so the trainer never names a model class.

    @models.register("llama")
    class Transformer(nn.Module): ...

    model = models.build(model_config)                  # the default family, "llama"
    model = models.build(model_config, family="mine")   # a family registered by a user

A family is any callable `ModelConfig -> flax.linen.Module` whose module is called as
`model(tokens: int32[batch, length]) -> float32 logits[batch, length, vocab]`, declares its
prunable kernels' masks in the `masks` collection (see jaxsparse.pruning) and annotates its
parameters with logical axis names (see jaxsparse.models.sharding).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

DEFAULT_FAMILY = "llama"

_FAMILIES: dict[str, Callable[[Any], Any]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def register(name: str) -> Callable[[F], F]:
    """Decorator: register a model family (a `ModelConfig -> nn.Module` callable) under `name`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model family name {name!r}: expected a non-empty string")

    def decorate(builder: F) -> F:
        previous = _FAMILIES.get(name)
        if previous is not None and previous is not builder:
            raise ValueError(f"model family {name!r} is already registered ({previous!r})")
        _FAMILIES[name] = builder
        return builder

    return decorate


def families() -> tuple[str, ...]:
    """The registered family names, sorted."""
    return tuple(sorted(_FAMILIES))


def build(model_config: Any, family: str = DEFAULT_FAMILY) -> Any:
    """The (unbound) Flax module of `family` for `model_config`; ValueError for an unknown name."""
    if family not in _FAMILIES:
        raise ValueError(f"model family {family!r} is not registered: known families are "
                         f"{', '.join(families())}")
    return _FAMILIES[family](model_config)
