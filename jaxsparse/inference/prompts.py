"""Prompts to token batches: strict encoding (BOS first, as in training) and left padding."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxsparse.errors import ConfigError


def unknown_id(tokenizer) -> int | None:
    """The id a SentencePiece tokenizer gives text it cannot represent (None: it has none, e.g. bytes)."""
    sp = getattr(tokenizer, "_sp", None)
    if sp is None:
        return None
    unk = int(sp.unk_id())
    return unk if unk >= 0 else None


def encode_strict(tokenizer, text: str, what: str) -> list[int]:
    """encode(text), refusing text the tokenizer cannot represent (invalid Unicode, or pieces that
    become the unknown id of a tokenizer without byte fallback). `what` names the input in errors."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(f"{what}: not valid Unicode text at character {err.start} "
                          f"({text[err.start:err.end]!r}); the tokenizer encodes UTF-8 text only") from None
    ids = tokenizer.encode(text)
    unk = unknown_id(tokenizer)
    if unk is not None and unk in ids:
        pieces = sorted({p for i, p in zip(ids, tokenizer._sp.encode(text, out_type=str)) if i == unk})
        raise ConfigError(f"{what}: the tokenizer ({tokenizer.name}) cannot encode {pieces!r}: it maps "
                          "them to its unknown id and has no byte fallback; remove those characters")
    return list(ids)


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(int32 [B', P] tokens left-padded with pad_id, int32 [B'] lengths), P = the longest row.

    B' is len(rows) rounded up to `multiple` (the data-parallel shard count) by repeating the last row;
    callers drop the extra rows from the output.
    """
    rows = list(rows) + [rows[-1]] * (-len(rows) % multiple)
    width = max(len(r) for r in rows)
    tokens = np.full((len(rows), width), pad_id, np.int32)
    for i, r in enumerate(rows):
        tokens[i, width - len(r):] = r
    return tokens, np.asarray([len(r) for r in rows], np.int32)
