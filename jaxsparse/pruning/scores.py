"""Pruning scores: which weights an event keeps. A score is ONE function.

Contract of a score::

    score(params, updates, *, step, **extra_args) -> scores

* ``params``: the weights after this update (``params + updates``, what ``optax.apply_updates``
  produces and the next forward pass sees), the whole params pytree.
* ``updates``: the updates arriving at the pruning transform (the last element of the chain, so
  e.g. Adam's step, not the raw gradient), same pytree; ``None`` for an event at step 0, which
  ``init`` applies before any update exists.
* ``step``: int32 scalar, the index of the forward-pass step the event precedes.
* ``extra_args``: whatever keyword arguments the caller gave ``tx.update(..., **extra_args)``
  (optax's ``GradientTransformationExtraArgs``), e.g. ``grads=`` (see ``with_gradients``).
* returns a pytree shaped like ``params``: a float array of the leaf's shape for every prunable
  leaf (other leaves may hold anything, including None; they are ignored). Scores must be
  >= 0 and not NaN: an event with a NaN or negative score keeps the old masks and flags the leaf,
  and ``check_events`` / ``get_masks`` then raise an error naming it (event.py).
  Larger scores are kept. The transform feeds them to its top-k machinery (global, layerwise
  or n:m), computed only on event steps; scores are compared as float32.

``magnitude`` (|w|, the default and the paper's method), ``random_scores(seed)`` (the standard
baseline) and ``saliency`` (|w * g|, first-order Taylor saliency) are provided.

The registry: every score a trainer can choose by name (the jaxsparse trainer's config key
``pruning.score``) is registered once, here or from your own code, with ``register_score(name,
build, needs_gradients=...)``; ``registered_score(name)`` returns its entry, which says how to build
it and what it needs, so the trainer hard-codes no score.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

Score = Callable[..., Any]


def magnitude(params: Any, updates: Any = None, **_: Any) -> Any:
    """|w|: magnitude pruning (the default)."""
    del updates
    return jax.tree.map(jnp.abs, params)


def random_scores(seed: int = 0) -> Score:
    """The random-pruning baseline: uniform [0, 1) scores, a pure function of ``seed``, the event's
    ``step`` and the leaf's position in ``jax.tree.leaves(params)`` (so reruns and resumes prune the
    same weights). Each event draws afresh among the still-active weights."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed={seed!r} must be an int")

    def score(params: Any, updates: Any = None, *, step: jax.Array, **_: Any) -> Any:
        del updates
        leaves, treedef = jax.tree.flatten(params)
        key = jax.random.fold_in(jax.random.key(seed), step)
        out = [jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(w), jnp.float32)
               for i, w in enumerate(leaves)]
        return treedef.unflatten(out)

    score.__name__ = "random"
    return score


def saliency(params: Any, updates: Any = None, *, grads: Any = None, **_: Any) -> Any:
    """|w * g| (first-order Taylor saliency, as in SNIP), with ``g`` the raw gradient of this step.

    Needs ``grads=`` among the extra args: call ``tx.update(grads, state, params, grads=grads)``
    or build the optimizer as ``with_gradients(optax.chain(...))``. ``w`` is the weight after the
    update and ``g`` the gradient that produced it.
    """
    del updates
    if grads is None:
        raise ValueError(
            "the saliency score needs this step's gradient: call tx.update(grads, state, params, "
            "grads=grads), or wrap the optimizer in jaxsparse.pruning.with_gradients(tx); it "
            "cannot score an event at step 0 (pruning.start = 0), before any gradient exists")
    return jax.tree.map(lambda w, g: jnp.abs(w.astype(jnp.float32) * g.astype(jnp.float32)),
                        params, grads)


def with_gradients(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``tx`` whose ``update`` also passes the incoming gradients on as the extra arg ``grads``
    (unless the caller gave one), so a gradient-based score inside the chain sees the raw gradient.

    The state is ``tx``'s own (same pytree), so checkpoints and ``get_masks`` are unaffected.
    """
    inner = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, **extra_args):
        extra_args.setdefault("grads", updates)
        return inner.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


class RegisteredScore(NamedTuple):
    """A score chosen by name: ``build(seed)`` returns the score function (``seed``: the run's
    seed, for scores that draw random numbers); ``needs_gradients``: it reads the extra arg
    ``grads``, so the optimizer must be wrapped in ``with_gradients``."""

    build: Callable[[int], Score]
    needs_gradients: bool


_REGISTRY: dict[str, RegisteredScore] = {}


def register_score(name: str, build: Callable[[int], Score], *, needs_gradients: bool = False) -> None:
    """Make ``name`` a score a trainer can choose (the jaxsparse trainer's ``pruning.score``).

    ``build(seed) -> score`` (contract above). Register before the trainer reads its config, from
    the same process. Raises ValueError for a name already taken, TypeError for a ``build`` that
    is not callable."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"score name {name!r} must be a non-empty string")
    if name in _REGISTRY:
        raise ValueError(f"score {name!r} is already registered; registered: {', '.join(score_names())}")
    if not callable(build):
        raise TypeError(f"register_score({name!r}, build={build!r}): build must be a function seed -> score")
    _REGISTRY[name] = RegisteredScore(build, bool(needs_gradients))


def score_names() -> tuple[str, ...]:
    """The registered scores' names, in the order they were registered."""
    return tuple(_REGISTRY)


def registered_score(name: str) -> RegisteredScore:
    """The entry registered as ``name``; ValueError naming the registered ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"score={name!r} is unknown; allowed: {', '.join(score_names())}")
    return _REGISTRY[name]


register_score("magnitude", lambda seed: magnitude)
register_score("random", random_scores)
register_score("saliency", lambda seed: saliency, needs_gradients=True)
