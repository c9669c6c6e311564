"""Parameter and FLOP accounting from a `ModelConfig` alone (no initialisation, works for any size).

Counts are numbers of scalar parameters; FLOPs are floating-point operations (a multiply-add is 2).
"""
from __future__ import annotations

from .model_config import ModelConfig


def formula_param_counts(config: ModelConfig) -> dict[str, int]:
    """Parameter counts of the model described by `config`.

    Returns a dict of ints:
      total: all parameters = embedding + prunable + other.
      prunable: every linear kernel (attention q, k, v, o; SwiGLU wi_0, wi_1, wo; the LM head);
        exactly the kernels that carry a mask.
      embedding: the token embedding table (vocab_size x d_model); not pruned.
      other: the RMSNorm scales (2 per block + the final norm); not pruned.
      attention, mlp, lm_head: the prunable part split by kind (attention and mlp summed over layers).
      per_layer: parameters of one block (its kernels and its two norm scales).
    Masks are a separate collection and are not counted.
    """
    d, layers = config.d_model, config.n_layers
    attention = 4 * d * config.qkv_dim  # q, k, v: d x (h*hd); o: (h*hd) x d
    mlp = 3 * d * config.mlp_dim  # wi_0, wi_1: d x mlp; wo: mlp x d
    lm_head = d * config.vocab_size
    norms_per_layer = 2 * d
    prunable = layers * (attention + mlp) + lm_head
    embedding = config.vocab_size * d
    other = layers * norms_per_layer + d
    return {
        "total": embedding + prunable + other,
        "prunable": prunable,
        "embedding": embedding,
        "other": other,
        "attention": layers * attention,
        "mlp": layers * mlp,
        "lm_head": lm_head,
        "per_layer": attention + mlp + norms_per_layer,
    }


def attention_flops_per_token(config: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token of the attention score/value products: 12 * n_layers * seq_len * n_heads * head_dim.

    Forward: q.k^T and probs.v are each 2 * seq_len * head_dim FLOPs per token per head; the backward
    pass costs twice the forward (x3 in all). The full seq_len x seq_len score matrix is counted (the
    model computes it and masks it), as in the PaLM paper's MFU formula (Chowdhery et al. 2022, app. B).
    """
    return 12 * config.n_layers * seq_len * config.qkv_dim


def flops_per_token(config: ModelConfig, seq_len: int, density: float = 1.0) -> int:
    """Training (forward + backward) FLOPs per token at sequence length `seq_len` (tokens).

        flops = 6 * density * prunable + 12 * n_layers * seq_len * n_heads * head_dim

    The first term is 2 FLOPs per multiply-add x 3 (forward, backward to activations, backward to
    weights) over the linear kernels that are active: `density` (fraction of prunable weights kept,
    in [0, 1]) scales the prunable part, as a sparse kernel would skip pruned weights. The second term
    is `attention_flops_per_token`, independent of density. The embedding lookup, norms, RoPE,
    softmax, mask multiply and loss are elementwise work and are not counted. Result rounded to int.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r}: must be an integer >= 1 (tokens)")
    if not isinstance(density, (int, float)) or not 0.0 <= float(density) <= 1.0:
        raise ValueError(f"density={density!r}: must be a number in [0, 1] (fraction of prunable weights kept)")
    linear = 6.0 * float(density) * formula_param_counts(config)["prunable"]
    return int(round(linear)) + attention_flops_per_token(config, seq_len)


def train_flops_per_token(config: ModelConfig, seq_len: int, n_masked: int, density: float) -> float:
    """Sparsity-aware training FLOPs per token of a run that masks `n_masked` weights (its pruning
    patterns' choice) at `density` (fraction of them kept): `flops_per_token` dense, less 6 x the
    pruned weights."""
    return flops_per_token(config, seq_len) - 6.0 * (1.0 - density) * n_masked
