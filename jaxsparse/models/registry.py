"""The model seam: model families by name, so nothing outside jaxsparse.models names a model class.

    @models.register("llama", decoder=DecodeTransformer)
    class Transformer(nn.Module): ...

    model = models.build(model_config)            # the family model_config.family names
    decoder = models.decoder(model_config, 64)    # its KV-cache decoder, or None

A family is a callable `ModelConfig -> flax.linen.Module` whose module is called as
`model(tokens: int32[batch, length]) -> float32 logits[batch, length, vocab]` (causal: position t
sees tokens[:, :t+1]) and `model(tokens, targets, weights) -> (sum of weighted cross-entropy in nats,
sum of weights)`, declares its prunable kernels' masks in the `masks` collection (see
jaxsparse.pruning and `layers.ShardedMaskedDense`), names its token table "embed" and annotates its
parameters with logical axis names (see jaxsparse.models.sharding). Its parameter counts are measured
from its init (`accounting.param_counts`), never written down by hand.

`decoder` (optional): `(ModelConfig, cache_len) -> Module` with the family's variable tree plus a
`cache` collection, called as `models.decode.DecodeTransformer` is; a family without one generates by
recomputing the whole prefix each token (`jaxsparse.inference.sampling`).

A family defined outside the package reaches the command lines through the config key `imports`
(modules imported before the config is checked, and again when a checkpoint is restored).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional, TypeVar

DEFAULT_FAMILY = "llama"

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Family:
    """A registered family: `build(config)` the training module, `decoder(config, cache_len)` the
    KV-cache module or None."""

    build: Callable[[Any], Any]
    decoder: Optional[Callable[[Any, int], Any]] = None


_FAMILIES: dict[str, Family] = {}


def register(name: str, *, decoder: Optional[Callable[[Any, int], Any]] = None) -> Callable[[F], F]:
    """Decorator: register a model family (a `ModelConfig -> nn.Module` callable) under `name`,
    with its optional KV-cache `decoder`. Registering the same builder again is a no-op."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model family name {name!r}: expected a non-empty string")

    def decorate(builder: F) -> F:
        family = Family(builder, decoder)
        previous = _FAMILIES.get(name)
        if previous is not None and previous != family:
            raise ValueError(f"model family {name!r} is already registered ({previous.build!r})")
        _FAMILIES[name] = family
        return builder

    return decorate


def families() -> tuple[str, ...]:
    """The registered family names, sorted."""
    return tuple(sorted(_FAMILIES))


def family(name: str) -> Family:
    """The registered family `name`; ValueError naming the known ones otherwise."""
    if name not in _FAMILIES:
        raise ValueError(f"model family {name!r} is not registered: known families are "
                         f"{', '.join(families())}")
    return _FAMILIES[name]


def build(model_config: Any) -> Any:
    """The (unbound) Flax module of `model_config.family` for `model_config`."""
    return family(model_config.family).build(model_config)


def decoder(model_config: Any, cache_len: int) -> Any:
    """The KV-cache module of `model_config.family` with `cache_len` slots, or None when the family
    has none."""
    make = family(model_config.family).decoder
    return None if make is None else make(model_config, cache_len)
