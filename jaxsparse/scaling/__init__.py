"""Scaling-law toolkit: fit L(N, D) = E + A/N^alpha + B/D^beta to runs, with N the average parameter count
over training (N-bar, Jin et al., ICLR 2025); uncertainty, model-size comparison, plots, compute planning.

Imports only numpy and scipy (matplotlib lazily, for plots); from jaxsparse only the exit codes of
jaxsparse.errors (in the command line).
Units: N in parameters, D in tokens, compute in FLOPs, loss in nats per token.
"""
from jaxsparse.scaling.uncertainty import BootstrapResult, LeaveOneOutResult, bootstrap, leave_one_out
from jaxsparse.scaling.compare import compare_sizes
from jaxsparse.scaling.fitting import DuplicateRunsWarning, fit, fit_reference
from jaxsparse.scaling.io import SIZE_KINDS, Runs, load_runs
from jaxsparse.scaling.law import ScalingLawFit, init_grid, predict_loss
from jaxsparse.scaling.planning import ComputePlan, average_density, compute_optimal_size, plan

__all__ = [
    "BootstrapResult", "ComputePlan", "DuplicateRunsWarning", "LeaveOneOutResult", "Runs", "SIZE_KINDS",
    "ScalingLawFit", "average_density",
    "bootstrap", "compare_sizes", "compute_optimal_size", "fit", "fit_reference", "init_grid", "leave_one_out",
    "load_runs", "plan", "predict_loss",
]
