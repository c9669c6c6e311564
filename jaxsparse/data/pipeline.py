"""Training and evaluation batches (grain), and their assembly into global jax.Arrays.

Training stream of process p of P (per epoch e, with one permutation of all train documents):
  shuffle(documents, seed, epoch) -> documents at positions p, p+P, p+2P, ... -> tokenize (+BOS/EOS)
  -> concatenate and cut into seq_len+1 windows -> batches of global_batch_size // P rows.
The P processes read disjoint document sets whose union is the epoch. The stream is infinite and never
pads; `get_state()` after batch k restores exactly batches k+1, k+2, ... with `set_state()`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from absl import flags

from jaxsparse.data import config as config_lib
from jaxsparse.data import packing
from jaxsparse.data import tfds_builder
from jaxsparse.data.tokenizer import Tokenizer, get_tokenizer

Batch = dict[str, np.ndarray]  # {"inputs", "targets": int32[B, L], "weights": float32[B, L]}


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    return (
        jax.process_index() if process_index is None else process_index,
        jax.process_count() if process_count is None else process_count,
    )


def combined_seed(shuffle_seed: int, seed: int) -> int:
    """One 32-bit shuffle seed from data.shuffle_seed and the caller's run seed."""
    return int(np.random.SeedSequence([int(shuffle_seed), int(seed)]).generate_state(1)[0])


