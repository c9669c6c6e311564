"""Arguments of config files, big_vision style: ``--config=configs/paper.py:size=162m,sparsity=0.8``.

A config file's ``get_config(arg)`` calls ``parse_config_args(arg, **defaults)``: the argument
string is ``key=value`` pairs separated by commas; each value is parsed with the type of its
default. Unknown keys and values that do not parse raise a ConfigError naming them.

`split_config` and `resolve_config_file` are the one reading of ``FILE.py[:args]`` (the trainer's
``--config`` and the sweep files' ``config`` entries): a relative FILE is looked up in the
current directory, then in the project root.
"""
from __future__ import annotations

import os
import re
from typing import Any

import ml_collections

from jaxsparse.errors import ConfigError, unknown_key_message

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

CHINCHILLA_TOKENS_PER_PARAM = 20.0


def parse_config_args(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parse 'k=v,k=v' over `defaults` (whose values fix each key's type)."""
    out = dict(defaults)
    if arg:
        for item in arg.split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ConfigError(f"config argument {item.strip()} is not key=value; "
                                  f"known keys: {', '.join(sorted(defaults))}")
            key, value = (x.strip() for x in item.split("=", 1))
            if key not in defaults:
                raise ConfigError("config argument: " + unknown_key_message("", key, defaults))
            out[key] = _parse_like(key, value, defaults[key])
    return ml_collections.ConfigDict(out)


def _parse_like(key: str, value: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"config argument {key}={value} does not parse as "
                          f"{type(default).__name__}") from None
    return value


def parse_budget(value: str) -> float:
    """Tokens per parameter: '10x' (x Chinchilla-optimal, 20 tokens/param) -> 200.0; '150' -> 150."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(x?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"config argument budget={value}: expected a positive multiple of "
                          "Chinchilla-optimal such as '10x' (= 200 tokens/param) or a number of "
                          "tokens per parameter such as '200'")
    number = float(match.group(1))
    return number * CHINCHILLA_TOKENS_PER_PARAM if match.group(2) else number


def split_config(config: str) -> tuple[str, str | None]:
    """'configs/paper.py:size=58m' -> ('configs/paper.py', 'size=58m'); no args -> (path, None)."""
    match = re.match(r"^(.*?\.py)(?::(.*))?$", config)
    if not match:
        raise ConfigError(f"config {config} is not allowed: expected 'path/to/file.py[:args]'")
    return match.group(1), match.group(2)


def resolve_config_file(path: str) -> str:
    """An existing config file: `path` as given, else relative to the project root."""
    places = dict.fromkeys([os.getcwd(), PROJECT_ROOT])
    for candidate in (path, os.path.join(PROJECT_ROOT, path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise ConfigError(f"config file {path} does not exist (looked in {' and '.join(places)})")
