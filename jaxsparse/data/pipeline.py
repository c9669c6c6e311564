"""Training and evaluation batches, and their assembly into global jax.Arrays.

Training: `config.data.shards` logical shards (see `jaxsparse.data.shards`) each fill fixed rows of
every global batch from their own slice of one global document order, so the global batch of step t is
a function of the config and t only, never of the number of processes. Process p of P builds the rows
[p*B/P, (p+1)*B/P) of each global batch of B rows (the layout `jax.make_array_from_process_local_data`
expects) by running the shards that own them. The stream is infinite and never pads. `get_state()`
(the position of every logical shard, gathered from all processes) restores the stream exactly with
`set_state()`, also under a different process count.

Evaluation: the validation split in stored order, packed the same way into full global batches, each
process taking its rows.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Mapping, Sequence
from concurrent import futures
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxsparse.data import data_config
from jaxsparse.data import packing
from jaxsparse.data.packing import Batch, windows_to_batch
from jaxsparse.data import shards as shards_lib
from jaxsparse.data import tfds_builder
from jaxsparse.data.tokenizer import Tokenizer, get_tokenizer
from jaxsparse.errors import ConfigError

STATE_FORMAT = "logical-shards-v1"
_META_CHECKED = ("dataset", "tokenizer_vocab_size", "seq_len", "global_batch_size", "shards", "shuffle_seed")


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    return (
        jax.process_index() if process_index is None else process_index,
        jax.process_count() if process_count is None else process_count,
    )


def combined_seed(shuffle_seed: int, seed: int) -> int:
    """One 32-bit shuffle seed from data.shuffle_seed and the caller's run seed."""
    return int(np.random.SeedSequence([int(shuffle_seed), int(seed)]).generate_state(1)[0])


