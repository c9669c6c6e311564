"""jaxsparse.data: text corpora via tensorflow-datasets, SentencePiece tokenizers, packing into logical shards.

Public API (the trainer's contract):
  default_config() -> ConfigDict                      the `config.data` section
  validate_data_config(data_cfg), check_batch_layout(data_cfg, global_batch_size, process_count=1)
                                                      ConfigError naming config.data.<key> on bad input
  get_tokenizer(data_cfg) -> Tokenizer                encode/decode/vocab_size/bos_id/eos_id/pad_id/name
  make_train_iterator(data_cfg, *, seq_len, global_batch_size, process_index=None, process_count=None,
                      seed=0) -> TrainIterator        infinite local rows of global batches that do not
                                                      depend on the process count; get_state/set_state
                                                      (collective in multi-process runs)
  make_eval_batches(data_cfg, *, seq_len, global_batch_size, num_batches, process_index=None,
                    process_count=None) -> list[dict] fixed validation set (local rows);
                                                      num_batches is the trainer's config.eval.batches
  to_global_batch(local_batch, sharding) -> dict[str, jax.Array]
  split_stats(data_cfg, ...) -> dict                  example/token counts per split
  open_splits(data_cfg) -> (dataset_id, {split: source})
                                                      the configured dataset's splits, whatever its
                                                      source; each has len() and [i] -> {"text": ...}
  TokenizeDocument(tokenizer), TOKENS                 a source element -> {TOKENS: [BOS] + ids + [EOS]}
Local corpora: data.dataset="text:<folder>" or "parquet:<folder or glob>", or a source of your own
registered with jaxsparse.data.sources.register (one module per source).
Command line: python -m jaxsparse.data {inspect,train_tokenizer} --config=CONFIG_FILE
"""

from jaxsparse.data.data_config import check_batch_layout, default_config, validate_data_config
from jaxsparse.data.inspect import inspect_data, split_stats
from jaxsparse.data.packing import TOKENS, TokenizeDocument
from jaxsparse.data.pipeline import TrainIterator, make_eval_batches, make_train_iterator, to_global_batch
from jaxsparse.data.tfds_builder import open_splits
from jaxsparse.data.tokenizer import (
    ByteTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    get_tokenizer,
    train_for_dataset,
    train_sentencepiece,
)

__all__ = [
    "ByteTokenizer",
    "SentencePieceTokenizer",
    "TOKENS",
    "TokenizeDocument",
    "Tokenizer",
    "TrainIterator",
    "check_batch_layout",
    "default_config",
    "get_tokenizer",
    "inspect_data",
    "make_eval_batches",
    "make_train_iterator",
    "open_splits",
    "split_stats",
    "to_global_batch",
    "train_for_dataset",
    "train_sentencepiece",
    "validate_data_config",
]
