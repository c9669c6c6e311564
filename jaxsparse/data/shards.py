"""Logical data shards: one global, deterministic document order that any number of processes slices.

With S = config.data.shards logical shards and a global batch of B rows (S divides B), shard s fills
rows [s*B/S, (s+1)*B/S) of every global batch. Shard s reads the documents at positions s, s+S, s+2S, ...
of one epoch-aware shuffle of the train split (grain draws a new permutation per epoch from the seed),
tokenizes each as [BOS] + ids + [EOS], concatenates them and cuts consecutive windows of seq_len + 1
tokens: no token is dropped or padded, and a document may continue into the shard's next window.

So the global batch of step t is a function of the config and t only. A process of P runs the S/P
shards whose rows it owns (P divides S). A shard's position is two integers, (document number within
the shard, token offset in that document), so the state of all S shards reads the same whatever the
process count. This is OLMo's idea (a global sample order that each rank slices) for a streamed corpus
that is tokenized on the fly rather than pre-tokenized.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from concurrent import futures
from typing import Any

import grain
import numpy as np

from jaxsparse.data import packing
from jaxsparse.data.tokenizer import Tokenizer

MIN_READ_AHEAD = 4  # documents read ahead per shard, at least
MAX_READ_AHEAD = 4096


class DocumentReader:
    """Reads and tokenizes train documents by their position in the global order, on a thread pool.

    Position i (0, 1, 2, ... over all epochs) -> document order[i] of `source`, where `order` is
    grain's epoch-aware shuffle of range(len(source)) with `seed`.
    """

    def __init__(self, source: Sequence[Any], tokenizer: Tokenizer, *, seed: int, threads: int):
        self._source = source
        self._order = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat()
        self._tokenize = packing.TokenizeDocument(tokenizer)
        self._pool = futures.ThreadPoolExecutor(threads, thread_name_prefix="jaxsparse-data")

    def _tokens(self, index: int) -> np.ndarray:
        return self._tokenize.map(self._source[index])[packing.TOKENS]

    def submit(self, position: int) -> futures.Future:
        """Starts reading the document at global `position`; the future gives int32[n + 2] tokens."""
        return self._pool.submit(self._tokens, int(self._order[position]))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ShardStream:
    """The windows of one logical shard, from position (doc, offset): token `offset` of the shard's
    document number `doc` (global position doc * num_shards + shard) is the next token it emits."""

    def __init__(self, reader: DocumentReader, shard: int, num_shards: int, window: int,
                 position: tuple[int, int] = (0, 0)):
        self._reader, self.shard, self.num_shards, self.window = reader, shard, num_shards, window
        self.doc, self.offset = (int(v) for v in position)
        if self.doc < 0 or self.offset < 0:
            raise ValueError(f"shard {shard}: position {position} must be non-negative")
        self._pending: collections.deque[futures.Future] = collections.deque()  # docs doc, doc+1, ...
        self._current: np.ndarray | None = None
        self._tokens_seen, self._docs_seen = 0, 0

    @property
    def position(self) -> tuple[int, int]:
        return self.doc, self.offset

    def _read_ahead(self, rows: int) -> None:
        """Keeps about two batches' worth of documents (by the mean length so far) being read."""
        mean = self._tokens_seen / self._docs_seen if self._docs_seen else float(self.window)
        want = min(MAX_READ_AHEAD, max(MIN_READ_AHEAD, math.ceil(2 * rows * self.window / mean) + 1))
        submitted = self.doc + len(self._pending) + (self._current is not None)
        while len(self._pending) < want:
            self._pending.append(self._reader.submit(submitted * self.num_shards + self.shard))
            submitted += 1

    def next_rows(self, rows: int) -> np.ndarray:
        """The shard's next `rows` windows: int32[rows, window]."""
        self._read_ahead(rows)
        out = np.empty(rows * self.window, dtype=np.int32)
        filled = 0
        while filled < out.size:
            if self._current is None:
                self._current = self._pending.popleft().result()
                self._tokens_seen += len(self._current)
                self._docs_seen += 1
                if not self._pending:
                    self._read_ahead(rows)
                if self.offset >= len(self._current):
                    raise ValueError(f"shard {self.shard}: offset {self.offset} is beyond document "
                                     f"{self.doc} ({len(self._current)} tokens): a state of other data")
            take = min(len(self._current) - self.offset, out.size - filled)
            out[filled : filled + take] = self._current[self.offset : self.offset + take]
            filled += take
            self.offset += take
            if self.offset == len(self._current):
                self.doc, self.offset, self._current = self.doc + 1, 0, None
        return out.reshape(rows, self.window)

    def cancel(self) -> None:
        for pending in self._pending:
            pending.cancel()
        self._pending.clear()


def owned_shards(num_shards: int, process_index: int, process_count: int) -> range:
    """The shards process p runs: [p*S/P, (p+1)*S/P), i.e. the rows [p*B/P, (p+1)*B/P) of each batch."""
    per = num_shards // process_count
    return range(process_index * per, (process_index + 1) * per)


def encode_positions(positions: np.ndarray) -> np.ndarray:
    """int64[k, 2] (doc, offset) -> int32[k, 3] (doc // 2**30, doc % 2**30, offset), for collectives
    that run without 64-bit integers."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size and (positions[:, 1].max() >= 2**31 or positions[:, 0].max() >= 2**61):
        raise ValueError(f"data positions out of range: {positions.max(axis=0)}")
    return np.stack([positions[:, 0] >> 30, positions[:, 0] & (2**30 - 1), positions[:, 1]], axis=1
                    ).astype(np.int32)


def decode_positions(encoded: np.ndarray) -> np.ndarray:
    """Inverse of encode_positions: int32[..., 3] -> int64[..., 2]."""
    encoded = np.asarray(encoded, dtype=np.int64)
    return np.stack([(encoded[..., 0] << 30) + encoded[..., 1], encoded[..., 2]], axis=-1)
