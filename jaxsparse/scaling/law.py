"""The scaling law L(N, D) = E + A / N^alpha + B / D^beta and its fitted-result object.

Units throughout: N is a model size in parameters (for sparse runs the average parameter count over
training N-bar, Jin et al., ICLR 2025), D is training tokens, L is loss in nats per token, compute is FLOPs.
The law and its fitting recipe are Hoffmann et al. 2022, approach 3.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")

# Initialisation grid of the Chinchilla approach-3 recipe (Hoffmann et al. 2022, approach 3), in log space.
ALPHA_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
BETA_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
E_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)
A_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
B_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)


def init_grid() -> np.ndarray:
    """The 5 * 5 * 5 * 6 * 6 = 4,500 starts as rows (a, b, e, alpha, beta): A = e^a, B = e^b, E = e^e."""
    rows = [(a, b, e, al, be) for al, be, e, a, b in
            itertools.product(ALPHA_GRID, BETA_GRID, E_GRID, A_GRID, B_GRID)]
    return np.asarray(rows, dtype=np.float64)


def theta_to_params(theta: np.ndarray) -> dict[str, float]:
    """(a, b, e, alpha, beta) -> {"E", "A", "B", "alpha", "beta"}."""
    a, b, e, alpha, beta = (float(v) for v in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def predict_loss(params: dict[str, float] | "ScalingLawFit", n: Any, d: Any) -> np.ndarray:
    """Predicted loss (nats) for model size n (parameters) and tokens d; numpy broadcasting applies."""
    p = params.params() if isinstance(params, ScalingLawFit) else params
    n = np.asarray(n, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


@dataclasses.dataclass
class ScalingLawFit:
    """A fitted law L(N, D) = E + A/N^alpha + B/D^beta with its in-sample errors.

    E, A, B, alpha, beta: fitted parameters (E in nats). mae, rmse, max_error: absolute errors of the
    predicted against the observed loss over the fitted points, in nats. n_points: number of runs fitted.
    n_kind: which model size was used ("avg", "avg_prunable", "final", "initial", a CSV column name, or
    None when unknown). objective: the minimised Huber sum; delta: the Huber threshold (log-loss units).
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    mae: float = float("nan")
    rmse: float = float("nan")
    max_error: float = float("nan")
    n_points: int = 0
    n_kind: str | None = None
    objective: float = float("nan")
    delta: float = 1e-3
    local_optima: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def params(self) -> dict[str, float]:
        """The five parameters as a dict."""
        return {k: float(getattr(self, k)) for k in PARAM_NAMES}

    def predict(self, n: Any, d: Any) -> np.ndarray:
        """Predicted loss (nats) at model size n (parameters) and d tokens (arrays broadcast)."""
        return predict_loss(self.params(), n, d)

    def size_for_loss(self, loss: Any, d: Any) -> np.ndarray:
        """Model size (parameters) that reaches `loss` (nats) with d tokens; inf where unreachable."""
        loss = np.asarray(loss, dtype=np.float64)
        gap = loss - self.E - self.B / np.asarray(d, dtype=np.float64) ** self.beta
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, (self.A / np.where(gap > 0, gap, 1.0)) ** (1.0 / self.alpha), np.inf)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (plain floats/ints/str/None)."""
        out: dict[str, Any] = self.params()
        out.update(mae=float(self.mae), rmse=float(self.rmse), max_error=float(self.max_error),
                   n_points=int(self.n_points), n_kind=self.n_kind, objective=float(self.objective),
                   delta=float(self.delta))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScalingLawFit":
        """Inverse of to_dict; needs E, A, B, alpha, beta (other keys optional, unknown keys ignored)."""
        missing = [k for k in PARAM_NAMES if k not in data]
        if missing:
            raise ValueError(f"fit parameters missing key(s) {missing}; need {list(PARAM_NAMES)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields and v is not None}
        kwargs["n_kind"] = data.get("n_kind")
        for k in PARAM_NAMES:
            try:
                kwargs[k] = float(data[k])
            except (TypeError, ValueError):
                raise ValueError(f"fit parameter {k!r} must be a number, got {data[k]!r}") from None
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> "ScalingLawFit":
        """Read a fit JSON written by `python -m jaxsparse.scaling fit --out` (or any to_dict JSON)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"fit file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"fit file {path} is not valid JSON: {err}") from None
        if isinstance(data, dict) and "fit" in data and isinstance(data["fit"], dict):
            data = data["fit"]
        if not isinstance(data, dict):
            raise ValueError(f"fit file {path} must hold a JSON object with keys {list(PARAM_NAMES)}")
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def loss_errors(fit: ScalingLawFit, n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and max absolute error (nats) of fit's predictions against observed losses."""
    err = fit.predict(n, d) - np.asarray(loss, dtype=np.float64)
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))),
            "max_error": float(np.max(np.abs(err)))}
