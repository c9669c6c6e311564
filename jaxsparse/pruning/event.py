"""One pruning event: keep counts, scores checked, new masks. Used by the transform (transform.py).

Keep counts (the one place the rounding rule lives): at density ``d`` a tensor of ``size`` weights
("layerwise") or all ``size`` prunable weights together ("global") keep ``round(d * size)``
weights, but AT LEAST ONE: a layer whose count rounds to 0 (e.g. a (1, 1) kernel at density
< 0.5, or a (2, 2) kernel at density < 0.125 under "layerwise") keeps its largest-scored weight, so
pruning never disconnects a layer. Under "global" scope a tensor may still lose every weight
(that is what one global threshold means; it is flagged EMPTIED and warned about, and the
transform's ``min_density`` floor prevents it). "n:m" keeps at least ``n`` per group (structure.py).

Checks (on event steps only, inside jit): every prunable weight after the update must be finite
and every score >= 0 (not NaN); for the magnitude score one max over the threshold search's keys
does it (active weights; pruned ones are exactly 0). From the second update on, the weights the
update received must be exactly 0 where the masks already prune them (else a transform after this
one changed their updates: NOT_LAST). A failing event keeps the previous masks and records a code
per leaf in the state (``PruningState.invalid``, sticky); the step reports new codes itself (a
``jax.pure_callback`` in the event branches, ``report=``; state.py), and ``check_events(opt_state)``
and ``get_masks`` (when called outside jit) raise naming the leaf paths (state.py). The callback is a
pure one on purpose: an effectful ``jax.debug.callback`` anywhere in the step turns off jax's fast
dispatch for every call (on CPU it doubled the time of NON-event steps; bench/bench_pruning_threshold.py).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.pruning import explicit, fanin, topk


def keep_counts(densities: np.ndarray, sizes: list[int], scope: str,
                per_group: np.ndarray | None = None) -> np.ndarray:
    """int32[n_events, n_tensors] (layerwise), [n_events, 1] (global) or, for n:m (``per_group``
    given: weights kept per group at each event), [n_events, 1]."""
    if per_group is not None:
        return np.asarray(per_group, np.int32)[:, None]
    if scope == "global":
        counts = np.floor(densities * sum(sizes) + 0.5)[:, None]
    else:
        counts = np.floor(densities[:, None] * np.asarray(sizes)[None, :] + 0.5)
    return np.maximum(counts, 1).astype(np.int32)


def compute_masks(scores: Sequence[jax.Array], masks: Sequence[jax.Array], k_row: jax.Array,
                  scope: str, m: int | None, weights: Sequence[jax.Array] | None = None,
                  axes: Sequence[tuple[int, ...]] | None = None, floors: np.ndarray | None = None
                  ) -> tuple[list[jax.Array], jax.Array]:
    """(new masks, invalid codes) of one event. The masks are subsets of ``masks`` keeping the
    top-scored active weights; ``k_row`` is a row of ``keep_counts``; ``m`` is the n:m group size
    (None: unstructured) and ``axes`` each leaf's fan-in axes (fanin.py); ``floors`` (global scope
    only, or None) the fewest weights each leaf keeps. Codes: int32[n_leaves] of WEIGHT_NOT_FINITE /
    SCORE_INVALID bits.

    ``weights=None`` says the scores are |w| (magnitude): then a non-finite weight is a non-finite
    score, found by one max over the int32 keys the threshold search uses anyway. Otherwise the
    weights (finite?) and scores (>= 0, not NaN?) are checked by their own reductions.
    """
    if m is not None:
        if axes is None:
            raise ValueError("compute_masks: n:m structure needs each kernel's fan-in axes (fanin.resolve)")
        new = [explicit.auto_layout(functools.partial(fanin.n_of_m_mask, m=m, axes=ax), a, s, a, k_row[0])
               for s, a, ax in zip(scores, masks, axes)]
        return new, invalid_codes(scores if weights is None else weights, scores)
    keys = [topk.score_bits(s, a) for s, a in zip(scores, masks)]
    if scope == "global" and floors is not None:
        ts = topk.floored_thresholds(keys, k_row[0], jnp.asarray(floors, jnp.int32))
        new = [x >= ts[i] for i, x in enumerate(keys)]
    elif scope == "global":
        t = topk.global_threshold(keys, k_row[0])
        new = [x >= t for x in keys]
    else:
        ts = topk.per_tensor_thresholds(keys, k_row)
        new = [x >= ts[i] for i, x in enumerate(keys)]
    if weights is None:  # |w| of an active weight is NaN or Inf iff its key is >= the bits of +inf
        codes = jnp.stack([jnp.where(jnp.max(x) >= topk.INF_BITS, WEIGHT_NOT_FINITE, 0) for x in keys])
        return new, codes.astype(jnp.int32)
    return new, invalid_codes(weights, scores)


def check_scores(scores: Sequence, weights: Sequence[jax.Array], paths: Sequence[str]) -> list[jax.Array]:
    """Scores as arrays of their weights' shapes, or a TypeError/ValueError naming the leaf (at trace time)."""
    out = []
    for s, w, path in zip(scores, weights, paths):
        if s is None or not hasattr(s, "shape"):
            raise TypeError(f"the pruning score returned {type(s).__name__} for prunable leaf {path}; "
                            "it must return a float array there")
        if not jnp.issubdtype(s.dtype, jnp.floating):
            raise TypeError(f"the pruning score for {path} has dtype {s.dtype}; scores must be floats")
        if tuple(s.shape) != tuple(w.shape):
            raise ValueError(f"the pruning score for {path} has shape {tuple(s.shape)}, the weight "
                             f"{tuple(w.shape)}")
        out.append(s)
    return out


