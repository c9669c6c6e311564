"""Import a Hugging Face LLaMA checkpoint as the trainer's initial params (`model.init_from="hf:DIR"`).

`load_params(spec, model_cfg)` checks DIR's config.json (LLaMA architecture, the same sizes and
numerics as the trainer's model) and every tensor's shape and dtype (floating point, read from the
safetensors headers: `check_headers`) before reading any weights, and each weight's values as it reads
them (finite); the trainer runs `check_folder`, the same checks with every value read, before any
compute. It then returns our params tree (float32 numpy; see
`convert.from_hf`). Every fault of DIR's files is bad input (ConfigError, `hf.files`). A single
model.safetensors or a sharded one (model.safetensors.index.json) is read; tensors the model does not
use (e.g. rotary inv_freq buffers) are ignored; a tied LM head (tie_word_embeddings) is untied.
`with_params(state, tx, params, shardings)` puts the params into a fresh TrainState, placed by the
training shardings, and rebuilds the optimizer state from them (so pruning masks start from them).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np

from jaxsparse.errors import ConfigError
from jaxsparse.hf import files
from jaxsparse.hf.hf_config import check_llama_config
from jaxsparse.hf.convert import expected_hf_shapes, from_hf, require_llama
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


def check_folder(folder: str, cfg: ModelConfig) -> tuple[dict, dict[str, str]]:
    """(config.json, tensor -> safetensors file) after `check_headers` and every tensor's values
    (finite); ConfigError naming the file, the tensor and the problem."""
    hf_config, found = check_headers(folder, cfg)
    where = f"config.model.init_from=hf:{folder}"
    for name, path in found.items():  # the values, once every header is known to be right
        files.read_float32(path, name, where)
    return hf_config, found


def check_headers(folder: str, cfg: ModelConfig) -> tuple[dict, dict[str, str]]:
    """(config.json, tensor -> safetensors file) after checking the files (`hf.files`), the
    architecture and sizes, and every tensor's shape and dtype (floating point), reading no values;
    ConfigError naming the file, the tensor and the problem."""
    where = f"config.model.init_from=hf:{folder}"
    require_llama(cfg, where)
    expected = expected_hf_shapes(cfg)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(f"{where}: {config_path} does not exist (expected a Hugging Face model folder)")
    hf_config = files.read_json_object(config_path, where)
    check_llama_config(hf_config, cfg, f"{where}: config.json")
    found = files.weight_files(folder, where)
    if "lm_head.weight" not in found and hf_config.get("tie_word_embeddings") is True and \
            "model.embed_tokens.weight" in found:
        found["lm_head.weight"] = found["model.embed_tokens.weight"]
    for name, shape in expected.items():
        if name not in found:
            raise ConfigError(f"{where}: tensor {name} is missing from the checkpoint")
        have, dtype = files.header(found[name], name, where)
        if have != shape:
            raise ConfigError(f"{where}: tensor {name} has shape {list(have)}, but the trainer config's model "
                              f"needs {list(shape)}")
        files.check_dtype(found[name], name, dtype, where)
    return hf_config, {name: found[name] for name in expected}


def load_params(spec: str, cfg: ModelConfig) -> dict:
    """Our params tree from the HF checkpoint of `spec` ("hf:DIR"), checked against `cfg` first."""
    folder = parse_init_from(spec)
    if folder is None:
        raise ConfigError("load_params: an 'hf:/path' spec is required")
    where = f"config.model.init_from=hf:{folder}"
    _, found = check_headers(folder, cfg)  # read_float32 checks each value as it reads it
    return from_hf(cfg, {name: files.read_float32(path, name, where) for name, path in found.items()})


def with_params(state: Any, tx: Any, params: Any, shardings: Any) -> Any:
    """`state` with `params` (host arrays, our tree) in the dtype and sharding of state.params, and the
    optimizer state rebuilt from them; every leaf placed by `shardings` (a TrainState of NamedShardings)."""
    placed = jax.tree.map(lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding),
                          params, state.params)
    return jax.jit(lambda p: state.replace(params=p, opt_state=tx.init(p)), out_shardings=shardings)(placed)
