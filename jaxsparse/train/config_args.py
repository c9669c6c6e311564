"""Arguments of config files, big_vision style: ``--config=configs/paper.py:size=162m,sparsity=0.8``.

A config file's ``get_config(arg)`` calls ``parse_config_args(arg, **defaults)``: the argument
string is ``key=value`` pairs separated by commas; each value is parsed with the type of its
default. Unknown keys and values that do not parse raise a ValueError naming them.
"""
from __future__ import annotations

import re
from typing import Any

import ml_collections

CHINCHILLA_TOKENS_PER_PARAM = 20.0


def parse_config_args(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parse 'k=v,k=v' over `defaults` (whose values fix each key's type)."""
    out = dict(defaults)
    if arg:
        for item in arg.split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ValueError(f"config argument {item!r} is not key=value; "
                                 f"known keys: {', '.join(sorted(defaults))}")
            key, value = (x.strip() for x in item.split("=", 1))
            if key not in defaults:
                raise ValueError(f"config argument {key!r} is unknown; known keys: "
                                 f"{', '.join(sorted(defaults))}")
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
        raise ValueError(f"config argument {key}={value!r} does not parse as "
                         f"{type(default).__name__}") from None
    return value


def parse_budget(value: str) -> float:
    """Tokens per parameter: '10x' (x Chinchilla-optimal, 20 tokens/param) -> 200.0; '150' -> 150."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(x?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"config argument budget={value!r}: expected a positive multiple of "
                         "Chinchilla-optimal such as '10x' (= 200 tokens/param) or a number of "
                         "tokens per parameter such as '200'")
    number = float(match.group(1))
    return number * CHINCHILLA_TOKENS_PER_PARAM if match.group(2) else number
