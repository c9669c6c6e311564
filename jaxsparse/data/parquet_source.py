"""The `parquet:` source: parquet files with a text column, such as FineWeb-Edu's shards.

`data.dataset="parquet:<folder or glob>"` reads every `.parquet` file below a folder (recursively), or
every file a glob matches (`**` crosses folders; folders it matches are passed over), or one file.
Each non-null, non-blank value of the column `data.text_column` (default "text"; it must be a string
column) is one document, keyed "<rel>#<row number>" with <rel> the path relative to the folder (for a
glob: its folder before the first wildcard). Files are streamed one row group at a time, a batch of
rows at a time, reading only the text column, so a file of any size is never held in memory whole.
Needs the `parquet` extra (pyarrow).

Checked when the corpus is listed, before anything is built: each file is a regular file with a
readable parquet footer, the column exists with a string type, and no row group's text column holds
more than MAX_ROW_GROUP_TEXT_BYTES (uncompressed).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from types import ModuleType

from jaxsparse.data import local_files, sources
from jaxsparse.data.sources import CorpusFile, DecodeReport, ReadOptions

PREFIX = "parquet"
FORMS = "a folder or glob of .parquet files (or one file)"
MAX_ROW_GROUP_TEXT_BYTES = 1 << 30
_BATCH_ROWS = 1024
_CHECKED: dict[tuple, None] = {}  # (path, size, mtime_ns, inode, column): the footer passed the checks


def _pyarrow(path: str) -> tuple[ModuleType, ModuleType]:
    needed_for = f"config.data.dataset={f'{PREFIX}:{path}'!r}"
    pa = sources.require("pyarrow", "parquet", needed_for)
    return pa, sources.require("pyarrow.parquet", "parquet", needed_for)


def _candidates(path: str) -> tuple[str, list[str]]:
    """(root that relative paths start from, matched paths sorted)."""
    if os.path.isdir(path):
        found = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            found += [os.path.join(dirpath, n) for n in filenames if n.endswith(".parquet") and n[0] != "."]
        return path, sorted(found)
    if glob.has_magic(path):
        root = path
        while glob.has_magic(root):
            root = os.path.dirname(root)
        return root, sorted(m for m in glob.glob(path, recursive=True) if not os.path.isdir(m))
    if os.path.lexists(path):
        return os.path.dirname(path), [path]
    raise sources.dataset_error(PREFIX, path, f"no such folder or file; expected 'parquet:' followed by {FORMS}.")


def _check_file(full: str, column: str, pa: ModuleType, pq: ModuleType) -> None:
    """Refuses a file whose footer cannot be read, that lacks `column`, whose `column` is not a string,
    or one of whose row groups holds more than MAX_ROW_GROUP_TEXT_BYTES of it."""
    st = local_files.check_regular(full)
    key = (full, st.st_size, st.st_mtime_ns, st.st_ino, column)
    if key in _CHECKED:
        return
    with local_files.open_regular(full) as fh:
        try:
            meta = pq.ParquetFile(fh).metadata
            schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as e:
            raise local_files.refused(full, f"is not a readable parquet file ({type(e).__name__}: {e}).") from None
    if column not in schema.names:
        raise local_files.refused(full, f"has no column config.data.text_column={column!r}; its columns are "
                                  f"{schema.names}.")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise local_files.refused(full, f"has a column config.data.text_column={column!r} that holds {kind}, "
                                  f"not strings; choose a string column of {schema.names}.")
    leaf = next(j for j in range(meta.num_columns) if meta.schema.column(j).path == column)
    for g in range(meta.num_row_groups):
        size = meta.row_group(g).column(leaf).total_uncompressed_size
        if size > MAX_ROW_GROUP_TEXT_BYTES:
            raise local_files.refused(full, f"has a row group ({g}) holding {size} bytes of {column!r}, more "
                                      f"than the {MAX_ROW_GROUP_TEXT_BYTES} one row group may hold; rewrite "
                                      "the file with smaller row groups.")
    _CHECKED[key] = None


def list_files(path: str, options: ReadOptions) -> list[CorpusFile]:
    """The parquet files of `path` (folder, glob or file), sorted by relative path, each checked (see
    the module docstring); ConfigError naming the file and the problem otherwise."""
    pa, pq = _pyarrow(path)
    root, matched = _candidates(path)
    if not matched:
        raise sources.dataset_error(PREFIX, path, f"matches no .parquet files; expected 'parquet:' followed by "
                                    f"{FORMS}.")
    files = [CorpusFile(m, os.path.relpath(m, root)) for m in matched]
    for f in files:
        _check_file(f.path, options.text_column, pa, pq)
    return sorted(files, key=lambda f: f.rel)


def read(f: CorpusFile, options: ReadOptions, report: DecodeReport) -> Iterator[tuple[str, str]]:
    """The (key, text) documents of one parquet file, row group by row group (see the module docstring)."""
    pa, pq = _pyarrow(f.path)
    row = 0
    with local_files.open_regular(f.path) as fh:
        try:
            batches = pq.ParquetFile(fh, pre_buffer=False).iter_batches(batch_size=_BATCH_ROWS,
                                                                   columns=[options.text_column])
            for batch in batches:
                for text in batch.column(0).to_pylist():
                    if text is None:
                        report.bad_records.append(f"{f.rel}:row {row}")
                    elif text.strip():
                        yield f"{f.rel}#{row}", text
                    row += 1
        except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
            raise local_files.refused(f.path, f"is not a readable parquet file after row {row} "
                                      f"({type(e).__name__}: {e}).") from None


sources.register(sources.Source(prefix=PREFIX, forms=FORMS, list_files=list_files, read=read))