WEIGHT_NOT_FINITE = 1  # bit of an invalid code: the weight holds a NaN or Inf
SCORE_INVALID = 2      # bit: the score holds a NaN or a negative value
NOT_LAST = 4           # bit: a weight pruned by an earlier event is no longer 0 (transform not last)
EMPTIED = 8            # bit (a warning, not an error): every weight of the leaf is pruned
BLOCKING = WEIGHT_NOT_FINITE | SCORE_INVALID | NOT_LAST  # bits that keep the event from changing masks


def stale_codes(weights: Sequence[jax.Array], masks: Sequence[jax.Array], armed: jax.Array) -> list[jax.Array]:
    """Per leaf NOT_LAST when ``armed`` and a weight outside its mask is not exactly 0.

    ``weights`` are the params the update received: with the transform last in the chain, every
    update since the masks were set wrote ``-w`` there, so they are 0 (``armed`` is False for the
    first update, whose params are the ones ``init`` saw)."""
    return [jnp.where(armed & jnp.any(jnp.where(mk, False, w != 0)), NOT_LAST, 0)
            for w, mk in zip(weights, masks)]


def emptied_codes(masks: Sequence[jax.Array]) -> list[jax.Array]:
    """Per leaf EMPTIED when its new mask keeps nothing."""
    return [jnp.where(jnp.any(mk), 0, EMPTIED) for mk in masks]


def invalid_codes(weights: Sequence[jax.Array], scores: Sequence[jax.Array]) -> jax.Array:
    """int32[len(weights)]: per prunable leaf, WEIGHT_NOT_FINITE | SCORE_INVALID bits (0 = fine).
    Computed inside the event branch only, so non-event steps pay nothing."""
    codes = [jnp.where(jnp.all(jnp.isfinite(w)), 0, WEIGHT_NOT_FINITE)
             | jnp.where(jnp.all(s >= 0), 0, SCORE_INVALID)  # NaN fails s >= 0 as well
             for w, s in zip(weights, scores)]
    return jnp.stack(codes).astype(jnp.int32) if codes else jnp.zeros((0,), jnp.int32)


def describe_invalid(codes: np.ndarray, paths: Sequence[str]) -> str | None:
    """The error message for the NaN/score bits of ``codes`` (one per prunable leaf, named by ``paths``),
    or None."""
    parts = []
    for bit, what in ((WEIGHT_NOT_FINITE, "prunable weight(s) with NaN or Inf"),
                      (SCORE_INVALID, "score(s) NaN or negative")):
        names = _named(codes, paths, bit)
        if names:
            parts.append(f"{what}: {names}")
    if not parts:
        return None
    return (f"pruning event: {'; '.join(parts)} (training diverged, or the score is wrong); the masks were "
            "left as they were before that event")


def describe_order(codes: np.ndarray, paths: Sequence[str]) -> str | None:
    """The error message for NOT_LAST bits, or None."""
    names = _named(codes, paths, NOT_LAST)
    if not names:
        return None
    return ("the pruning transform must be the LAST element of the optax chain (e.g. optax.chain("
            "optax.adamw(...), magnitude_pruning(...))): at a pruning event, weights pruned by an earlier "
            f"event were no longer 0 in {names}, so a transform after it changed their updates")


def describe_emptied(codes: np.ndarray, paths: Sequence[str]) -> str | None:
    """The warning for EMPTIED bits, or None."""
    names = _named(codes, paths, EMPTIED)
    if not names:
        return None
    return (f"pruning emptied {names}: every weight of that tensor is pruned (one global threshold over all "
            "tensors can do that); pass min_density= to keep a floor per tensor, scope='layerwise', or "
            "exclude= that tensor")


def _named(codes: np.ndarray, paths: Sequence[str], bit: int) -> str:
    return ", ".join(p for p, c in zip(paths, np.asarray(codes)) if c & bit)
