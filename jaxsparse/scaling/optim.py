"""Batched L-BFGS for the Huber / log-sum-exp scaling-law objective (numpy, float64).

Parameters theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e), so that
    ln L_hat(N, D) = LSE(a - alpha ln N, b - beta ln D, e)
and one fit minimises  f(theta) = sum_i w_i Huber_delta(ln L_hat(N_i, D_i) - ln L_i)
(Hoffmann et al. 2022, approach 3; N in parameters, D in tokens, L in nats per token). Point weights w_i >= 0 express
bootstrap resampling (counts) and leave-one-out (a zero) without changing array shapes.

`minimize_batch` runs many independent fits at once (grid starts x resamples): the L-BFGS two-loop
recursion, the backtracking Armijo line search and the objective/gradient are evaluated for all still
active fits together as (fits x points) arrays, in chunks that stay in cache; converged fits drop out of
the batch, so a fit costs only its own iterations.
"""
from __future__ import annotations

import numpy as np

N_PARAMS = 5
MEMORY = 10
_ARMIJO_C1 = 1e-4
_MAX_HALVINGS = 30
_CHUNK_ELEMENTS = 1 << 14


def value_and_grad(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                   delta: float, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Objective (k,) and gradient (k, 5) for k parameter rows theta (k, 5).

    weights: None (all ones) or (k, n). Overflowing or underflowing rows give inf/nan objectives, which the
    line search treats as rejected steps.
    """
    k, n = theta.shape[0], log_n.shape[0]
    f = np.empty(k)
    g = np.empty((k, N_PARAMS))
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for lo in range(0, k, step):
            th, rows = theta[lo:lo + step], slice(lo, lo + step)
            # in-place arithmetic on (chunk, n) arrays that stay in cache
            exp_n = np.multiply(th[:, 3:4], log_n)
            np.exp(np.subtract(th[:, 0:1], exp_n, out=exp_n), out=exp_n)  # A / N^alpha
            exp_d = np.multiply(th[:, 4:5], log_d)
            np.exp(np.subtract(th[:, 1:2], exp_d, out=exp_d), out=exp_d)  # B / D^beta
            big_e = np.exp(th[:, 2:3])  # E
            total = exp_n + exp_d
            total += big_e
            resid = np.log(total)
            resid -= log_l
            psi = np.minimum(np.maximum(resid, -delta), delta)  # Huber derivative
            hub = np.multiply(psi, 0.5)
            np.subtract(resid, hub, out=hub)
            hub *= psi  # Huber value: r^2/2 inside delta, delta(|r| - delta/2) outside
            q = np.divide(psi, total, out=total)  # d objective / d total
            if weights is not None:
                w = weights[rows]
                hub *= w
                q *= w
            f[rows] = hub.sum(axis=1)
            exp_n *= q
            exp_d *= q
            g[rows, 0] = exp_n.sum(axis=1)
            g[rows, 3] = -np.einsum("kn,n->k", exp_n, log_n)  # einsum: no BLAS threads on tiny products
            g[rows, 1] = exp_d.sum(axis=1)
            g[rows, 4] = -np.einsum("kn,n->k", exp_d, log_d)
            g[rows, 2] = big_e[:, 0] * q.sum(axis=1)
    return f, g


def _direction(g: np.ndarray, s_mem: np.ndarray, y_mem: np.ndarray, n_stored: np.ndarray) -> np.ndarray:
    """L-BFGS two-loop recursion for k fits: -H g with (k, m, 5) memories, newest entry last."""
    m = s_mem.shape[1]
    valid = np.arange(m)[None, :] >= (m - n_stored)[:, None]  # (k, m)
    sy = np.einsum("kmi,kmi->km", s_mem, y_mem)
    rho = np.where(valid, 1.0 / np.where(valid, sy, 1.0), 0.0)
    q = g.copy()
    alphas = np.empty_like(rho)
    for i in range(m - 1, -1, -1):
        alphas[:, i] = rho[:, i] * np.einsum("ki,ki->k", s_mem[:, i], q)
        q -= alphas[:, i:i + 1] * y_mem[:, i]
    yy = np.einsum("ki,ki->k", y_mem[:, -1], y_mem[:, -1])
    usable = (n_stored > 0) & (yy > 0)
    gamma = np.where(usable, sy[:, -1] / np.where(usable, yy, 1.0), 1.0)
    r = gamma[:, None] * q
    for i in range(m):
        beta_i = rho[:, i] * np.einsum("ki,ki->k", y_mem[:, i], r)
        r += s_mem[:, i] * (alphas[:, i] - beta_i)[:, None]
    return -r


class _Memory:
    """The L-BFGS curvature pairs of B fits: s and y (B, MEMORY, 5), newest last, and how many are stored."""

    def __init__(self, n_fit: int):
        self.s = np.zeros((n_fit, MEMORY, N_PARAMS))
        self.y = np.zeros((n_fit, MEMORY, N_PARAMS))
        self.stored = np.zeros(n_fit, dtype=np.int64)

    def direction(self, fits: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(direction p, slope g.p, first trial step) for `fits` with gradients g (k, 5): the L-BFGS
        direction, or steepest descent where that is not a descent direction; a fit with no stored pair
        starts at step min(1, 1/|g|)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            p = _direction(g, self.s[fits], self.y[fits], self.stored[fits])
        slope = np.einsum("ki,ki->k", g, p)
        bad = ~(slope < 0)  # not a descent direction (or non-finite)
        p[bad] = -g[bad]
        slope[bad] = -np.einsum("ki,ki->k", g[bad], g[bad])
        t = np.ones(fits.size)
        fresh = self.stored[fits] == 0
        t[fresh] = np.minimum(1.0, 1.0 / np.maximum(np.linalg.norm(g[fresh], axis=1), 1e-300))
        return p, slope, t

    def push(self, fits: np.ndarray, s: np.ndarray, y: np.ndarray) -> None:
        """Store the pair (s, y) of each fit whose curvature s.y is safely positive."""
        curv = np.einsum("ki,ki->k", s, y) > np.maximum(1e-12 * np.einsum("ki,ki->k", y, y), 1e-200)
        upd = fits[curv]
        self.s[upd] = np.roll(self.s[upd], -1, axis=1)
        self.y[upd] = np.roll(self.y[upd], -1, axis=1)
        self.s[upd, -1] = s[curv]
        self.y[upd, -1] = y[curv]
        self.stored[upd] = np.minimum(self.stored[upd] + 1, MEMORY)


def _armijo_search(objective, x: np.ndarray, f: np.ndarray, p: np.ndarray, slope: np.ndarray,
                   t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backtracking line search for k fits at points x (k, 5) with objectives f (k,): halve each fit's
    step t until f(x + t p) <= f + c1 t slope. Returns (f_new (k,), g_new (k, 5)); f_new is inf for a fit
    with no acceptable step. `objective(rows, trial)` evaluates fits `rows` (indices into k) at `trial`.
    t is updated in place to the accepted steps."""
    f_new = np.full(x.shape[0], np.inf)
    g_new = np.zeros_like(x)
    searching = np.arange(x.shape[0])
    for _ in range(_MAX_HALVINGS):
        ft, gt = objective(searching, x[searching] + t[searching, None] * p[searching])
        ok = ft <= f[searching] + _ARMIJO_C1 * t[searching] * slope[searching]
        f_new[searching[ok]] = ft[ok]
        g_new[searching[ok]] = gt[ok]
        searching = searching[~ok]
        if not searching.size:
            break
        t[searching] *= 0.5
    return f_new, g_new


def _checked_weights(weights: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if weights is None:
        return None
    weights = np.asarray(weights, np.float64)
    if weights.shape != shape:
        raise ValueError(f"weights must have shape {shape}, got {weights.shape}")
    return weights


def minimize_batch(theta0: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, *,
                   delta: float = 1e-3, weights: np.ndarray | None = None, max_iter: int = 1000,
                   gtol: float = 1e-5, ftol: float = 2.2e-9,
                   f_floor: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run L-BFGS from every row of theta0; return (theta (B, 5), objective (B,), iterations (B,)).

    theta0: (B, 5) starts (a, b, e, alpha, beta). log_n, log_d, log_l: (n,) natural logs of model size
    (parameters), tokens and loss (nats). weights: None or (B, n) per-fit point weights. A fit stops when
    max |gradient| <= gtol, when an iteration lowers the objective by at most
    ftol * max(|f_old|, |f_new|, f_floor), when the line search finds no decrease, or after max_iter
    iterations. The defaults are scipy L-BFGS-B's (pgtol 1e-5, factr 1e7 * machine eps, floor 1).
    """
    x = np.array(theta0, dtype=np.float64, copy=True)
    if x.ndim != 2 or x.shape[1] != N_PARAMS:
        raise ValueError(f"theta0 must have shape (B, {N_PARAMS}), got {x.shape}")
    log_n, log_d, log_l = (np.asarray(v, np.float64) for v in (log_n, log_d, log_l))
    weights = _checked_weights(weights, (x.shape[0], log_n.shape[0]))
    f, g = value_and_grad(x, log_n, log_d, log_l, delta, weights)
    memory = _Memory(x.shape[0])
    iters = np.zeros(x.shape[0], dtype=np.int64)
    active = np.flatnonzero(np.isfinite(f))
    while active.size:
        p, slope, t = memory.direction(active, g[active])

        def objective(rows, trial, fits=active):
            return value_and_grad(trial, log_n, log_d, log_l, delta,
                                  None if weights is None else weights[fits[rows]])

        f_new, g_new = _armijo_search(objective, x[active], f[active], p, slope, t)
        accepted = np.isfinite(f_new) & (f_new < f[active])
        acc = active[accepted]
        s = t[accepted, None] * p[accepted]
        memory.push(acc, s, g_new[accepted] - g[acc])
        decrease = f[acc] - f_new[accepted]
        x[acc] += s
        f[acc] = f_new[accepted]
        g[acc] = g_new[accepted]
        iters[acc] += 1
        scale = np.maximum(np.maximum(np.abs(f[acc]), np.abs(f[acc] + decrease)), f_floor)
        finished = (decrease <= ftol * scale) | (np.max(np.abs(g[acc]), axis=1) <= gtol)
        finished |= iters[acc] >= max_iter
        active = acc[~finished]
    return x, f, iters
