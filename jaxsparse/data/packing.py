"""Tokenize documents and pack them into fixed-length training windows (grain transforms).

Each document becomes [BOS] + tokens + [EOS]; the documents of a stream are concatenated and cut into
consecutive, non-overlapping windows of seq_len + 1 tokens (grain's ConcatThenSplitIterDataset), so no
token is dropped and a document may continue in the next window. A window w gives one row:
inputs = w[:-1], targets = w[1:] (next-token targets), weights = 1 where the target is a real token.
Only at the end of a *finite* stream (the validation set) is the last window padded; its padded targets
get weight 0. The infinite training stream never pads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from jaxsparse.data.tokenizer import Tokenizer

TOKENS = "tokens"
SEGMENTS = "tokens_segment_ids"  # added by ConcatThenSplit: 0 marks padding


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


def pack(ds: grain.IterDataset, seq_len: int) -> grain.IterDataset:
    """Packs {"tokens": int32[n]} elements into {"tokens": int32[seq_len+1], "tokens_segment_ids": ...}."""
    return grain.experimental.ConcatThenSplitIterDataset(ds, length_struct={TOKENS: seq_len + 1})


class WindowsToBatch(grain.transforms.Map):
    """A batch of packed windows -> {"inputs","targets": int32[B, seq_len], "weights": float32[B, seq_len]}."""

    def map(self, element: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        windows = np.asarray(element[TOKENS], dtype=np.int32)
        real = np.asarray(element[SEGMENTS])[:, 1:] > 0
        return {
            "inputs": np.ascontiguousarray(windows[:, :-1]),
            "targets": np.ascontiguousarray(windows[:, 1:]),
            "weights": real.astype(np.float32),
        }


def packed_batches(
    ds: grain.IterDataset, *, seq_len: int, batch_size: int, drop_remainder: bool = True
) -> grain.IterDataset:
    """Tokenized documents -> packed batches of `batch_size` rows of the model dict (see WindowsToBatch)."""
    return pack(ds, seq_len).batch(batch_size, drop_remainder=drop_remainder).map(WindowsToBatch())
