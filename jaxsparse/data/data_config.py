"""The data section of a training config, and its validation.

`KEYS` is the single source of truth for the data keys, their defaults and docs; `default_config()`
builds them and the trainer's config files embed it as `config.data`. Sequence length, global batch size
and the number of evaluation batches are *not* data keys: the trainer keeps them at
`config.train.seq_len`, `config.train.batch_size` and `config.eval.batches` and passes them to the
pipeline functions.

Every check raises `jaxsparse.errors.ConfigError` naming the field (`config.data.KEY`), the value and
what is allowed, before anything is built or computed.
"""

from __future__ import annotations

import dataclasses
import os
import re

import ml_collections

from jaxsparse.config_keys import check_tree
from jaxsparse.data import sources
from jaxsparse.errors import ConfigError

# Environment variable that overrides the default tfds data directory (the cache of built datasets).
DATA_DIR_ENV = "JAXSPARSE_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/jaxsparse/tfds"
EMBEDDED_DATASET = "shakespeare"
TOKENIZER_KINDS = ("embedded", "bytes")  # or a path to a SentencePiece .model file
MODEL_TYPES = ("bpe", "unigram")
MIN_SP_VOCAB = 320  # 256 byte-fallback pieces + 4 specials + room for merges
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9]+\.[0-9]+\.[0-9]+)?$")
SECTION = "config.data"


# key -> (default, one-line doc): the one source of the data keys (`default_config` builds them,
# `--print_config` prints the docs). data_dir's default is read from $JAXSPARSE_DATA_DIR when set.
KEYS: dict[str, tuple[object, str]] = {
    "dataset": (EMBEDDED_DATASET, "'shakespeare' (embedded corpus) | 'c4/en' (or any prepared tfds "
                "name[/config][:version]) | 'text:/path/to/folder' (.txt, .jsonl, .jsonl.gz and .jsonl.zst "
                "files, read recursively) | 'parquet:/path/to/folder' or 'parquet:/path/*.parquet' | "
                "'<prefix>:...' of a source registered with jaxsparse.data.sources.register"),
    "data_dir": (DEFAULT_DATA_DIR, "tfds data directory (cache of built datasets and trained "
                 f"tokenizers); default ${DATA_DIR_ENV} or {DEFAULT_DATA_DIR}"),
    "tokenizer": ("embedded", "'embedded' (SentencePiece trained on this corpus, cached) | 'bytes' | "
                  "path to a .model file"),
    "vocab_size": (2048, "vocabulary size when training a SentencePiece model (ignored otherwise)"),
    "tokenizer_model_type": ("bpe", "'bpe' | 'unigram' (SentencePiece model type when training)"),
    "tokenizer_train_chars": (2_000_000, "characters of training text sampled to train the tokenizer"),
    "text_column": ("text", "the column (parquet) or field (JSON lines) that holds each document's text"),
    "chunk_chars": (4000, "local corpora are cut into documents of about this many characters (at "
                    "paragraph boundaries) before the train/validation split"),
    "validation_fraction": (0.05, "fraction of documents of a local corpus held out as the validation split"),
    "shuffle_seed": (0, "seed of the per-epoch document shuffle (combined with the `seed` argument)"),
    "shards": (8, "logical data shards; shard s fills rows [s*B/shards, (s+1)*B/shards) of every global "
               "batch of B rows, so the data of a step never depends on the number of processes. Must "
               "divide config.train.batch_size and be divisible by the process count"),
    "read_threads": (4, "threads reading + tokenizing documents (per process)"),
}


def default_config() -> ml_collections.ConfigDict:
    """The data config with every key of `KEYS` at its default (data_dir: $JAXSPARSE_DATA_DIR when set)."""
    cfg = ml_collections.ConfigDict({key: default for key, (default, _) in KEYS.items()})
    cfg.data_dir = os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)
    return cfg