class TrainIterator:
    """Iterator of local training batches with JSON-serialisable `get_state()` / `set_state()`.

    The state records the shape arguments; `set_state` refuses a state saved under different ones.
    """

    def __init__(self, dataset: grain.IterDataset, meta: dict[str, Any], tokenizer: Tokenizer):
        self._dataset = dataset
        self._it = iter(dataset)
        self.meta = meta
        self.tokenizer = tokenizer

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> Batch:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        """The position after the last returned batch: {"meta": {...}, "grain": {...}} (JSON-safe)."""
        return json.loads(
            json.dumps({"meta": self.meta, "grain": self._it.get_state()}, default=_json_default)
        )

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state from `get_state()` (also after a JSON round trip)."""
        if not isinstance(state, Mapping) or "grain" not in state or "meta" not in state:
            raise ValueError(
                "TrainIterator.set_state: expected a dict from get_state() with 'meta' and 'grain'."
            )
        diff = {k: (state["meta"].get(k), v) for k, v in self.meta.items() if state["meta"].get(k) != v}
        if diff:
            raise ValueError(
                "TrainIterator.set_state: the state was saved by a different pipeline; "
                f"(saved, current) per field: {diff}"
            )
        self._it.set_state(_restore_tuples(state["grain"]))

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def _restore_tuples(state: Any) -> Any:
    """Undoes JSON's tuple -> list and int -> str keys in grain states (packing compares slices with a
    (-1, -1) tuple; interleave keys future states by int)."""
    if isinstance(state, Mapping):
        out = {k: _restore_tuples(v) for k, v in state.items()}
        if isinstance(out.get("remainder_slices"), Mapping):
            out["remainder_slices"] = {f: tuple(sl) for f, sl in out["remainder_slices"].items()}
        if isinstance(out.get("future_states"), Mapping):  # grain's interleave keys them by int
            out["future_states"] = {int(i): v for i, v in out["future_states"].items()}
        return out
    if isinstance(state, list):
        return [_restore_tuples(v) for v in state]
    return state


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (np.ndarray, tuple)):
        return list(np.asarray(value).tolist())
    raise TypeError(f"iterator state holds a {type(value).__name__}, which is not JSON-serialisable")


def _read_options(cfg: ml_collections.ConfigDict) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=8 * cfg.read_threads)


def train_dataset(
    cfg: ml_collections.ConfigDict,
    source: Sequence[Any],
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    local_batch: int,
    process_index: int,
    process_count: int,
    seed: int,
) -> grain.IterDataset:
    """The grain pipeline of one process (see the module docstring); `source` is the train split."""
    if len(source) == 0:
        raise ValueError(f"data.dataset={cfg.dataset!r}: the train split is empty.")
    docs = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
    docs = docs[process_index::process_count].map(packing.TokenizeDocument(tokenizer))
    ds = packing.packed_batches(
        docs.to_iter_dataset(_read_options(cfg)), seq_len=seq_len, batch_size=local_batch
    )
    if cfg.num_workers > 0:
        if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside an absl app use their defaults
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
    return ds


def make_train_iterator(
    data_cfg: ml_collections.ConfigDict,
    *,
    seq_len: int,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    seed: int = 0,
) -> TrainIterator:
    """Infinite iterator of this process's training batches (local_batch = global_batch_size // P rows).

    Each batch: {"inputs": int32[local_batch, seq_len], "targets": int32[local_batch, seq_len] (inputs
    shifted by one token), "weights": float32[local_batch, seq_len] (all 1: the stream never pads)}.
    Epoch-aware shuffle by (data.shuffle_seed, seed); process_index/count default to JAX's.
    """
    config_lib.validate(data_cfg)
    pidx, pcount = _process(process_index, process_count)
    local_batch = config_lib.check_batch_args(seq_len, global_batch_size, pidx, pcount)
    dataset_id, sources = tfds_builder.open_dataset(data_cfg)
    tokenizer = get_tokenizer(data_cfg)
    shuffle = combined_seed(data_cfg.shuffle_seed, seed)
    ds = train_dataset(
        data_cfg,
        sources["train"],
        tokenizer,
        seq_len=seq_len,
        local_batch=local_batch,
        process_index=pidx,
        process_count=pcount,
        seed=shuffle,
    )
    meta = {
        "dataset": dataset_id,
        "tokenizer_vocab_size": tokenizer.vocab_size,
        "seq_len": seq_len,
        "global_batch_size": global_batch_size,
        "process_index": pidx,
        "process_count": pcount,
        "shuffle_seed": shuffle,
        "num_workers": data_cfg.num_workers,
    }
    return TrainIterator(ds, meta, tokenizer)


def validation_stream(
    data_cfg: ml_collections.ConfigDict,
    source: Sequence[Any],
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    batch_size: int,
) -> grain.IterDataset:
    """The validation split in stored order (no shuffle), packed; the last batch may be padded/short."""
    docs = grain.MapDataset.source(source).map(packing.TokenizeDocument(tokenizer))
    return packing.packed_batches(
        docs.to_iter_dataset(_read_options(data_cfg)),
        seq_len=seq_len,
        batch_size=batch_size,
        drop_remainder=False,
    )


def make_eval_batches(
    data_cfg: ml_collections.ConfigDict,
    *,
    seq_len: int,
    global_batch_size: int,
    num_batches: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> list[Batch]:
    """The fixed validation set: the first `num_batches` (default data.eval_batches) full global batches
    of the packed validation split, each cut to this process's rows [p*local_batch, (p+1)*local_batch).

    Same dict format as training (weights all 1). Raises ValueError naming the fields when the validation
    split holds fewer than num_batches * global_batch_size * (seq_len + 1) tokens.
    """
    config_lib.validate(data_cfg)
    pidx, pcount = _process(process_index, process_count)
    local_batch = config_lib.check_batch_args(seq_len, global_batch_size, pidx, pcount)
    num_batches = data_cfg.eval_batches if num_batches is None else num_batches
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(
            f"num_batches (data.eval_batches)={num_batches!r} is not allowed: expected an " "integer >= 1."
        )
    _, sources = tfds_builder.open_dataset(data_cfg)
    tokenizer = get_tokenizer(data_cfg)
    stream = validation_stream(
        data_cfg, sources["validation"], tokenizer, seq_len=seq_len, batch_size=global_batch_size
    )
    batches: list[Batch] = []
    for batch in stream:
        if batch["inputs"].shape[0] < global_batch_size or not batch["weights"].all():
            break
        batches.append({k: v[pidx * local_batch : (pidx + 1) * local_batch] for k, v in batch.items()})
        if len(batches) == num_batches:
            return batches
    val_tokens = sum(
        len(tokenizer.encode(packing.TokenizeDocument.text_of(x))) + 2 for x in sources["validation"]
    )
    raise ValueError(
        f"The validation split of data.dataset={data_cfg.dataset!r} has {val_tokens} tokens "
        f"({len(sources['validation'])} documents), enough for {len(batches)} full global batch(es) of "
        f"{global_batch_size} x (seq_len={seq_len} + 1) tokens, but num_batches (data.eval_batches)="
        f"{num_batches} were requested: reduce data.eval_batches, config.train.seq_len or "
        "config.train.batch_size."
    )


def _batch_shards(sharding: jax.sharding.NamedSharding) -> int:
    spec = sharding.spec
    if len(spec) == 0 or spec[0] is None:
        return 1
    axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    return math.prod(sharding.mesh.shape[a] for a in axes)


def to_global_batch(
    local_batch: Mapping[str, np.ndarray], sharding: jax.sharding.NamedSharding
) -> dict[str, jax.Array]:
    """Assembles each process's rows into global jax.Arrays of [global_batch, seq_len] on `sharding`.

    Uses jax.make_array_from_process_local_data; the batch dimension (leading) must divide evenly over
    the mesh axes of sharding.spec[0].
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
        out[key] = jax.make_array_from_process_local_data(sharding, arr)
    return out
