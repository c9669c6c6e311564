"""One pruning event: keep counts, scores checked, new masks. Used by the transform (transform.py).

Keep counts (the one place the rounding rule lives): at density ``d`` a tensor of ``size`` weights
("layerwise") or all ``size`` prunable weights together ("global") keep ``round(d * size)``
weights, but AT LEAST ONE: a layer whose count rounds to 0 (e.g. a (1, 1) kernel at density
< 0.5, or a (2, 2) kernel at density < 0.125 under "layerwise") keeps its largest-scored weight, so
pruning never disconnects a layer. Under "global" scope a tensor may still lose every weight
(that is what one global threshold means). "n:m" keeps at least ``n`` per group (structure.py).

Checks (on event steps only, inside jit): every prunable weight after the update must be finite
and every score finite and >= 0, else the event raises ``FloatingPointError`` naming the leaf
paths (raised from a ``jax.debug.callback``; under ``jax.jit`` it surfaces as a
``JaxRuntimeError`` whose message contains this text, when the step's results are read).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse.pruning import topk


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
                  scope: str, m: int | None) -> list[jax.Array]:
    """New masks (subsets of ``masks``) keeping the top-scored active weights; ``k_row`` is a row
    of ``keep_counts``; ``m`` is the n:m group size (None: unstructured)."""
    if m is not None:
        return [topk.n_of_m_mask(s, a, k_row[0], m) for s, a in zip(scores, masks)]
    keys = [topk.score_bits(s, a) for s, a in zip(scores, masks)]
    if scope == "global":
        t = topk.global_threshold(keys, k_row[0])
        return [x >= t for x in keys]
    ts = topk.per_tensor_thresholds(keys, k_row)
    return [x >= ts[i] for i, x in enumerate(keys)]


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


def raise_on_bad_values(weights: Sequence[jax.Array], scores: Sequence[jax.Array],
                        paths: Sequence[str], step: jax.Array) -> None:
    """Emit the check of the event (call it inside the event branch only: costs nothing elsewhere)."""
    bad_w = jnp.stack([~jnp.all(jnp.isfinite(w)) for w in weights])
    bad_s = jnp.stack([~jnp.all(s >= 0) for s in scores])  # NaN fails >= 0 as well

    def report(bad_w, bad_s, step):
        bad_w, bad_s = np.asarray(bad_w), np.asarray(bad_s)
        if not (bad_w.any() or bad_s.any()):
            return
        parts = []
        if bad_w.any():
            names = [p for p, b in zip(paths, bad_w) if b]
            parts.append(f"prunable weight(s) with NaN or Inf: {', '.join(names)}")
        if bad_s.any():
            names = [p for p, b in zip(paths, bad_s) if b]
            parts.append(f"score(s) NaN or negative: {', '.join(names)}")
        raise FloatingPointError(f"pruning event before step {int(step)}: {'; '.join(parts)} "
                                 "(training diverged, or the score is wrong); no mask was computed")

    jax.debug.callback(report, bad_w, bad_s, step)
