"""The files of a Hugging Face model folder, read as untrusted input (`model.init_from="hf:DIR"`).

Every fault of a file (unreadable, not JSON, the wrong JSON type, a damaged or truncated
safetensors file, an index naming a missing or non-safetensors shard, a tensor that is not
floating point or not finite) is a ConfigError naming the file and the problem: bad input, exit 2.
`where` is the prefix of every message (the config field and its value).
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jaxsparse.errors import ConfigError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names of the importable dtypes


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type: "array" for a list, "string" for a str, ..."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_json_object(path: str, where: str) -> dict:
    """The JSON object (a dict) in the file `path`; ConfigError when it cannot be read or is not one."""
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{where}: cannot read {name} ({err})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {name} holds a JSON {json_type(value)}; expected an object "
                          "({...}) as transformers writes it")
    return value


def _shard_path(folder: str, shard: Any, where: str) -> str:
    """The path of a shard named by the index; a plain .safetensors file name inside `folder`."""
    if not isinstance(shard, str) or not shard or os.path.basename(shard) != shard or shard in (".", ".."):
        raise ConfigError(f"{where}: {INDEX} names the shard {shard!r}; expected a file name in the folder")
    if not shard.endswith(".safetensors"):
        raise ConfigError(f"{where}: {INDEX} names the shard {shard!r}: only safetensors shards can be "
                          "imported (convert .bin/.pt checkpoints with transformers' save_pretrained)")
    path = os.path.join(folder, shard)
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: {INDEX} names the shard {shard}, which does not exist in the folder")
    return path


def weight_files(folder: str, where: str) -> dict[str, str]:
    """Tensor name -> the safetensors file holding it, from the index or the single file; each file's
    header is read (`tensor_names`) so that a damaged file is refused here."""
    index, single = os.path.join(folder, INDEX), os.path.join(folder, SINGLE)
    if os.path.exists(index):
        weight_map = read_json_object(index, where).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConfigError(f"{where}: {INDEX} has no \"weight_map\" object (tensor name -> shard file)")
        files = {name: _shard_path(folder, shard, where) for name, shard in weight_map.items()}
        for path in sorted(set(files.values())):
            tensor_names(path, where)
        return files
    if os.path.exists(single):
        return {name: single for name in tensor_names(single, where)}
    raise ConfigError(f"{where}: no {SINGLE} (or {INDEX}); only safetensors checkpoints can be imported")


def _open(path: str, where: str, framework: str = "numpy") -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(path, framework=framework)
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{where}: {os.path.basename(path)} is not a readable safetensors file "
                          f"({err})") from None


def tensor_names(path: str, where: str) -> list[str]:
    """The tensor names in the header of the safetensors file `path`."""
    with _open(path, where) as f:
        return list(f.keys())


def header(path: str, name: str, where: str) -> tuple[tuple[int, ...], str]:
    """(shape, safetensors dtype such as "F32") of tensor `name` of `path`, from the header."""
    with _open(path, where) as f:
        if name not in f.keys():
            raise ConfigError(f"{where}: the index places tensor {name} in {os.path.basename(path)}, "
                              "which does not hold it")
        piece = f.get_slice(name)
        return tuple(piece.get_shape()), str(piece.get_dtype())


def check_dtype(path: str, name: str, dtype: str, where: str) -> None:
    if dtype not in FLOAT_DTYPES:
        raise ConfigError(f"{where}: tensor {name} in {os.path.basename(path)} has dtype {dtype}; only "
                          f"floating-point weights ({', '.join(FLOAT_DTYPES)}) can be imported")


def read_float32(path: str, name: str, where: str) -> np.ndarray:
    """Tensor `name` of `path` as float32 numpy, refused unless every value is finite
    (bfloat16/float16 are read through torch)."""
    from safetensors import SafetensorError

    try:
        with _open(path, where) as f:
            try:
                value = np.asarray(f.get_tensor(name), np.float32)
            except (TypeError, ValueError):  # bfloat16: numpy has no such dtype
                value = None
        if value is None:
            import torch

            with _open(path, where, "pt") as f:
                value = f.get_tensor(name).to(torch.float32).numpy()
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{where}: cannot read tensor {name} of {os.path.basename(path)} ({err})") from None
    bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
    if bad:
        raise ConfigError(f"{where}: tensor {name} in {os.path.basename(path)} has {bad} non-finite "
                          "value(s) (NaN or Inf; float32 after conversion); only finite weights can be imported")
    return value
