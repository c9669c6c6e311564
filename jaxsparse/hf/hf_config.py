"""The Hugging Face `LlamaConfig` of a jaxsparse model, and the check of an HF config against ours.

Our decoder is LLaMA-2-style (pre-RMSNorm, RoPE, SwiGLU, untied head, no biases, kv heads = heads),
so a ModelConfig maps to LlamaConfig field by field; the vocabulary keeps its padding (ids the
tokenizer never produces) so the embedding and head keep their trained shapes.
"""
from __future__ import annotations

from typing import Any

from jaxsparse.errors import ConfigError
from jaxsparse.hf.files import json_type
from jaxsparse.models import ModelConfig

ARCHITECTURE = "LlamaForCausalLM"
INT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim")


def llama_config(cfg: ModelConfig, bos_id: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    """config.json contents of `cfg` (LlamaConfig keys; float32 weights)."""
    theta = float(cfg.rope_max_timescale)
    return {
        "architectures": [ARCHITECTURE], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.mlp_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": float(cfg.norm_eps),
        "rope_theta": theta, "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
        "bos_token_id": int(bos_id), "eos_token_id": int(eos_id), "pad_token_id": int(pad_id),
        "dtype": "float32",
    }


def _rope_theta(hf: dict) -> Any:
    params = hf.get("rope_parameters") or {}
    return params.get("rope_theta", hf.get("rope_theta", 10000.0))


def _rope_type(hf: dict) -> Any:
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    return params.get("rope_type", params.get("type", "default"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_types(hf: dict, where: str) -> None:
    """ConfigError naming the field when a field of config.json that is read has the wrong JSON type."""
    expected = {**dict.fromkeys(INT_FIELDS, ("an integer", lambda v: v is None or (
                    isinstance(v, int) and not isinstance(v, bool)))),
                **dict.fromkeys(("attention_bias", "mlp_bias", "tie_word_embeddings"),
                                ("true or false", lambda v: isinstance(v, bool))),
                **dict.fromkeys(("rope_parameters", "rope_scaling"),
                                ("an object or null", lambda v: v is None or isinstance(v, dict))),
                "architectures": ("a list of names", lambda v: isinstance(v, list)),
                "hidden_act": ("a name", lambda v: isinstance(v, str))}
    for key, (what, ok) in expected.items():
        if key in hf and not ok(hf[key]):
            raise ConfigError(f"{where}: {key}={hf[key]!r} is a JSON {json_type(hf[key])}; expected {what}")


def check_llama_config(hf: dict, cfg: ModelConfig, where: str) -> None:
    """Raise ConfigError (naming the field, both values) unless the HF config `hf` (config.json as a
    dict) is a LLaMA architecture whose shapes and numerics equal those of `cfg`; `where`: the
    prefix of the message (the config field and the file)."""
    _check_types(hf, where)
    archs = hf.get("architectures") or []
    if hf.get("model_type") != "llama" or ARCHITECTURE not in archs:
        raise ConfigError(f"{where}: model_type={hf.get('model_type')!r}, architectures={archs}: only "
                          f"LLaMA checkpoints (model_type 'llama', {ARCHITECTURE}) can be imported")
    heads = hf.get("num_attention_heads")
    wanted = {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.mlp_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads,
        "head_dim": cfg.head_dim, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
    }
    have = dict(hf)
    have.setdefault("num_key_value_heads", heads)
    if heads and hf.get("hidden_size"):
        have.setdefault("head_dim", hf["hidden_size"] // heads)
    have.setdefault("attention_bias", False)
    have.setdefault("mlp_bias", False)
    have.setdefault("hidden_act", "silu")
    for key, value in wanted.items():
        if have.get(key) != value:
            raise ConfigError(f"{where}: {key}={have.get(key)!r}, but the trainer config's model has {value!r} "
                              "(set model.size / model.d_model / n_layers / n_heads / vocab_size to match)")
    numerics = {"rms_norm_eps": (hf.get("rms_norm_eps", 1e-6), cfg.norm_eps),
                "rope_theta": (_rope_theta(hf), cfg.rope_max_timescale)}
    for key, (value, ours) in numerics.items():
        if not _is_number(value):
            raise ConfigError(f"{where}: {key}={value!r} is a JSON {json_type(value)}; expected a number")
        if float(value) != float(ours):
            raise ConfigError(f"{where}: {key}={value!r}, but jaxsparse models use {ours!r}")
    if _rope_type(hf) != "default":
        raise ConfigError(f"{where}: rope type {_rope_type(hf)!r}: only the default RoPE can be imported")