class TrainIterator:
    """Infinite iterator of this process's rows of each global training batch.

    `get_state()` / `set_state()` hold {"format", "meta", "shards": {"<s>": [doc, offset]}}, JSON-safe.
    In a multi-process run (process_count == jax.process_count() > 1) `get_state()` is a collective:
    every process calls it at the same step (the trainer does, at each checkpoint) and each gets the
    positions of all shards. An iterator built for a simulated process (process_count given and not
    jax's) returns only its own shards; merge the "shards" of all processes to get the full state.
    """

    def __init__(self, reader: shards_lib.DocumentReader, streams: list[shards_lib.ShardStream],
                 rows_per_shard: int, meta: dict[str, Any], tokenizer: Tokenizer):
        self._reader, self._streams, self._rows = reader, streams, rows_per_shard
        self.meta, self.tokenizer = meta, tokenizer

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> Batch:
        return windows_to_batch(np.concatenate([s.next_rows(self._rows) for s in self._streams]))

    def _gather(self, local: np.ndarray) -> np.ndarray:
        """Positions of all shards, int64[S, 2], from every process's own (in shard order)."""
        count = self.meta["process_count"]
        if count == 1 or count != jax.process_count():
            return local
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather(shards_lib.encode_positions(local))
        return shards_lib.decode_positions(np.asarray(gathered)).reshape(-1, 2)

    def get_state(self) -> dict[str, Any]:
        """The position after the last returned batch (JSON-safe; see the class docstring)."""
        local = np.array([s.position for s in self._streams], dtype=np.int64).reshape(-1, 2)
        positions = self._gather(local)
        first = 0 if len(positions) == self.meta["shards"] else self._streams[0].shard
        meta = {k: self.meta[k] for k in _META_CHECKED}
        return {"format": STATE_FORMAT, "meta": meta,
                "shards": {str(first + i): [int(d), int(o)] for i, (d, o) in enumerate(positions)}}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state from `get_state()` (also after a JSON round trip, and when it was written
        under another process count); refuses a state of another pipeline with the differing fields."""
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        if found != STATE_FORMAT:
            raise ConfigError(
                "the data-iterator state (checkpoint item 'data') was not written by this pipeline "
                f"(expected format {STATE_FORMAT!r}, got {found!r}; checkpoints of the per-process pipeline "
                "of earlier versions cannot be resumed exactly): use a new --workdir.")
        saved = state.get("meta", {})
        diff = {k: (saved.get(k), self.meta[k]) for k in _META_CHECKED if saved.get(k) != self.meta[k]}
        if diff:
            raise ConfigError("the data-iterator state was saved by a different data pipeline; "
                              f"(saved, current) per field: {diff}")
        positions = state.get("shards", {})
        lacking = [s.shard for s in self._streams if str(s.shard) not in positions]
        if lacking:
            raise ConfigError(f"the data-iterator state has no position for logical shards {lacking}.")
        for i, old in enumerate(self._streams):
            old.cancel()
            self._streams[i] = shards_lib.ShardStream(self._reader, old.shard, old.num_shards, old.window,
                                                      tuple(positions[str(old.shard)]))

    def close(self) -> None:
        for stream in self._streams:
            stream.cancel()
        self._reader.close()


def make_train_iterator(
    data_cfg: ml_collections.ConfigDict,
    *,
    seq_len: int,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    seed: int = 0,
) -> TrainIterator:
    """Infinite iterator of this process's rows of every global training batch (see the module docstring).

    Each batch: {"inputs": int32[local_batch, seq_len], "targets": int32[local_batch, seq_len] (inputs
    shifted by one token), "weights": float32[local_batch, seq_len] (all 1: the stream never pads)} with
    local_batch = global_batch_size // process_count: rows [p*local_batch, (p+1)*local_batch) of the
    global batch, which is the same for any process count. Epoch-aware shuffle by (data.shuffle_seed,
    seed); process_index/count default to JAX's. Raises ConfigError for bad config or shapes.
    """
    data_config.validate_data_config(data_cfg)
    pidx, pcount = _process(process_index, process_count)
    data_config.check_batch_args(seq_len, global_batch_size, pidx, pcount)
    rows_per_shard = data_config.check_batch_layout(data_cfg, global_batch_size, pcount)
    dataset_id, sources = tfds_builder.open_splits(data_cfg)
    if len(sources["train"]) == 0:
        raise ConfigError(f"config.data.dataset={data_cfg.dataset!r}: the train split is empty.")
    tokenizer = get_tokenizer(data_cfg)
    shuffle = combined_seed(data_cfg.shuffle_seed, seed)
    reader = shards_lib.DocumentReader(sources["train"], tokenizer, seed=shuffle, threads=data_cfg.read_threads)
    streams = [shards_lib.ShardStream(reader, s, data_cfg.shards, seq_len + 1)
               for s in shards_lib.owned_shards(data_cfg.shards, pidx, pcount)]
    meta = {
        "dataset": dataset_id,
        "tokenizer_vocab_size": tokenizer.vocab_size,
        "seq_len": seq_len,
        "global_batch_size": global_batch_size,
        "shards": data_cfg.shards,
        "shuffle_seed": shuffle,
        "process_index": pidx,
        "process_count": pcount,
    }
    return TrainIterator(reader, streams, rows_per_shard, meta, tokenizer)


def validation_tokens(source: Sequence[Any], tokenizer: Tokenizer, *, threads: int,
                      limit: int | None = None) -> np.ndarray:
    """The validation split in stored order (no shuffle), each document [BOS] + ids + [EOS], concatenated:
    int32[n]. Stops once `limit` tokens are read (None: the whole split). Tokenizes on `threads` threads."""
    tokenize = packing.TokenizeDocument(tokenizer)
    parts: list[np.ndarray] = []
    have = 0
    with futures.ThreadPoolExecutor(threads, thread_name_prefix="jaxsparse-eval") as pool:
        pending = collections.deque(pool.submit(tokenize.map, source[i]) for i in range(min(8 * threads, len(source))))
        following = len(pending)
        while pending and (limit is None or have < limit):
            parts.append(pending.popleft().result()[packing.TOKENS])
            have += len(parts[-1])
            if following < len(source):
                pending.append(pool.submit(tokenize.map, source[following]))
                following += 1
        for rest in pending:
            rest.cancel()
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def make_eval_batches(
    data_cfg: ml_collections.ConfigDict,
    *,
    seq_len: int,
    global_batch_size: int,
    num_batches: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> list[Batch]:
    """The fixed validation set: the first `num_batches` (the trainer's config.eval.batches) global
    batches of the validation split packed in stored order (windows of seq_len + 1 tokens, as in
    training), each cut to this process's rows [p*local_batch, (p+1)*local_batch).

    Same dict format as training (weights all 1: only full batches are used). Raises ConfigError naming
    the fields when the validation split holds fewer than num_batches * global_batch_size * (seq_len + 1)
    tokens.
    """
    data_config.validate_data_config(data_cfg)
    pidx, pcount = _process(process_index, process_count)
    local_batch = data_config.check_batch_args(seq_len, global_batch_size, pidx, pcount)
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ConfigError(f"config.eval.batches={num_batches!r} is not allowed: expected an integer >= 1.")
    _, sources = tfds_builder.open_splits(data_cfg)
    tokenizer = get_tokenizer(data_cfg)
    need = num_batches * global_batch_size * (seq_len + 1)
    tokens = validation_tokens(sources["validation"], tokenizer, threads=data_cfg.read_threads, limit=need)
    if len(tokens) < need:
        full = len(tokens) // (global_batch_size * (seq_len + 1))
        raise ConfigError(
            f"config.eval.batches={num_batches}: the validation split of config.data.dataset="
            f"{data_cfg.dataset!r} has {len(tokens)} tokens ({len(sources['validation'])} documents), enough "
            f"for {full} full global batch(es) of config.train.batch_size={global_batch_size} x "
            f"(config.train.seq_len={seq_len} + 1) tokens; reduce config.eval.batches, config.train.seq_len "
            "or config.train.batch_size, or raise config.data.validation_fraction."
        )
    windows = tokens[:need].reshape(num_batches, global_batch_size, seq_len + 1)
    return [windows_to_batch(w[pidx * local_batch : (pidx + 1) * local_batch]) for w in windows]


def _batch_shards(sharding: jax.sharding.NamedSharding) -> int:
    spec = sharding.spec
    if len(spec) == 0 or spec[0] is None:
        return 1
    axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    return math.prod(sharding.mesh.shape[a] for a in axes)


@functools.lru_cache(maxsize=16)
def _process_rows(sharding: jax.sharding.NamedSharding, global_shape: tuple[int, ...]) -> tuple[int, int]:
    """The [start, stop) rows of the global batch held by this process's devices under `sharding`."""
    rows = set()
    for index in sharding.addressable_devices_indices_map(global_shape).values():
        rows.update(range(*index[0].indices(global_shape[0])))
    lo, hi = min(rows), max(rows) + 1
    if len(rows) != hi - lo:
        raise ValueError(f"to_global_batch: this process's devices hold rows {sorted(rows)} of the batch, "
                         "not one contiguous block; build the mesh with each process's devices together.")
    return lo, hi


def to_global_batch(
    local_batch: Mapping[str, np.ndarray], sharding: jax.sharding.NamedSharding
) -> dict[str, jax.Array]:
    """Assembles each process's rows into global jax.Arrays of [global_batch, seq_len] on `sharding`.

    Process p's `local_batch` holds rows [p*n, (p+1)*n) of the global batch (n local rows), as the
    pipeline builds them; raises ValueError if `sharding` places other rows on this process's devices
    (the data would be silently permuted) or if the batch does not divide over sharding.spec[0].
    """
    shards = _batch_shards(sharding)
    out = {}
    for key, value in local_batch.items():
        arr = np.asarray(value)
        global_rows = arr.shape[0] * jax.process_count()
        if global_rows % shards:
            raise ValueError(
                f"to_global_batch: batch '{key}' has {global_rows} global rows, not divisible by "
                f"the {shards} shards of mesh axes {sharding.spec[0]!r}; choose "
                "config.train.batch_size as a multiple of the data-parallel device count."
            )
        if jax.process_count() > 1:
            want = (jax.process_index() * arr.shape[0], (jax.process_index() + 1) * arr.shape[0])
            got = _process_rows(sharding, (global_rows, *arr.shape[1:]))
            if got != want:
                raise ValueError(f"to_global_batch: the mesh puts rows {got} of the batch on process "
                                 f"{jax.process_index()}, but the data pipeline built rows {want}.")
        out[key] = jax.make_array_from_process_local_data(sharding, arr)
    return out
