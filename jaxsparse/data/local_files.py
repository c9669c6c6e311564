"""Reading corpus files safely: regular files only, bounded sizes, JSON lines streamed (compressed or not).

A corpus folder may hold things that are not files: a FIFO blocks whoever opens it until a writer comes,
and a symlink to /dev/zero never ends. So every corpus file is stat'ed before it is listed and refused
unless it is a regular file (a symlink to one is fine), then opened without blocking and checked again
on the open descriptor. What one file may hold is bounded:
  MAX_TEXT_FILE_BYTES (1 GiB): a plain-text file, which is read whole and cut into chunks;
  MAX_LINE_BYTES (64 MiB): one JSON line. JSON lines files of any size are streamed line by line,
    `.jsonl.gz` and `.jsonl.zst` decompressed on the fly (never whole files in memory).
Every refusal is a ConfigError naming the file and what is allowed.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from jaxsparse.data import sources
from jaxsparse.errors import ConfigError

MAX_TEXT_FILE_BYTES = 1 << 30
MAX_LINE_BYTES = 64 << 20
COMPRESSIONS = {".jsonl": "", ".jsonl.gz": "gzip", ".jsonl.zst": "zstd"}  # JSON lines suffix -> codec
_BLOCK = 1 << 16
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))
_ALLOWED = "corpora are read from regular files only (a symlink to one is fine): move it out of the folder"


def refused(path: str, problem: str) -> ConfigError:
    """The ConfigError of a corpus file that cannot be read: `problem` says why and what is allowed."""
    return ConfigError(f"config.data.dataset: the corpus file {path} {problem}")


def _check_mode(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise refused(path, f"is {kind}, not a regular file; {_ALLOWED}.")


def check_regular(path: str, max_bytes: int | None = None) -> os.stat_result:
    """The stat of `path` (symlinks followed) if it is a regular file of at most `max_bytes`; else
    ConfigError naming the file: a FIFO, device, socket, dangling symlink, unreadable or too large."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        problem = "is a symlink to a missing file" if os.path.islink(path) else "disappeared while listing"
        raise refused(path, f"{problem}; {_ALLOWED}.") from None
    except OSError as e:
        raise refused(path, f"cannot be read ({e.strerror}).") from None
    _check_mode(path, st)
    if max_bytes is not None and st.st_size > max_bytes:
        raise refused(path, f"holds {st.st_size} bytes, more than the {max_bytes} bytes one plain-text "
                       "file may hold; split it into smaller files, or into JSON lines (streamed).")
    return st


def open_regular(path: str) -> BinaryIO:
    """Opens `path` for binary reading without blocking (a FIFO would block a plain open) and refuses
    anything but a regular file, checked on the open descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise refused(path, f"cannot be opened ({e.strerror}).") from None
    try:
        _check_mode(path, os.fstat(fd))
    except ConfigError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_text_file(path: str) -> bytes:
    """The bytes of a plain-text corpus file, refused above MAX_TEXT_FILE_BYTES (checked while reading)."""
    with open_regular(path) as fh:
        raw = fh.read(MAX_TEXT_FILE_BYTES + 1)
    if len(raw) > MAX_TEXT_FILE_BYTES:
        check_regular(path, MAX_TEXT_FILE_BYTES)
        raise refused(path, f"holds more than the {MAX_TEXT_FILE_BYTES} bytes one plain-text file may hold.")
    return raw


def _codec(compression: str, path: str) -> tuple[Callable[[], Any] | None, tuple[type[BaseException], ...]]:
    """(a factory of decompressor objects with .decompress/.eof/.unused_data, the errors it raises)."""
    if not compression:
        return None, ()
    if compression == "gzip":
        return (lambda: zlib.decompressobj(wbits=31)), (zlib.error,)
    zstd = sources.require("zstandard", "zstd", f"the compressed corpus file {path}")
    return zstd.ZstdDecompressor().decompressobj, (zstd.ZstdError,)


def _blocks(fh: BinaryIO, new_decompressor: Callable[[], Any] | None) -> Iterator[bytes]:
    """The file's bytes, decompressed block by block; concatenated gzip members / zstd frames are read
    in turn. Raises EOFError when the file ends inside one (a truncated file)."""
    if new_decompressor is None:
        yield from iter(lambda: fh.read(_BLOCK), b"")
        return
    obj, inside = new_decompressor(), False
    chunk = fh.read(_BLOCK)
    while chunk:
        out, inside = obj.decompress(chunk), True
        if out:
            yield out
        if obj.eof:
            chunk, obj, inside = obj.unused_data, new_decompressor(), False
            chunk = chunk or fh.read(_BLOCK)
        else:
            chunk = fh.read(_BLOCK)
    if inside:
        raise EOFError("the file ends inside a compressed stream (truncated?)")


def iter_lines(path: str, compression: str = "") -> Iterator[bytes]:
    """The lines of a JSON lines file (each with its b"\\n", if any), streamed; `compression` is "",
    "gzip" or "zstd". ConfigError for a corrupt or truncated file and for a line over MAX_LINE_BYTES."""
    new_decompressor, codec_errors = _codec(compression, path)
    buf, lineno = bytearray(), 0
    with open_regular(path) as fh:
        try:
            for block in _blocks(fh, new_decompressor):
                buf += block
                start = 0
                while (end := buf.find(b"\n", start)) >= 0:
                    lineno += 1
                    yield bytes(buf[start : end + 1])
                    start = end + 1
                del buf[:start]
                if len(buf) > MAX_LINE_BYTES:
                    raise refused(path, f"has a line (line {lineno + 1}) longer than the {MAX_LINE_BYTES} "
                                   "bytes one JSON line may hold.")
        except (OSError, EOFError, *codec_errors) as e:
            what = f"{compression} " if compression else ""
            raise refused(path, f"is not a valid {what}file after line {lineno} "
                           f"({type(e).__name__}: {e}).") from None
    if buf:
        yield bytes(buf)