def with_defaults(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `cfg` with every data key it lacks at its default, so that a config saved before a key
    existed (in a checkpoint's meta) reads as it was trained; unknown keys are kept, for the checks."""
    full = default_config()
    full.update(cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg))
    return full


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A parsed `data.dataset` value.

    kind: "embedded" | "tfds" | a local source's prefix ("text", "parquet", ...; see
    `jaxsparse.data.sources`); path: what follows the prefix, absolute; name: the tfds name for "tfds".
    """

    kind: str
    path: str = ""
    name: str = ""


def _dataset_forms() -> str:
    local = "; ".join(f"'{p}:' followed by {sources.get(p).forms}" for p in sources.prefixes())
    return (f"'shakespeare', a prepared tfds name 'name[/config][:x.y.z]' such as 'c4/en', or a local corpus: "
            f"{local}")


def parse_dataset(value: object) -> DatasetSpec:
    """Parses `data.dataset` (no file system access); raises ConfigError naming the allowed forms."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{SECTION}.dataset={value!r} is not allowed: expected {_dataset_forms()}.")
    if value == EMBEDDED_DATASET:
        return DatasetSpec(kind="embedded")
    prefix, colon, path = value.partition(":")
    if colon and sources.get(prefix) is not None:
        if not path:
            raise ConfigError(f"{SECTION}.dataset={value!r}: the path after '{prefix}:' is empty; expected "
                              f"{sources.get(prefix).forms}.")
        return DatasetSpec(kind=prefix, path=os.path.abspath(os.path.expanduser(path)))
    if _TFDS_NAME.match(value):
        return DatasetSpec(kind="tfds", name=value)
    raise ConfigError(f"{SECTION}.dataset={value!r} is not allowed: expected {_dataset_forms()}.")


def read_options(cfg: ml_collections.ConfigDict) -> sources.ReadOptions:
    """How a local corpus is cut into documents (config.data.chunk_chars, config.data.text_column)."""
    return sources.ReadOptions(chunk_chars=cfg.chunk_chars, text_column=cfg.text_column)


def data_dir_of(cfg: ml_collections.ConfigDict) -> str:
    """The configured data_dir with ~ expanded (local paths made absolute; gs:// kept)."""
    value = cfg.data_dir
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{SECTION}.data_dir={value!r} is not allowed: expected a directory path.")
    if "://" in value:
        return value
    path = os.path.abspath(os.path.expanduser(value))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{SECTION}.data_dir={value!r} exists but is not a directory: expected a "
                          "directory (created if missing) for built datasets and tokenizers.")
    return path


def validate_data_config(cfg: ml_collections.ConfigDict) -> DatasetSpec:
    """Checks that `cfg` sets only data keys (`config_keys.check_tree`), then every value
    (`validate_data_values`); returns the parsed dataset spec. Raises ConfigError naming the field,
    its value and what is allowed."""
    check_tree(cfg, default_config(), root=SECTION)
    return validate_data_values(cfg)


def validate_data_values(cfg: ml_collections.ConfigDict, global_batch_size: int | None = None) -> DatasetSpec:
    """Checks every data value in one pass, once the keys are known to be data keys (the trainer checks
    the whole config's, data's included): every key present, each value, with `global_batch_size` the
    batch layout (`check_batch_layout`), and last that a local corpus (`text:`, `parquet:`, ...) exists
    and holds input files that its source accepts (see `jaxsparse.data.sources`); returns the parsed
    dataset spec. Raises ConfigError naming the field, its value and what is allowed.

    A tokenizer *file* is checked where it is loaded (`tokenizer.load_sentencepiece`), so that a run
    planned elsewhere (`--dry_run` with a fixed config.model.vocab_size) need not have it.
    """
    missing = sorted(set(KEYS) - set(cfg.keys()))
    if missing:
        raise ConfigError(f"{SECTION} is missing keys {missing}; start from jaxsparse.data.default_config().")
    spec = parse_dataset(cfg.dataset)
    if not isinstance(cfg.text_column, str) or not cfg.text_column:
        raise ConfigError(f"{SECTION}.text_column={cfg.text_column!r} is not allowed: expected the name of "
                          "the column (parquet) or field (JSON lines) that holds the text, such as 'text'.")
    data_dir_of(cfg)
    if not isinstance(cfg.tokenizer, str) or not cfg.tokenizer:
        raise ConfigError(f"{SECTION}.tokenizer={cfg.tokenizer!r} is not allowed: expected one of "
                          f"{TOKENIZER_KINDS} or the path of a SentencePiece .model file.")
    _check_int(cfg, "vocab_size", MIN_SP_VOCAB)
    if cfg.tokenizer_model_type not in MODEL_TYPES:
        raise ConfigError(f"{SECTION}.tokenizer_model_type={cfg.tokenizer_model_type!r} is not allowed: "
                          f"expected one of {MODEL_TYPES}.")
    _check_int(cfg, "tokenizer_train_chars", 10_000)
    _check_int(cfg, "chunk_chars", 64)
    frac = cfg.validation_fraction
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < frac < 0.5:
        raise ConfigError(f"{SECTION}.validation_fraction={frac!r} is not allowed: expected a number in "
                          "(0, 0.5).")
    _check_int(cfg, "shuffle_seed", 0)
    _check_int(cfg, "shards", 1)
    if global_batch_size is not None:
        check_batch_layout(cfg, global_batch_size)
    _check_int(cfg, "read_threads", 1)
    if spec.kind not in ("embedded", "tfds"):
        options = read_options(cfg)
        sources.get(spec.kind).list_files(spec.path, options)
    return spec


