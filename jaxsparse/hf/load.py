"""Import a Hugging Face LLaMA checkpoint as the trainer's initial params (`model.init_from="hf:DIR"`).

`load_params(spec, model_cfg)` checks DIR's config.json (LLaMA architecture, the same sizes and
numerics as the trainer's model) and every tensor's shape (read from the safetensors headers) before
reading any weights, then returns our params tree (float32 numpy; see `convert.from_hf`). A single
model.safetensors or a sharded one (model.safetensors.index.json) is read; tensors the model does not
use (e.g. rotary inv_freq buffers) are ignored; a tied LM head (tie_word_embeddings) is untied.
`with_params(state, tx, params, shardings)` puts the params into a fresh TrainState, placed by the
training shardings, and rebuilds the optimizer state from them (so pruning masks start from them).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import numpy as np

from jaxsparse.errors import ConfigError
from jaxsparse.hf.config import check_llama_config
from jaxsparse.hf.convert import expected_hf_shapes, from_hf
from jaxsparse.models import ModelConfig

PREFIX = "hf:"


def parse_init_from(value: str) -> Optional[str]:
    """The folder of a `model.init_from` value: "" -> None; "hf:/path" -> "/path"; else ConfigError."""
    if not value:
        return None
    if not isinstance(value, str) or not value.startswith(PREFIX) or not value[len(PREFIX):]:
        raise ConfigError(f"config.model.init_from={value!r} is not allowed: expected '' (random init) or "
                          "'hf:/path/to/folder' (a Hugging Face LLaMA checkpoint)")
    return os.path.expanduser(value[len(PREFIX):])


def _weight_files(folder: str, where: str) -> dict[str, tuple[str, str]]:
    """Tensor name -> (safetensors file, name in that file) of the checkpoint in `folder`."""
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        return {name: (os.path.join(folder, file), name) for name, file in weight_map.items()}
    if os.path.exists(single):
        from safetensors import safe_open

        with safe_open(single, framework="numpy") as f:
            return {name: (single, name) for name in f.keys()}
    raise ConfigError(f"{where}: no model.safetensors (or model.safetensors.index.json); only safetensors "
                      "checkpoints can be imported")


def _shape_of(path: str, name: str) -> tuple[int, ...]:
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        return tuple(f.get_slice(name).get_shape())


def check_folder(folder: str, cfg: ModelConfig) -> tuple[dict, dict[str, tuple[str, str]]]:
    """(config.json, tensor -> file) after checking architecture, sizes and every shape (ConfigError)."""
    where = f"config.model.init_from=hf:{folder}"
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(f"{where}: {config_path} does not exist (expected a Hugging Face model folder)")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf_config = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{where}: cannot read config.json ({err})") from None
    check_llama_config(hf_config, cfg, where)
    expected = expected_hf_shapes(cfg)
    files = _weight_files(folder, where)
    if "lm_head.weight" not in files and hf_config.get("tie_word_embeddings") and \
            "model.embed_tokens.weight" in files:
        files["lm_head.weight"] = files["model.embed_tokens.weight"]
    for name, shape in expected.items():
        if name not in files:
            raise ConfigError(f"{where}: tensor {name} is missing from the checkpoint")
        have = _shape_of(*files[name])
        if have != shape:
            raise ConfigError(f"{where}: tensor {name} has shape {list(have)}, but the trainer config's model "
                              f"needs {list(shape)}")
    return hf_config, files


def _read(path: str, name: str) -> np.ndarray:
    """One tensor as float32 numpy (bfloat16/float16 checkpoints are read through torch)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return np.asarray(f.get_tensor(name), np.float32)
    except (TypeError, ValueError):
        import torch

        with safe_open(path, framework="pt") as f:
            return f.get_tensor(name).to(torch.float32).numpy()


def load_params(spec: str, cfg: ModelConfig) -> dict:
    """Our params tree from the HF checkpoint of `spec` ("hf:DIR"), checked against `cfg` first."""
    folder = parse_init_from(spec)
    if folder is None:
        raise ConfigError("load_params: an 'hf:/path' spec is required")
    _, files = check_folder(folder, cfg)
    tensors = {}
    for name in expected_hf_shapes(cfg):
        tensors[name] = _read(*files[name])
    return from_hf(cfg, tensors)


def with_params(state: Any, tx: Any, params: Any, shardings: Any) -> Any:
    """`state` with `params` (host arrays, our tree) in the dtype and sharding of state.params, and the
    optimizer state rebuilt from them; every leaf placed by `shardings` (a TrainState of NamedShardings)."""
    placed = jax.tree.map(lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding),
                          params, state.params)
    return jax.jit(lambda p: state.replace(params=p, opt_state=tx.init(p)), out_shardings=shardings)(placed)
