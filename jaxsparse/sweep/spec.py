"""Sweep definition files: load them, check their shape, and turn runs into trainer commands.

A sweep file is Python (ml-collections style) that defines ``get_sweep(arg=None) -> list[dict]``
(``arg`` is the text after ``:`` in ``SWEEP_FILE[:arg]``). Each dict is one run:

  name       str, unique within the sweep (letters, digits, ``._-``)
  config     ``configs/<file>.py[:args]``: the trainer's ``--config`` value; a relative path is
             resolved against the current directory, then against the project root
  overrides  optional dict ``{"train.steps": 100, ...}``: the trainer's ``--config.<key>=<value>``
  workdir    optional, relative to the sweep root (default: the name); unique within the sweep
  tags       optional dict of str/int/float: carried into ``--list`` and the collected CSV

`jaxsparse.sweep.check` validates the configs (through the trainer's own `prepare`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shlex
import sys
from typing import Any

from jaxsparse.errors import ConfigError, user_code_error
from jaxsparse.train.resolve.overrides import PROJECT_ROOT, resolve_config_file, split_config

__all__ = ["PROJECT_ROOT", "RunSpec", "SweepError", "load_module", "load_sweep", "resolve_config_file", "split_config"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_RUN_KEYS = ("name", "config", "overrides", "workdir", "tags")


class SweepError(ConfigError):
    """Bad sweep input (file, runs, CLI arguments): reported as ``error: ...``, exit status 2."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run as the sweep file specifies it (see the module docstring for the fields);
    the trainer resolves it into a `jaxsparse.train.Run`."""

    name: str
    config: str
    overrides: dict[str, Any]
    workdir: str
    tags: dict[str, Any]

    @property
    def config_file(self) -> str:
        """The config file part of `config` (before the first ':' that follows '.py')."""
        return split_config(self.config)[0]

    def override_flags(self) -> list[str]:
        """``--config.<key>=<value>`` for every override, in the order given."""
        return [f"--config.{key}={format_value(value)}" for key, value in self.overrides.items()]

    def train_args(self, workdir: str, config: str | None = None) -> list[str]:
        """The trainer's arguments (after ``python -m jaxsparse.train``) for `workdir`."""
        return [f"--config={config or self.config}", f"--workdir={workdir}",
                *self.override_flags()]

    def as_dict(self, root: str) -> dict[str, Any]:
        workdir = os.path.join(root, self.workdir)
        return {"name": self.name, "config": self.config, "overrides": dict(self.overrides),
                "workdir": workdir, "tags": dict(self.tags),
                "command": shlex.join(["python3", "-m", "jaxsparse.train",
                                       *self.train_args(workdir)])}


def format_value(value: Any) -> str:
    """A Python override value as the trainer's flag parser reads it (bools as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    raise SweepError(f"override value {value!r} ({type(value).__name__}) is not allowed: "
                     "expected bool, int, float or str")


def _check_run(index: int, raw: Any) -> RunSpec:
    where = f"run #{index}"
    if not isinstance(raw, dict):
        raise SweepError(f"{where} is a {type(raw).__name__}, expected a dict with keys "
                         f"{', '.join(_RUN_KEYS)}")
    unknown = sorted(set(raw) - set(_RUN_KEYS))
    if unknown:
        raise SweepError(f"{where} has unknown keys {unknown}; allowed: {', '.join(_RUN_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SweepError(f"{where}: name={name!r} is not allowed: expected a non-empty string of "
                         "letters, digits, '.', '_', '-'")
    where = f"run {name!r}"
    config = raw.get("config")
    if not isinstance(config, str) or not config:
        raise SweepError(f"{where}: config={config!r} is not allowed: expected "
                         "'configs/<file>.py[:args]'")
    split_config(config)
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise SweepError(f"{where}: overrides={overrides!r} is not allowed: expected a dict")
    for key, value in overrides.items():
        if not isinstance(key, str) or not re.match(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$",
                                                    key):
            raise SweepError(f"{where}: override key {key!r} is not allowed: expected a dotted "
                             "config key such as 'train.steps'")
        try:
            format_value(value)
        except SweepError as err:
            raise SweepError(f"{where}: override {key}: {err}") from None
    workdir = raw.get("workdir", name)
    if (not isinstance(workdir, str) or not workdir or os.path.isabs(workdir)
            or ".." in workdir.split("/")):
        raise SweepError(f"{where}: workdir={workdir!r} is not allowed: expected a relative path "
                         "inside the sweep root (no '..')")
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in tags.items()):
        raise SweepError(f"{where}: tags={tags!r} is not allowed: expected a dict of str -> "
                         "str/int/float")
    return RunSpec(name, config, dict(overrides), os.path.normpath(workdir), dict(tags))


def check_runs(raw_runs: Any, source: str) -> list[RunSpec]:
    """Check a sweep's run list: at least one run, every run well formed, names and workdirs
    unique. Raises SweepError naming the run and the field."""
    if not isinstance(raw_runs, (list, tuple)):
        raise SweepError(f"{source}: get_sweep() returned {type(raw_runs).__name__}, expected a "
                         "list of run dicts")
    if not raw_runs:
        raise SweepError(f"{source} defines no runs: get_sweep() returned an empty list")
    runs = [_check_run(i, raw) for i, raw in enumerate(raw_runs)]
    for field in ("name", "workdir"):
        seen: dict[str, str] = {}
        for run in runs:
            value = getattr(run, field)
            if value in seen:
                raise SweepError(f"{source}: runs {seen[value]!r} and {run.name!r} have the same "
                                 f"{field} {value!r}; every run needs its own")
            seen[value] = run.name
    return runs


def sweep_name(spec: str) -> str:
    """The sweep's name: its file name without '.py' (used for the default root)."""
    return os.path.splitext(os.path.basename(split_config(spec)[0]))[0]


def load_module(path: str) -> Any:
    """Import the sweep file at `path` (as given, else relative to the project root) as a module;
    SweepError if it is missing or its code fails (a syntax error, an exception)."""
    if not os.path.isfile(path):
        alt = os.path.join(PROJECT_ROOT, path)
        if not os.path.isfile(alt):
            raise SweepError(f"sweep file {path!r} does not exist")
        path = alt
    module_name = f"_jaxsparse_sweep_{abs(hash(os.path.abspath(path)))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - a user's file can raise anything: bad input
        raise SweepError(f"sweep file {path!r}: {user_code_error(err)}") from None
    finally:
        sys.modules.pop(module_name, None)
    return module


def load_sweep(spec: str) -> list[RunSpec]:
    """Load ``SWEEP_FILE[:arg]``: import the file, call get_sweep(arg), check the runs."""
    path, arg = split_config(spec)
    module = load_module(path)
    path = module.__file__
    if not callable(getattr(module, "get_sweep", None)):
        raise SweepError(f"sweep file {path!r} defines no get_sweep(arg=None) function")
    try:
        raw = module.get_sweep(arg) if arg is not None else module.get_sweep()
    except Exception as err:  # noqa: BLE001 - a user's function can raise anything: bad input
        call = f"get_sweep({arg!r})" if arg is not None else "get_sweep()"
        raise SweepError(f"sweep file {path!r}: {call} failed: {user_code_error(err)}") from None
    return check_runs(raw, os.path.basename(path))
