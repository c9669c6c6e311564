"""Command line of the data package.

  python -m jaxsparse.data inspect --config=CONFIG_FILE [--max_examples=N]
      Prints JSON about config.data with config.train.seq_len / batch_size: examples and tokens per split
      (train_tokens, validation_tokens), vocab_size, the tokenizer and the first packed sequence as text.
  python -m jaxsparse.data train_tokenizer [--config=CONFIG_FILE] [--dataset=...] [--data_dir=...]
      [--vocab_size=N] [--model_type=bpe|unigram] [--output=PATH.model]
      Trains a SentencePiece model on the train split; without --output it writes the cache file that
      data.tokenizer='embedded' loads. Prints JSON with the path and vocabulary size.
Config fields can be overridden as usual: --config.data.dataset=text:/path --config.train.seq_len=128.
Exit codes (jaxsparse.errors): 0 done; 2 bad input (missing or broken config file, unknown key, bad
value, missing corpus or tokenizer, ...), printed as one plain line with no traceback.
"""

from __future__ import annotations

import ast
import contextlib
import json
import sys
import time

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from jaxsparse.data import data_config
from jaxsparse.config_keys import check_overrides, override_keys, parse_config_flags
from jaxsparse.errors import ConfigError, entry_point

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
    "model_type", None, list(data_config.MODEL_TYPES), "train_tokenizer: overrides data.tokenizer_model_type."
)
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "train_tokenizer: where to write the .model file "
    "(default: the 'embedded' tokenizer cache under data_dir).",
)

COMMANDS = ("inspect", "train_tokenizer")


def _config() -> ml_collections.ConfigDict | None:
    cfg = _CONFIG.value
    if cfg is None:
        return None
    where = f"--config={config_flags.get_config_filename(flags.FLAGS['config'])}"
    load_error = getattr(cfg, "_error", None) if type(cfg).__name__ == "_ErrorConfig" else None
    if load_error is not None:  # config_flags defers a failed load (missing file, syntax error, ...)
        raise ConfigError(f"{where} could not be loaded: {type(load_error).__name__}: {_one_line(load_error)}")
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(f"{where}: get_config() returned a {type(cfg).__name__}, expected an "
                          "ml_collections.ConfigDict.")
    return cfg


def _one_line(err: BaseException) -> str:
    """The error's message on one line (ml_collections wraps some messages in a repr)."""
    text = str(err.args[0]) if isinstance(err, (KeyError, AttributeError)) and err.args else str(err)
    if text[:1] in "'\"":
        with contextlib.suppress(ValueError, SyntaxError):
            text = str(ast.literal_eval(text))
    return " ".join(text.split()) or type(err).__name__


def _data_config() -> ml_collections.ConfigDict:
    cfg = _config()
    if cfg is not None and "data" not in cfg:
        raise ConfigError("config.data is missing: expected a trainer config (see configs/default.py).")
    data = data_config.default_config() if cfg is None else cfg.data
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

    config = _config()
    if config is None:
        raise ConfigError("inspect needs --config=CONFIG_FILE (a trainer config with config.data).")
    max_examples = _MAX_EXAMPLES.value or None
    return inspect_data(config, max_examples=max_examples)


def _train_tokenizer() -> dict:
    from jaxsparse.data import tfds_builder
    from jaxsparse.data.tokenizer import cache_path, train_for_dataset

    data = _data_config()
    data_config.validate_data_config(data)
    start = time.time()
    dataset_id, _ = tfds_builder.open_splits(data)
    out = _OUTPUT.value or cache_path(data, dataset_id)
    tok = train_for_dataset(data, out)
    return {
        "tokenizer": out,
        "dataset": data.dataset,
        "vocab_size": tok.vocab_size,
        "model_type": data.tokenizer_model_type,
        "seconds": round(time.time() - start, 2),
    }


@entry_point
def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise ConfigError(
            f"usage: python -m jaxsparse.data {{{','.join(COMMANDS)}}} --config=CONFIG_FILE "
            f"[flags]; got {argv[1:]}"
        )
    with contextlib.redirect_stdout(sys.stderr):  # tfds prints build progress; stdout is JSON only
        result = _inspect() if argv[1] == "inspect" else _train_tokenizer()
    sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def _config_arg(argv: list[str]) -> str | None:
    """The `--config=FILE[:args]` of argv (also written `--config FILE`), or None."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg
        if arg == "--config" and i + 1 < len(argv):
            return f"--config={argv[i + 1]}"
    return None


def _check_override_keys(argv: list[str]) -> None:
    """Every --config.<key> override must name a value of the config file's own config (loaded
    alone first); a file that does not load is reported by the full parse."""
    config_arg = _config_arg(argv)
    if config_arg is None or not override_keys(argv):
        return
    try:
        base = parse_config_flags([argv[0], config_arg])
    except Exception:  # noqa: BLE001 - the full parse below names the file's own error
        return
    if isinstance(base, ml_collections.ConfigDict):
        check_overrides(base, argv)


@entry_point(raise_exit=True)
def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing; the config file is loaded here, so any error is bad input: one line, exit 2."""
    _check_override_keys(argv)
    try:
        return flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001 - a broken config file can raise anything
        raise ConfigError(f"bad command line (--config file, --config.* override or flag): "
                          f"{type(err).__name__}: {_one_line(err)}") from None


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
