"""Statistics of the configured data: examples and tokens per split, tokenizer, first packed sequence."""

from __future__ import annotations

from typing import Any

import grain
import ml_collections
import numpy as np

from jaxsparse.data import data_config
from jaxsparse.data import packing
from jaxsparse.data import pipeline
from jaxsparse.data import tfds_builder
from jaxsparse.data.tokenizer import get_tokenizer
from jaxsparse.errors import ConfigError

REQUIRED = ("data", "train.seq_len", "train.batch_size", "eval.batches")


def split_stats(
    data_cfg: ml_collections.ConfigDict, *, max_examples: int | None = 100_000
) -> dict[str, dict[str, Any]]:
    """Per split: {"examples": documents, "tokens": tokens incl. one BOS and one EOS per document,
    "counted_examples": documents actually tokenized, "estimated": True when tokens were extrapolated
    from the first `max_examples` documents (None = count all)}.
    """
    _, sources = tfds_builder.open_splits(data_cfg)
    tokenizer = get_tokenizer(data_cfg)
    stats = {}
    for split, source in sources.items():
        n = len(source)
        counted = n if max_examples is None else min(n, max_examples)
        docs = grain.MapDataset.source(source)[:counted].map(packing.TokenizeDocument(tokenizer))
        read = grain.ReadOptions(num_threads=data_cfg.read_threads, prefetch_buffer_size=64)
        tokens = sum(int(x[packing.TOKENS].shape[0]) for x in docs.to_iter_dataset(read))
        estimated = counted < n
        if estimated and counted:
            tokens = int(round(tokens * n / counted))
        stats[split] = {"examples": n, "tokens": tokens, "counted_examples": counted, "estimated": estimated}
    return stats


def inspect_data(config: ml_collections.ConfigDict, *, max_examples: int | None = 100_000) -> dict[str, Any]:
    """JSON-ready summary of a trainer config's data: config.data, config.train.seq_len / batch_size and
    config.eval.batches (the number of validation batches the trainer evaluates on)."""
    for field in REQUIRED:
        node = config
        for part in field.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise ConfigError(f"config.{field} is missing: inspect expects a trainer config with "
                                  f"{', '.join('config.' + f for f in REQUIRED)} (see configs/default.py).")
            node = node[part]
    data_cfg = config.data
    seq_len, batch, eval_batches = config.train.seq_len, config.train.batch_size, config.eval.batches
    data_config.validate_data_config(data_cfg)
    data_config.check_batch_args(seq_len, batch, 0, 1)
    data_config.check_batch_layout(data_cfg, batch)
    if isinstance(eval_batches, bool) or not isinstance(eval_batches, int) or eval_batches < 1:
        raise ConfigError(f"config.eval.batches={eval_batches!r} is not allowed: expected an integer >= 1.")
    dataset_id, _ = tfds_builder.open_splits(data_cfg)
    stats = split_stats(data_cfg, max_examples=max_examples)
    it = pipeline.make_train_iterator(
        data_cfg, seq_len=seq_len, global_batch_size=batch, process_index=0, process_count=1,
        seed=config.get("seed", 0),
    )
    first = next(it)
    it.close()
    window = np.concatenate([first["inputs"][0], first["targets"][0, -1:]])
    tok = it.tokenizer
    window_tokens = (seq_len + 1) * batch
    return {
        "dataset": data_cfg.dataset,
        "dataset_id": dataset_id,
        "data_dir": data_config.data_dir_of(data_cfg),
        "tokenizer": {
            "name": tok.name,
            "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id,
            "eos_id": tok.eos_id,
            "pad_id": tok.pad_id,
        },
        "vocab_size": tok.vocab_size,
        "seq_len": seq_len,
        "global_batch_size": batch,
        "splits": stats,
        "train_examples": stats["train"]["examples"],
        "train_tokens": stats["train"]["tokens"],
        "validation_examples": stats["validation"]["examples"],
        "validation_tokens": stats["validation"]["tokens"],
        "train_batches_per_epoch": stats["train"]["tokens"] // window_tokens,
        "eval_batches_available": stats["validation"]["tokens"] // window_tokens,
        "eval_batches": eval_batches,
        "shards": data_cfg.shards,
        "rows_per_shard": batch // data_cfg.shards,
        "first_sequence": tok.decode(window),
        "first_sequence_ids": [int(i) for i in window[:16]],
    }
