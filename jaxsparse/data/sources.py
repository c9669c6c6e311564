"""Local corpus sources: what `data.dataset="<prefix>:<where>"` reads, one module per source.

A source lists its input files and reads each into documents; the corpus builder
(`jaxsparse.data.tfds_builder`) does the rest the same way for every source: the content fingerprint
of the cache, the hashed train/validation split, the tfds build, and the shuffled logical shards. So a
new source is one module that calls `register(Source(...))`; `data.dataset="<prefix>:..."` then
reads it wherever that module has been imported (the built-in ones are imported on first use).

Built in: `text:` (a folder of .txt and JSON lines files, `jaxsparse.data.text_source`) and
`parquet:` (a folder or glob of parquet files, `jaxsparse.data.parquet_source`).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

from jaxsparse.errors import ConfigError

log = logging.getLogger(__name__)

_BUILTIN = {"text": "jaxsparse.data.text_source", "parquet": "jaxsparse.data.parquet_source"}


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    """One input file: `path` absolute, `rel` relative to the corpus root (used in document keys)."""

    path: str
    rel: str


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How documents are cut: `chunk_chars` for plain text, `text_column` names the text of a record
    (a JSON lines field, a parquet column)."""

    chunk_chars: int
    text_column: str = "text"


class DecodeReport:
    """Counts input problems (non-UTF-8 files, records without text) and warns once with the totals."""

    def __init__(self) -> None:
        self.non_utf8: list[str] = []
        self.bad_records: list[str] = []

    def warn(self, text_column: str = "text") -> None:
        _warn_counted(self.non_utf8, "corpus file(s) are not valid UTF-8; undecodable bytes were "
                      "replaced with U+FFFD", UnicodeWarning)
        _warn_counted(self.bad_records, f"record(s) skipped (no string {text_column!r}: a JSON line "
                      "that is not an object with it, or a null parquet value)", UserWarning)


def _warn_counted(items: list[str], what: str, category: type[Warning]) -> None:
    """One warning with the count of `items` and the first ten of them (nothing if empty)."""
    if not items:
        return
    msg = f"{len(items)} {what}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}"
    warnings.warn(msg, category, stacklevel=3)
    log.warning(msg)


@dataclasses.dataclass(frozen=True)
class Source:
    """A local corpus source.

    prefix: the `data.dataset` prefix before ":" (e.g. "parquet").
    forms: what may follow the prefix, for error messages (e.g. "a folder or glob of .parquet files").
    list_files(path, options) -> files sorted by `rel`: checks that `path` (absolute, after the prefix)
      holds input; raises ConfigError naming `config.data.dataset`, the value and what is allowed.
      Called before anything is built, also by `--dry_run`, so it must be cheap (no full reads).
    read(file, options, report) -> (key, text) documents of one file in a fixed order; keys are unique
      and stable ("<rel>#<n>"), as they decide the train/validation split. Raises ConfigError for a
      corrupt file; counts recoverable problems in `report`.
    """

    prefix: str
    forms: str
    list_files: Callable[[str, ReadOptions], list[CorpusFile]]
    read: Callable[[CorpusFile, ReadOptions, DecodeReport], Iterator[tuple[str, str]]]


SOURCES: dict[str, Source] = {}


def register(source: Source) -> None:
    """Makes `data.dataset="<source.prefix>:..."` read `source` (a later registration replaces one)."""
    SOURCES[source.prefix] = source


def get(prefix: str) -> Source | None:
    """The source of `prefix`, importing a built-in one on first use; None when there is none."""
    if prefix not in SOURCES and prefix in _BUILTIN:
        importlib.import_module(_BUILTIN[prefix])
    return SOURCES.get(prefix)


def prefixes() -> list[str]:
    """Every known prefix, built-in and registered."""
    return sorted(set(_BUILTIN) | set(SOURCES))


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """Imports an optional dependency; raises ConfigError naming the setup.py extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{needed_for} needs the Python package {module!r} (jaxsparse's optional extra {extra!r}), which is "
            f"not installed: run `python3 -m pip install -c constraints.txt -e \".[{extra}]\"` in the "
            "jaxsparse checkout.") from None


def dataset_error(prefix: str, path: str, problem: str) -> ConfigError:
    """The ConfigError of a bad input under `data.dataset="<prefix>:<path>"`."""
    return ConfigError(f"config.data.dataset={f'{prefix}:{path}'!r}: {problem}")
