"""jaxsparse params <-> Hugging Face LLaMA (`LlamaForCausalLM`) tensors, both ways, exactly.

What differs between the two and how it is converted:
- Kernel layout: ours are [fan_in, fan_out] (`y = x @ W`); torch Linear weights are [out, in]: transposed.
- Attention temperature: our query kernel folds in 1/sqrt(head_dim) (scores are q.k, unscaled); HF
  multiplies q.k by head_dim^-0.5, so q_proj = q.kernel^T * sqrt(head_dim). For every named size
  head_dim is a power of 4 (16, 64, 256), sqrt(head_dim) a power of 2, and the round trip is bitwise.
- RoPE: ours rotates the pairs (x[i], x[i + K/2]) at angle pos / theta^(2i/K), which is HF's
  `rotate_half` convention with inv_freq = theta^(-2i/K): no permutation of q/k rows is needed.
- `nn.scan`-stacked kernels ([n_layers, ...] under "layers") are split into per-layer tensors.
- Pruning masks are applied on export: every pruned weight is exactly 0.0.
Everything is float32 numpy on the host. Embedding [V, D] and norms need no change.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from jaxsparse.errors import ConfigError
from jaxsparse.models import DEFAULT_FAMILY, ModelConfig

# (our block-relative path, HF name relative to model.layers.{i}, is a linear kernel)
LAYER_TENSORS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("attn_norm", "scale"), "input_layernorm.weight", False),
    (("attn", "q", "kernel"), "self_attn.q_proj.weight", True),
    (("attn", "k", "kernel"), "self_attn.k_proj.weight", True),
    (("attn", "v", "kernel"), "self_attn.v_proj.weight", True),
    (("attn", "o", "kernel"), "self_attn.o_proj.weight", True),
    (("mlp_norm", "scale"), "post_attention_layernorm.weight", False),
    (("mlp", "wi_0", "kernel"), "mlp.gate_proj.weight", True),
    (("mlp", "wi_1", "kernel"), "mlp.up_proj.weight", True),
    (("mlp", "wo", "kernel"), "mlp.down_proj.weight", True),
)
# (our top-level path, HF name, transposed)
TOP_TENSORS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("embed", "embedding"), "model.embed_tokens.weight", False),
    (("final_norm", "scale"), "model.norm.weight", False),
    (("lm_head", "kernel"), "lm_head.weight", True),
)


def require_llama(cfg: ModelConfig, where: str) -> None:
    """ConfigError unless `cfg` is the LLaMA family's: Hugging Face import and export map only its
    tensors (`LAYER_TENSORS`, `TOP_TENSORS`)."""
    if cfg.family != DEFAULT_FAMILY:
        raise ConfigError(f"{where}: model.family={cfg.family!r} has no Hugging Face LLaMA mapping; "
                          f"import and export support model.family={DEFAULT_FAMILY!r} only")


def get_path(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if tree is None or key not in tree:
            return None
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def query_scale(cfg: ModelConfig) -> float:
    """HF q_proj = our q kernel^T times this (see the module docstring)."""
    return math.sqrt(cfg.head_dim)


def block_leaf(cfg: ModelConfig, tree: Any, i: int, path: tuple[str, ...]) -> Optional[np.ndarray]:
    """The block-i leaf at `path` (block-relative) of params or masks, scanned or not."""
    if cfg.scan_layers:
        leaf = get_path(tree, ("layers",) + path)
        return None if leaf is None else np.asarray(leaf)[i]
    leaf = get_path(tree, (f"layers_{i}",) + path)
    return None if leaf is None else np.asarray(leaf)


def hf_tensor_names(cfg: ModelConfig) -> list[str]:
    """Every tensor name of the HF checkpoint of `cfg`, in a stable order."""
    names = [TOP_TENSORS[0][1]]
    for i in range(cfg.n_layers):
        names += [f"model.layers.{i}.{name}" for _, name, _ in LAYER_TENSORS]
    return names + [name for _, name, _ in TOP_TENSORS[1:]]


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape for a model of `cfg` (torch layouts)."""
    d, f, qkv, v = cfg.d_model, cfg.mlp_dim, cfg.qkv_dim, cfg.vocab_size
    layer = {"input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
             "self_attn.q_proj.weight": (qkv, d), "self_attn.k_proj.weight": (qkv, d),
             "self_attn.v_proj.weight": (qkv, d), "self_attn.o_proj.weight": (d, qkv),
             "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f)}
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), "lm_head.weight": (v, d)}
    for i in range(cfg.n_layers):
        shapes.update({f"model.layers.{i}.{k}": s for k, s in layer.items()})
    return shapes


def to_hf(cfg: ModelConfig, params: Any, masks: Any) -> dict[str, np.ndarray]:
    """HF tensors (float32, C-contiguous, masks applied) from our params and masks ({} = dense)."""
    masks = masks or {}

    def convert(value: Any, mask: Any, transpose: bool, scale: float = 1.0) -> np.ndarray:
        w = np.asarray(value, np.float32)
        if mask is not None:
            w = np.where(np.asarray(mask), w, np.float32(0.0))
        if scale != 1.0:
            w = w * np.float32(scale)
        return np.ascontiguousarray(w.T if transpose else w)

    out = {}
    for path, name, transposed in TOP_TENSORS:
        out[name] = convert(get_path(params, path), get_path(masks, path), transposed)
    for i in range(cfg.n_layers):
        for path, name, linear in LAYER_TENSORS:
            scale = query_scale(cfg) if path[1:2] == ("q",) else 1.0
            out[f"model.layers.{i}.{name}"] = convert(block_leaf(cfg, params, i, path), block_leaf(cfg, masks, i, path),
                                                      linear, scale)
    return out


def from_hf(cfg: ModelConfig, tensors: dict[str, np.ndarray]) -> dict:
    """Our params tree (float32 numpy, scanned or not per `cfg`) from HF tensors of checked shapes."""
    params: dict = {}
    for path, name, transposed in TOP_TENSORS:
        w = np.asarray(tensors[name], np.float32)
        _set(params, path, np.ascontiguousarray(w.T if transposed else w))
    per_layer: dict[tuple[str, ...], list[np.ndarray]] = {}
    for i in range(cfg.n_layers):
        for path, name, linear in LAYER_TENSORS:
            w = np.asarray(tensors[f"model.layers.{i}.{name}"], np.float32)
            if linear:
                w = np.ascontiguousarray(w.T)
            if path[1:2] == ("q",):
                w = w / np.float32(query_scale(cfg))
            per_layer.setdefault(path, []).append(w)
            if not cfg.scan_layers:
                _set(params, (f"layers_{i}",) + path, w)
    if cfg.scan_layers:
        for path, ws in per_layer.items():
            _set(params, ("layers",) + path, np.stack(ws))
    return params
