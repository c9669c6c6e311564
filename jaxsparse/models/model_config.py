"""Model configuration and the named size ladder.

`ModelConfig` is the single source of truth for a model's shape; `get_config(name)` returns one of the
named sizes. The paper's sizes ("58m", "162m", "468m", "1b") follow paper.md section 4 (LLaMA-2-style,
vocabulary 32,000); "test" and "demo" are small sizes for CPU (tests and the default demo run).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
# "reference": einsum scores + softmax (the [B, H, S, S] scores held); "dot_product":
# jax.nn.dot_product_attention (XLA; cuDNN on GPU); "flash": the Pallas TPU flash-attention kernel
# (needs a TPU mesh; see models/attention.py).
ATTENTION_IMPLS: tuple[str, ...] = ("reference", "dot_product", "flash")
# What a rematerialised block keeps for the backward pass: "full" = only its input (recompute all),
# "save_dots" = also matmul outputs without batch dimensions (less recompute, more memory),
# "none" = no remat (keep everything).
REMAT_POLICIES: tuple[str, ...] = ("full", "save_dots", "none")

# name -> keyword arguments of ModelConfig. head_dim / mlp_dim default to d_model // n_heads and 4 * d_model.
_PRESETS: dict[str, dict[str, Any]] = {
    # Compiles in seconds on a CPU: for unit tests.
    "test": dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=64),
    # A few million parameters (about 5.2M at vocab 2048); the vocab is normally overridden by the tokenizer.
    "demo": dict(vocab_size=2048, d_model=256, n_layers=4, n_heads=4, max_seq_len=256),
    # The paper's ladder (paper.md section 4): bf16 activations, f32 weights, sequence length 2048.
    "58m": dict(vocab_size=32000, d_model=512, n_layers=6, n_heads=8, max_seq_len=2048,
                dtype="bfloat16", scan_layers=True, remat=True),
    "162m": dict(vocab_size=32000, d_model=768, n_layers=12, n_heads=12, max_seq_len=2048,
                 dtype="bfloat16", scan_layers=True, remat=True),
    "468m": dict(vocab_size=32000, d_model=1024, n_layers=24, n_heads=16, max_seq_len=2048,
                 dtype="bfloat16", scan_layers=True, remat=True),
    "1b": dict(vocab_size=32000, d_model=2048, n_layers=16, n_heads=8, head_dim=256, max_seq_len=2048,
               dtype="bfloat16", scan_layers=True, remat=True),
}

SIZES: tuple[str, ...] = tuple(_PRESETS)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"ModelConfig.{name}={value!r}: must be an integer >= {minimum}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a decoder-only transformer (paper.md section 4).

    Attributes:
      vocab_size: number of token ids; tokens are int32 in [0, vocab_size).
      d_model: width of the residual stream (logical axis "embed").
      n_layers: number of transformer blocks (logical axis "layers" when scanned).
      n_heads: attention heads (keys/values have as many heads as queries).
      head_dim: width of one head; default d_model // n_heads (then d_model must be divisible by
        n_heads). Must be even (rotary embeddings rotate pairs). The q/k/v/o kernels map between
        "embed" (d_model) and "heads" (the fused n_heads * head_dim axis).
      mlp_dim: hidden width of the SwiGLU MLP (logical axis "mlp"); default 4 * d_model.
      max_seq_len: the longest token sequence the model accepts (tokens, not batches).
      dtype: compute dtype of activations and matmuls, "float32" or "bfloat16". Logits are float32.
      param_dtype: storage dtype of parameters, "float32" (default) or "bfloat16".
      scan_layers: run the blocks with `nn.scan`; parameters and masks then have a leading
        "layers" axis of size n_layers under the path ("layers", ...). Otherwise blocks are
        "layers_0" ... "layers_{n_layers-1}".
      remat: rematerialise each block in the backward pass (`nn.remat`), trading compute for memory.
      remat_policy: with remat, what each block saves (REMAT_POLICIES); "none" disables remat.
      attention: attention implementation (ATTENTION_IMPLS); all compute the same function.
      loss_chunk: sequence positions per chunk of the cross-entropy in `Transformer.loss_sums`
        (0 = the whole [B, S, V] float32 logits at once; else S must be a multiple of it and only
        one [B, loss_chunk, V] chunk of logits is alive at a time, forward and backward).
      norm_eps: RMSNorm epsilon.
      rope_max_timescale: rotary embedding maximum timescale.
      family: the model family that builds this config (`jaxsparse.models.registry`; "llama" is the
        LLaMA-style `Transformer`); a family reads the fields it needs.
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    head_dim: Optional[int] = None
    mlp_dim: Optional[int] = None
    max_seq_len: int = 2048
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: bool = False
    remat_policy: str = "full"
    attention: str = "reference"
    loss_chunk: int = 0
    norm_eps: float = 1e-5
    rope_max_timescale: float = 10000.0
    family: str = "llama"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            _check_int(name, getattr(self, name), 1)
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"ModelConfig.n_heads={self.n_heads}: d_model={self.d_model} must be divisible by "
                    f"n_heads (or give head_dim explicitly)")
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        _check_int("head_dim", self.head_dim, 2)
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim}: must be even (rotary embeddings)")
        if self.mlp_dim is None:
            object.__setattr__(self, "mlp_dim", 4 * self.d_model)
        _check_int("mlp_dim", self.mlp_dim, 1)
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: allowed values are {DTYPES}")
        for name in ("scan_layers", "remat"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: allowed values are True, False")
        for name, allowed in (("remat_policy", REMAT_POLICIES), ("attention", ATTENTION_IMPLS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: allowed values are {allowed}")
        _check_int("loss_chunk", self.loss_chunk, 0)
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            raise ValueError(f"ModelConfig.norm_eps={self.norm_eps!r}: must be a number > 0")
        if not (isinstance(self.rope_max_timescale, (int, float)) and self.rope_max_timescale > 1):
            raise ValueError(f"ModelConfig.rope_max_timescale={self.rope_max_timescale!r}: must be a number > 1")
        if not isinstance(self.family, str) or not self.family:
            raise ValueError(f"ModelConfig.family={self.family!r}: must be a registered family's name")

    @property
    def qkv_dim(self) -> int:
        """Width of the fused "heads" axis of the q/k/v/o kernels: n_heads * head_dim."""
        return self.n_heads * self.head_dim


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The named size `name` (case-insensitive, one of SIZES) with fields replaced by `overrides`.

    Derived defaults (head_dim, mlp_dim) are recomputed from the overridden fields unless the preset
    or the overrides set them. Raises ValueError for an unknown name or field.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _PRESETS:
        raise ValueError(f"model size {name!r}: allowed names are {SIZES}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {unknown}: allowed fields are {sorted(fields)}")
    return ModelConfig(**{**_PRESETS[key], **overrides})
