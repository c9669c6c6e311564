"""jaxsparse.models: the LLaMA-style decoder with pruning masks, its size ladder, accounting and sharding.

Public API:
  ModelConfig, get_config(name, **overrides), SIZES         -- model_config.py
  Transformer(config); MASKS = "masks" (the mask collection) -- transformer.py, layers.py
  param_counts(config) -> ParamCounts (measured), flops_per_token(config, seq_len, density=1.0),
  attention_flops_per_token(config, seq_len)                -- accounting.py
  MESH_AXES, DEFAULT_RULES, make_mesh, batch_sharding,
  variable_shardings, init_variables                        -- sharding.py
  build(config), decoder(config, cache_len), register(name, decoder=), families()
                                                            -- registry.py (the model seam)
`python -m jaxsparse.models SIZE` prints a size's accounting as JSON (see __main__.py).
"""
from .accounting import ParamCounts, attention_flops_per_token, flops_per_token, param_counts
from .model_config import SIZES, ModelConfig, get_config
from .layers import MASKS
from .sharding import (DEFAULT_RULES, MESH_AXES, batch_sharding, init_variables, make_mesh,
                       variable_shardings)
from .registry import DEFAULT_FAMILY, build, decoder, families, register
from .transformer import Transformer
from .decode import DecodeTransformer

register(DEFAULT_FAMILY, decoder=DecodeTransformer)(Transformer)  # LLaMA-style decoder (paper section 4)

__all__ = [
    "ModelConfig", "get_config", "SIZES", "Transformer", "param_counts", "flops_per_token",
    "attention_flops_per_token", "MESH_AXES", "DEFAULT_RULES", "make_mesh", "batch_sharding",
    "variable_shardings", "init_variables", "MASKS", "build", "decoder", "register", "families", "DEFAULT_FAMILY",
    "ParamCounts",
]
