"""Tokenized documents and the rows made of their packed windows (the one definition of both).

Each document becomes [BOS] + tokens + [EOS]. A stream of documents (one logical training shard, or the
validation split in stored order) is concatenated and cut into consecutive, non-overlapping windows of
seq_len + 1 tokens, so no token is dropped, nothing is padded and a document may continue in the next
window (see `shards.ShardStream` and `pipeline.validation_tokens`). A window w gives one row:
inputs = w[:-1], targets = w[1:] (next-token targets), weights = 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from jaxsparse.data.tokenizer import Tokenizer

TOKENS = "tokens"
Batch = dict[str, np.ndarray]  # {"inputs", "targets": int32[B, L], "weights": float32[B, L]}


class TokenizeDocument(grain.transforms.Map):
    """{"text": bytes|str, ...} -> {"tokens": int32[n + 2]} = [BOS] + encode(text) + [EOS]."""

    def __init__(self, tokenizer: Tokenizer, feature: str = "text"):
        self._tok = tokenizer
        self._feature = feature

    @staticmethod
    def text_of(element: Mapping[str, Any], feature: str = "text") -> str:
        """The document text of a source element (tfds yields UTF-8 bytes)."""
        text = element[feature]
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text

    def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
        ids = self._tok.encode(self.text_of(element, self._feature))
        out = np.empty(len(ids) + 2, dtype=np.int32)
        out[0] = self._tok.bos_id
        out[1:-1] = ids
        out[-1] = self._tok.eos_id
        return {TOKENS: out}


def windows_to_batch(windows: np.ndarray) -> Batch:
    """int32[B, seq_len + 1] windows -> {"inputs", "targets": int32[B, seq_len] (targets = inputs shifted
    by one token), "weights": float32[B, seq_len] (all 1)}."""
    return {
        "inputs": np.ascontiguousarray(windows[:, :-1]),
        "targets": np.ascontiguousarray(windows[:, 1:]),
        "weights": np.ones((windows.shape[0], windows.shape[1] - 1), np.float32),
    }
