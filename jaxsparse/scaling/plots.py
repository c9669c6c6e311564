"""PNG plots of a scaling-law fit (matplotlib, Agg backend, imported lazily).

Sizes in parameters (N-bar for sparse runs), tokens in tokens, loss in nats per token.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxsparse.scaling.law import ScalingLawFit

_MAX_GROUPS = 8


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _count_label(value: float, _pos: object = None) -> str:
    for unit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= unit:
            return f"{value / unit:g}{suffix}"
    return f"{value:g}"


def _log_axis(axis: Any, lo: float, hi: float) -> None:
    """Readable log axis for counts: 1-2-5 ticks over short ranges, decades otherwise, labels like 50M."""
    from matplotlib import ticker

    subs = (1.0, 2.0, 5.0) if np.log10(hi / lo) < 2.5 else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10.0, subs=subs))
    axis.set_major_formatter(ticker.FuncFormatter(_count_label))
    axis.set_minor_formatter(ticker.NullFormatter())


def _title(fit: ScalingLawFit) -> str:
    return (f"L = {fit.E:.3f} + {fit.A:.4g}/N^{fit.alpha:.3f} + {fit.B:.4g}/D^{fit.beta:.3f}"
            f"   (MAE {fit.mae:.4f} nats, {fit.n_points} runs)")


def token_groups(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group runs by token budget: (group index per run, representative tokens per group).

    Budgets equal to 3 significant digits form a group; with more than 8 such budgets, runs are binned into
    6 log-spaced quantile bins represented by their geometric mean.
    """
    rounded = np.array([float(f"{v:.3g}") for v in d])
    values, index = np.unique(rounded, return_inverse=True)
    if values.size <= _MAX_GROUPS:
        return index, values
    edges = np.quantile(np.log(d), np.linspace(0.0, 1.0, 7))
    index = np.clip(np.searchsorted(edges, np.log(d), side="right") - 1, 0, 5)
    used = np.unique(index)
    index = np.searchsorted(used, index)
    reps = np.array([np.exp(np.mean(np.log(d[index == g]))) for g in range(used.size)])
    return index, reps


def plot_predicted_vs_observed(fit: ScalingLawFit, n: np.ndarray, d: np.ndarray, loss: np.ndarray,
                               path: Path) -> Path:
    plt = _pyplot()
    pred = fit.predict(n, d)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    sc = ax.scatter(loss, pred, c=np.log10(d), cmap="viridis", s=18, edgecolors="none")
    lo, hi = min(loss.min(), pred.min()), max(loss.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = observed")
    fig.colorbar(sc, ax=ax, label="log10 tokens D")
    ax.set(xlabel="observed loss (nats)", ylabel="predicted loss (nats)", title="Predicted vs observed")
    ax.legend(loc="upper left")
    fig.suptitle(_title(fit), fontsize=8)
    return _save(fig, path)


def plot_loss_vs_size(fit: ScalingLawFit, n: np.ndarray, d: np.ndarray, loss: np.ndarray, path: Path) -> Path:
    plt = _pyplot()
    index, reps = token_groups(d)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, reps.size))
    grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 200)
    fig, ax = plt.subplots(figsize=(7, 5))
    for g, (tokens, color) in enumerate(zip(reps, colors)):
        sel = index == g
        ax.scatter(n[sel], loss[sel], color=color, s=18, label=f"D ~ {tokens:.3g} tokens")
        ax.plot(grid, fit.predict(grid, tokens), color=color, lw=1.2)
    ax.set_xscale("log")
    _log_axis(ax.xaxis, grid[0], grid[-1])
    ax.set(xlabel=f"model size N ({fit.n_kind or 'n'}), parameters", ylabel="loss (nats)",
           title="Loss against model size per token budget (lines: fitted law)")
    ax.legend(fontsize=7)
    fig.suptitle(_title(fit), fontsize=8)
    return _save(fig, path)


def plot_iso_loss(fit: ScalingLawFit, n: np.ndarray, d: np.ndarray, loss: np.ndarray, path: Path) -> Path:
    plt = _pyplot()
    ns = np.geomspace(n.min() / 3, n.max() * 3, 160)
    ds = np.geomspace(d.min() / 3, d.max() * 3, 160)
    grid_n, grid_d = np.meshgrid(ns, ds)
    pred = fit.predict(grid_n, grid_d)
    levels = np.quantile(pred, np.linspace(0.02, 0.98, 12))
    fig, ax = plt.subplots(figsize=(7, 5.5))
    cs = ax.contour(grid_n, grid_d, pred, levels=levels, cmap="viridis")
    ax.clabel(cs, fontsize=7, fmt="%.2f")
    sc = ax.scatter(n, d, c=loss, cmap="viridis", vmin=levels[0], vmax=levels[-1], s=18, edgecolors="k",
                    linewidths=0.3, label="runs (colour: observed loss)")
    if fit.alpha > 0 and fit.beta > 0:
        from jaxsparse.scaling.planning import compute_optimal_size

        flops = np.geomspace(6 * ns[0] * ds[0], 6 * ns[-1] * ds[-1], 50)
        best_n = np.array([compute_optimal_size(fit, c) for c in flops])
        ax.plot(best_n, flops / (6 * best_n), "r-", lw=1.2, label="compute-optimal N for C = 6 N D")
    ax.set(xscale="log", yscale="log", xlim=(ns[0], ns[-1]), ylim=(ds[0], ds[-1]),
           xlabel=f"model size N ({fit.n_kind or 'n'}), parameters", ylabel="tokens D",
           title="Iso-loss contours of the fitted law (nats)")
    _log_axis(ax.xaxis, ns[0], ns[-1])
    _log_axis(ax.yaxis, ds[0], ds[-1])
    fig.colorbar(sc, ax=ax, label="observed loss (nats)")
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(_title(fit), fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def write_plots(fit: ScalingLawFit, n: Any, d: Any, loss: Any, out_dir: str | Path) -> list[Path]:
    """Write predicted_vs_observed.png, loss_vs_size.png and iso_loss.png into out_dir; return paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, d, loss = (np.asarray(v, dtype=np.float64) for v in (n, d, loss))
    return [plot_predicted_vs_observed(fit, n, d, loss, out / "predicted_vs_observed.png"),
            plot_loss_vs_size(fit, n, d, loss, out / "loss_vs_size.png"),
            plot_iso_loss(fit, n, d, loss, out / "iso_loss.png")]
