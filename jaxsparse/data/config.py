"""The data section of a training config, and its validation.

`default_config()` is the single source of truth for the data keys; the trainer's config files embed it
as `config.data`. Sequence length and global batch size are *not* data keys: the trainer keeps them at
`config.train.seq_len` / `config.train.batch_size` and passes them to the pipeline functions.
"""

from __future__ import annotations

import dataclasses
import os
import re

import ml_collections

# Environment variable that overrides the default tfds data directory (the cache of built datasets).
DATA_DIR_ENV = "JAXSPARSE_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/jaxsparse/tfds"
EMBEDDED_DATASET = "shakespeare"
TEXT_PREFIX = "text:"
TOKENIZER_KINDS = ("embedded", "bytes")  # or a path to a SentencePiece .model file
MODEL_TYPES = ("bpe", "unigram")
MIN_SP_VOCAB = 320  # 256 byte-fallback pieces + 4 specials + room for merges
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9]+\.[0-9]+\.[0-9]+)?$")


def default_config() -> ml_collections.ConfigDict:
    """Returns the data config with defaults (see the README for the meaning of each key).

    Keys:
      dataset: "shakespeare" (embedded corpus) | "c4/en" (or any prepared tfds name[/config][:version])
        | "text:/path/to/folder" (a folder of .txt / .jsonl files, read recursively).
      data_dir: tfds data directory (cache of built datasets and trained tokenizers); default
        $JAXSPARSE_DATA_DIR or ~/.cache/jaxsparse/tfds.
      tokenizer: "embedded" (SentencePiece trained on this corpus, cached) | "bytes" | path to a .model file.
      vocab_size: vocabulary size when training a SentencePiece model (ignored otherwise).
      tokenizer_model_type: "bpe" | "unigram" (SentencePiece model type when training).
      tokenizer_train_chars: characters of training text sampled to train the tokenizer.
      chunk_chars: local corpora are cut into documents of about this many characters (at paragraph
        boundaries) before the train/validation split.
      validation_fraction: fraction of documents of a local corpus held out as the validation split.
      shuffle_seed: seed of the per-epoch document shuffle (combined with the `seed` argument).
      read_threads: grain threads reading + tokenizing documents (per process).
      num_workers: grain worker processes (0 = in-process); changing it changes the packed stream.
      eval_batches: number of global batches in the fixed validation set.
    """
    cfg = ml_collections.ConfigDict()
    cfg.dataset = EMBEDDED_DATASET
    cfg.data_dir = os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)
    cfg.tokenizer = "embedded"
    cfg.vocab_size = 2048
    cfg.tokenizer_model_type = "bpe"
    cfg.tokenizer_train_chars = 2_000_000
    cfg.chunk_chars = 4000
    cfg.validation_fraction = 0.05
    cfg.shuffle_seed = 0
    cfg.read_threads = 4
    cfg.num_workers = 0
    cfg.eval_batches = 8
    return cfg


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A parsed `data.dataset` value.

    kind: "embedded" | "text" | "tfds"; path: the folder for "text"; name: the tfds name for "tfds".
    """

    kind: str
    path: str = ""
    name: str = ""


def parse_dataset(value: str) -> DatasetSpec:
    """Parses `data.dataset`; raises ValueError naming the field and the allowed forms."""
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"data.dataset={value!r} is not allowed: expected 'shakespeare', a tfds name "
            "such as 'c4/en', or 'text:/path/to/folder'."
        )
    if value == EMBEDDED_DATASET:
        return DatasetSpec(kind="embedded")
    if value.startswith(TEXT_PREFIX):
        path = value[len(TEXT_PREFIX) :]
        if not path:
            raise ValueError(f"data.dataset={value!r}: the folder after 'text:' is empty.")
        return DatasetSpec(kind="text", path=os.path.abspath(os.path.expanduser(path)))
    if _TFDS_NAME.match(value):
        return DatasetSpec(kind="tfds", name=value)
    raise ValueError(
        f"data.dataset={value!r} is not allowed: expected 'shakespeare', a tfds name "
        "'name[/config][:x.y.z]' such as 'c4/en', or 'text:/path/to/folder'."
    )


def data_dir_of(cfg: ml_collections.ConfigDict) -> str:
    """The configured data_dir with ~ expanded (local paths made absolute; gs:// kept)."""
    value = cfg.data_dir
    if not isinstance(value, str) or not value:
        raise ValueError(f"data.data_dir={value!r} is not allowed: expected a directory path.")
    if "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def validate(cfg: ml_collections.ConfigDict) -> DatasetSpec:
    """Checks every data key before any work starts; returns the parsed dataset spec.

    Raises ValueError / TypeError naming the field, its value and what is allowed.
    """
    required = set(default_config().keys())
    missing = sorted(required - set(cfg.keys()))
    if missing:
        raise ValueError(
            f"data config is missing keys {missing}; start from jaxsparse.data.default_config()."
        )
    spec = parse_dataset(cfg.dataset)
    data_dir_of(cfg)
    tok = cfg.tokenizer
    if not isinstance(tok, str) or not tok:
        raise ValueError(
            f"data.tokenizer={tok!r} is not allowed: expected one of {TOKENIZER_KINDS} "
            "or a path to a SentencePiece .model file."
        )
    _check_int(cfg, "vocab_size", MIN_SP_VOCAB)
    if cfg.tokenizer_model_type not in MODEL_TYPES:
        raise ValueError(
            f"data.tokenizer_model_type={cfg.tokenizer_model_type!r} is not allowed: "
            f"expected one of {MODEL_TYPES}."
        )
    _check_int(cfg, "tokenizer_train_chars", 10_000)
    _check_int(cfg, "chunk_chars", 64)
    frac = cfg.validation_fraction
    if not isinstance(frac, (int, float)) or not 0.0 < frac < 0.5:
        raise ValueError(f"data.validation_fraction={frac!r} is not allowed: expected a number in (0, 0.5).")
    _check_int(cfg, "shuffle_seed", 0)
    _check_int(cfg, "read_threads", 1)
    _check_int(cfg, "num_workers", 0)
    _check_int(cfg, "eval_batches", 1)
    return spec


def _check_int(cfg: ml_collections.ConfigDict, key: str, minimum: int) -> None:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"data.{key}={value!r} is not allowed: expected an integer >= {minimum}.")


def check_batch_args(seq_len: int, global_batch_size: int, process_index: int, process_count: int) -> int:
    """Validates the shape arguments of the pipeline; returns the local batch (rows per process)."""
    for name, value, minimum in (
        ("seq_len", seq_len, 1),
        ("global_batch_size", global_batch_size, 1),
        ("process_count", process_count, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}={value!r} is not allowed: expected an integer >= {minimum}.")
    if not isinstance(process_index, int) or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index!r} is not allowed: expected 0 <= process_index < "
            f"process_count={process_count}."
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} (config.train.batch_size) is not divisible "
            f"by process_count={process_count}: each process must load the same number of rows."
        )
    return global_batch_size // process_count
