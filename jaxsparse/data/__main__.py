"""Command line of the data package.

  python -m jaxsparse.data inspect --config=CONFIG_FILE [--max_examples=N]
      Prints JSON about config.data with config.train.seq_len / batch_size: examples and tokens per split
      (train_tokens, validation_tokens), vocab_size, the tokenizer and the first packed sequence as text.
  python -m jaxsparse.data train_tokenizer [--config=CONFIG_FILE] [--dataset=...] [--data_dir=...]
      [--vocab_size=N] [--model_type=bpe|unigram] [--output=PATH.model]
      Trains a SentencePiece model on the train split; without --output it writes the cache file that
      data.tokenizer='embedded' loads. Prints JSON with the path and vocabulary size.
Config fields can be overridden as usual: --config.data.dataset=text:/path --config.train.seq_len=128.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from jaxsparse.data import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Trainer config file (with config.data, " "config.train.seq_len and config.train.batch_size).",
)
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples",
    100_000,
    "inspect: documents tokenized per split " "(token counts of larger splits are extrapolated); 0 = all.",
)
_DATASET = flags.DEFINE_string("dataset", None, "train_tokenizer: overrides data.dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "train_tokenizer: overrides data.data_dir.")
_VOCAB = flags.DEFINE_integer("vocab_size", None, "train_tokenizer: overrides data.vocab_size.")
_MODEL_TYPE = flags.DEFINE_enum(
    "model_type", None, list(config_lib.MODEL_TYPES), "train_tokenizer: overrides data.tokenizer_model_type."
)
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "train_tokenizer: where to write the .model file "
    "(default: the 'embedded' tokenizer cache under data_dir).",
)

COMMANDS = ("inspect", "train_tokenizer")


def _data_config() -> ml_collections.ConfigDict:
    cfg = _CONFIG.value
    data = config_lib.default_config() if cfg is None else cfg.data
    for key, flag in (
        ("dataset", _DATASET),
        ("data_dir", _DATA_DIR),
        ("vocab_size", _VOCAB),
        ("tokenizer_model_type", _MODEL_TYPE),
    ):
        if flag.value is not None:
            data[key] = flag.value
    return data


def _inspect() -> dict:
    from jaxsparse.data.inspect import inspect_data

    if _CONFIG.value is None:
        raise app.UsageError("inspect needs --config=CONFIG_FILE (a trainer config with config.data).")
    max_examples = _MAX_EXAMPLES.value or None
    return inspect_data(_CONFIG.value, max_examples=max_examples)


def _train_tokenizer() -> dict:
    from jaxsparse.data import tfds_builder
    from jaxsparse.data.tokenizer import cache_path, train_for_dataset

    data = _data_config()
    config_lib.validate(data)
    start = time.time()
    dataset_id, _ = tfds_builder.open_dataset(data)
    out = _OUTPUT.value or cache_path(data, dataset_id)
    tok = train_for_dataset(data, out)
    return {
        "tokenizer": out,
        "dataset": data.dataset,
        "vocab_size": tok.vocab_size,
        "model_type": data.tokenizer_model_type,
        "seconds": round(time.time() - start, 2),
    }


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(
            f"usage: python -m jaxsparse.data {{{','.join(COMMANDS)}}} --config=CONFIG_FILE "
            f"[flags]; got {argv[1:]}"
        )
    with contextlib.redirect_stdout(sys.stderr):  # tfds prints build progress; stdout is JSON only
        result = _inspect() if argv[1] == "inspect" else _train_tokenizer()
    sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    app.run(main)