def check_tokenizer_value(value: object) -> None:
    """'embedded', 'bytes', or an existing SentencePiece .model file (remote gs:// paths not checked)."""
    allowed = f"expected one of {TOKENIZER_KINDS} or the path of a SentencePiece .model file"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{SECTION}.tokenizer={value!r} is not allowed: {allowed}.")
    if value in TOKENIZER_KINDS or "://" in value:
        return
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.exists(path):
        raise ConfigError(f"{SECTION}.tokenizer={value!r}: no such file ({path}); {allowed}.")
    if not os.path.isfile(path):
        raise ConfigError(f"{SECTION}.tokenizer={value!r}: {path} is a directory, not a file; {allowed}.")


def _check_int(cfg: ml_collections.ConfigDict, key: str, minimum: int) -> None:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{SECTION}.{key}={value!r} is not allowed: expected an integer >= {minimum}.")


def check_batch_layout(cfg: ml_collections.ConfigDict, global_batch_size: int, process_count: int = 1) -> int:
    """Checks config.data.shards against the global batch and the process count; returns the rows each
    logical shard fills per global batch (global_batch_size // shards).

    Each shard fills whole rows of every batch (so shards must divide config.train.batch_size) and each
    process runs whole shards (so the process count must divide shards).
    """
    shards = cfg.shards
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"{SECTION}.shards={shards!r} is not allowed: expected an integer >= 1.")
    fits = [d for d in range(1, global_batch_size + 1) if global_batch_size % d == 0 and d % process_count == 0]
    hint = f" (e.g. {max([d for d in fits if d <= shards] or fits[:1])})" if fits else ""
    if global_batch_size % shards:
        raise ConfigError(
            f"{SECTION}.shards={shards} does not divide config.train.batch_size={global_batch_size}: each "
            f"logical data shard fills batch_size/shards whole rows of every batch; set {SECTION}.shards "
            f"to a divisor of {global_batch_size} that the {process_count} process(es) divide{hint}.")
    if shards % process_count:
        raise ConfigError(
            f"{SECTION}.shards={shards} is not divisible by the {process_count} processes: each process "
            f"runs whole logical shards; set {SECTION}.shards to a multiple of {process_count} that divides "
            f"config.train.batch_size={global_batch_size}{hint}.")
    return global_batch_size // shards


def check_batch_args(seq_len: int, global_batch_size: int, process_index: int, process_count: int) -> int:
    """Validates the shape arguments of the pipeline; returns the local batch (rows per process)."""
    for name, value, minimum in (
        ("config.train.seq_len", seq_len, 1),
        ("config.train.batch_size", global_batch_size, 1),
        ("process_count", process_count, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{name}={value!r} is not allowed: expected an integer >= {minimum}.")
    if not isinstance(process_index, int) or not 0 <= process_index < process_count:
        raise ConfigError(f"process_index={process_index!r} is not allowed: expected 0 <= process_index < "
                          f"process_count={process_count}.")
    if global_batch_size % process_count:
        raise ConfigError(f"config.train.batch_size={global_batch_size} is not divisible by the "
                          f"{process_count} processes: each process must load the same number of rows.")
    return global_batch_size // process_count
