"""Validate every run of a sweep in-process, exactly as the trainer's command line would read it.

`load_config(run)` builds the ConfigDict through ml-collections' own flag parser (the same
`--config=FILE[:args] --config.key=value` semantics as ``python -m jaxsparse.train``), after
checking that every override key names a value (`config_keys.key_problem`). `plan_runs(runs)`
validates all runs and returns their plans (`jaxsparse.train.Plan`, from the trainer's own
`prepare`) before anything is launched.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import ml_collections

from jaxsparse.config_keys import key_problem, parse_config_flags
from jaxsparse.errors import ConfigError
from jaxsparse.sweep.spec import RunSpec, SweepError, resolve_config_file, split_config

if TYPE_CHECKING:
    from jaxsparse.train.resolve.plan import Plan


def _check_key(base: ml_collections.ConfigDict, key: str, run: RunSpec) -> None:
    problem = key_problem(base, key, value=True)
    if problem:
        raise SweepError(f"run {run.name!r}: override key {key} is not a key of "
                         f"{run.config_file}: {problem}")


def load_config(run: RunSpec) -> ml_collections.ConfigDict:
    """The run's resolved training config (file + args + overrides). Raises SweepError."""
    path, arg = split_config(run.config)
    config_arg = resolve_config_file(path) + (f":{arg}" if arg is not None else "")
    try:
        base = parse_config_flags(["sweep", f"--config={config_arg}"])
    except Exception as err:  # the config file's own errors (bad args) come in many types
        raise SweepError(f"run {run.name!r}: config {run.config!r} does not load: {err}") from err
    for key in run.overrides:
        _check_key(base, key, run)
    try:
        return parse_config_flags(["sweep", f"--config={config_arg}", *run.override_flags()])
    except Exception as err:
        raise SweepError(f"run {run.name!r}: overrides {run.override_flags()} are not "
                         f"accepted: {err}") from err


def plan_run(run: RunSpec, local_devices: bool = True) -> Plan:
    """Validate one run and return its plan.

    local_devices: also check the mesh and batch against this machine's devices (as the
    trainer does); False for runs that go to another machine (TPU), where only the config,
    vocabulary and schedule are checked and `plan.mesh` is empty.
    """
    from jaxsparse.train import prepare

    config = load_config(run)
    try:
        return prepare(config, local_devices=local_devices).plan
    except ConfigError as err:
        raise SweepError(f"run {run.name!r} ({run.config} "
                         f"{' '.join(run.override_flags())}): {err}") from err


def plan_runs(runs: list[RunSpec], local_devices: bool = True) -> dict[str, Plan]:
    """Plans of all runs, by name; the first invalid run raises SweepError (nothing launched)."""
    return {run.name: plan_run(run, local_devices) for run in runs}
