"""Tokenizers: SentencePiece (trained on the corpus and cached, or loaded from a .model file) and bytes.

Every tokenizer has `.encode(str) -> list[int]`, `.decode(ids) -> str`, `.vocab_size`, `.bos_id`,
`.eos_id`, `.pad_id` and `.name`. Trained models use byte_fallback and identity normalization, so any
text round-trips exactly. Ids of a trained model: pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import ml_collections
import numpy as np
import sentencepiece as spm
from absl import logging
from etils import epath

from jaxsparse.data import data_config
from jaxsparse.errors import ConfigError

TOKENIZER_DIR = "jaxsparse_tokenizers"
TRAINER_VERSION = 1  # bump when the training recipe below changes (invalidates caches)
_MAX_PIECE_CHARS = 8192


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: pad 0, bos 1, eos 2, byte b -> b + 3; vocab_size 259. No files needed."""

    name = "bytes"
    pad_id, bos_id, eos_id = 0, 1, 2
    offset = 3
    vocab_size = 256 + offset

    def encode(self, text: str) -> list[int]:
        return (np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + self.offset).tolist()

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        arr = arr[(arr >= self.offset) & (arr < self.vocab_size)] - self.offset
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A SentencePiece model held as its serialized proto (so the tokenizer pickles to grain workers)."""

    def __init__(self, model_proto: bytes, name: str, source: str = "<memory>"):
        self._proto = model_proto
        self.name = name
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError / OSError with terse messages
            raise ConfigError(
                f"config.data.tokenizer: {source} could not be loaded as a SentencePiece model "
                f"({type(e).__name__}: {e})."
            ) from None
        self.vocab_size = int(self._sp.get_piece_size())
        self.bos_id, self.eos_id = int(self._sp.bos_id()), int(self._sp.eos_id())
        if self.bos_id < 0 or self.eos_id < 0:
            raise ConfigError(
                f"config.data.tokenizer: {source} has no BOS/EOS pieces (bos_id={self.bos_id}, "
                f"eos_id={self.eos_id}); packing needs both."
            )
        pad, unk = int(self._sp.pad_id()), int(self._sp.unk_id())
        self.pad_id = pad if pad >= 0 else max(unk, 0)  # padded positions carry weight 0 anyway

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._sp.decode([int(i) for i in np.asarray(ids).reshape(-1)])

    def __getstate__(self) -> dict[str, object]:
        return {"proto": self._proto, "name": self.name}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["proto"], state["name"])  # type: ignore[misc, arg-type]


def load_sentencepiece(path: str) -> SentencePieceTokenizer:
    """Loads a .model file (local path or gs://); ConfigError names the file."""
    data_config.check_tokenizer_value(path)
    p = epath.Path(os.path.expanduser(path))
    if not p.exists():
        raise ConfigError(f"config.data.tokenizer={path!r}: no such file; expected one of "
                          f"{data_config.TOKENIZER_KINDS} or the path of a SentencePiece .model file.")
    return SentencePieceTokenizer(p.read_bytes(), name=f"sentencepiece:{path}", source=str(path))


def _training_pieces(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """Yields paragraphs (each at most _MAX_PIECE_CHARS) from texts until max_chars are yielded."""
    total = 0
    for text in texts:
        for para in re.split(r"\n[ \t]*\n", text):
            for i in range(0, len(para), _MAX_PIECE_CHARS):
                piece = para[i : i + _MAX_PIECE_CHARS]
                if piece.strip():
                    yield piece
                    total += len(piece)
                    if total >= max_chars:
                        return


def train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "bpe",
    max_chars: int = 2_000_000,
    output_path: str | None = None,
    name: str = "sentencepiece",
) -> SentencePieceTokenizer:
    """Trains a SentencePiece model on up to `max_chars` characters of `texts`; optionally saves it.

    Deterministic for a given input (single trainer thread). Raises ConfigError naming `vocab_size`
    when the corpus cannot support the requested vocabulary.
    """
    buf = io.BytesIO()
    logging.info(
        "Training a SentencePiece %s tokenizer (vocab %d) on up to %d characters ...",
        model_type,
        vocab_size,
        max_chars,
    )
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_pieces(texts, max_chars),
            model_writer=buf,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,
            character_coverage=0.9995,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            user_defined_symbols=["\n"],
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            num_threads=1,
            max_sentence_length=4 * _MAX_PIECE_CHARS,
            train_extremely_large_corpus=False,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ConfigError(f"config.data.vocab_size={vocab_size}: SentencePiece training failed: {e}") from None
    tok = SentencePieceTokenizer(buf.getvalue(), name=name)
    if output_path:
        out = epath.Path(output_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
        tmp.write_bytes(buf.getvalue())
        tmp.rename(out)
        logging.info("Saved tokenizer to %s", out)
    return tok


def cache_path(cfg: ml_collections.ConfigDict, dataset_id: str) -> str:
    """Where the 'embedded' tokenizer of this dataset is cached: <data_dir>/jaxsparse_tokenizers/..."""
    key = repr(
        (dataset_id, cfg.vocab_size, cfg.tokenizer_model_type, cfg.tokenizer_train_chars, TRAINER_VERSION)
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", dataset_id).strip("_")
    name = f"{slug}-{cfg.tokenizer_model_type}{cfg.vocab_size}-{digest}.model"
    return os.path.join(data_config.data_dir_of(cfg), TOKENIZER_DIR, name)


def train_for_dataset(
    cfg: ml_collections.ConfigDict, output_path: str | None = None
) -> SentencePieceTokenizer:
    """Trains the configured tokenizer on the train split; saves to output_path (default: the cache)."""
    from jaxsparse.data import tfds_builder  # deferred: tfds is only needed for corpus tokenizers

    dataset_id, sources = tfds_builder.open_splits(cfg)
    out = output_path or cache_path(cfg, dataset_id)
    train = sources["train"]
    texts = (_as_str(train[i][tfds_builder.TEXT_FEATURE]) for i in range(len(train)))
    return train_sentencepiece(
        texts,
        vocab_size=cfg.vocab_size,
        model_type=cfg.tokenizer_model_type,
        max_chars=cfg.tokenizer_train_chars,
        output_path=out,
        name=f"embedded:{os.path.basename(out)}",
    )


def _as_str(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def get_tokenizer(cfg: ml_collections.ConfigDict) -> Tokenizer:
    """The configured tokenizer: 'bytes', 'embedded' (trained once per dataset and cached) or a file."""
    data_config.validate_data_config(cfg)
    if cfg.tokenizer == "bytes":
        return ByteTokenizer()
    if cfg.tokenizer != "embedded":
        return load_sentencepiece(cfg.tokenizer)
    from jaxsparse.data import tfds_builder

    dataset_id, _ = tfds_builder.open_splits(cfg)
    path = cache_path(cfg, dataset_id)
    if not epath.Path(path).exists():
        with tfds_builder.file_lock(path + ".lock"):
            if not epath.Path(path).exists():
                train_for_dataset(cfg, path)
    tok = load_sentencepiece(path)
    tok.name = f"embedded:{path}"
    return tok
