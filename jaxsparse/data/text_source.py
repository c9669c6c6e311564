"""The `text:` source: a folder of plain-text and JSON lines files, read recursively.

`data.dataset="text:/path/to/folder"` reads every file below the folder whose name ends in
  .txt        cut at paragraph (blank-line) boundaries into documents of about `chunk_chars`
              characters; key "<rel>#<chunk index>";
  .jsonl, .jsonl.gz, .jsonl.zst
              one JSON object per line, its `text_column` field (default "text") one document; key
              "<rel>#<line number>"; streamed line by line (.zst needs the `zstd` extra).
Hidden files (".name") and other suffixes are skipped (logged); anything that is not a regular file
is refused, and plain-text files are bounded in size (`jaxsparse.data.local_files`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator

from jaxsparse.data import local_files, sources
from jaxsparse.data.sources import CorpusFile, DecodeReport, ReadOptions

log = logging.getLogger(__name__)

PREFIX = "text"
SUFFIXES = (".txt", *local_files.COMPRESSIONS)
FORMS = f"a folder of {'/'.join(SUFFIXES)} files"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def list_files(path: str, options: ReadOptions | None = None) -> list[CorpusFile]:
    """The corpus files below `path`, sorted by relative path; ConfigError for a missing folder, a file
    given as the folder, no corpus file, or a corpus file that is not a regular file."""
    del options  # every file is listed whatever the options
    if not os.path.exists(path):
        raise sources.dataset_error(PREFIX, path, f"the folder {path} does not exist; expected 'text:' "
                                    f"followed by {FORMS}.")
    if not os.path.isdir(path):
        raise sources.dataset_error(PREFIX, path, f"{path} is a file, not a folder; expected 'text:' "
                                    f"followed by {FORMS}.")
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith("."):
                continue
            if not name.endswith(SUFFIXES):
                skipped.append(os.path.relpath(full, path))
                continue
            local_files.check_regular(full, local_files.MAX_TEXT_FILE_BYTES if name.endswith(".txt") else None)
            files.append(CorpusFile(full, os.path.relpath(full, path)))
    if skipped:
        log.info("text:%s: skipped %d file(s) that are not %s: %s", path, len(skipped), "/".join(SUFFIXES),
                 ", ".join(skipped[:10]))
    if not files:
        raise sources.dataset_error(PREFIX, path, f"the folder contains no {'/'.join(SUFFIXES)} files "
                                    "(empty corpus).")
    if any(f.rel.endswith(".zst") for f in files):
        sources.require("zstandard", "zstd", f"config.data.dataset='text:{path}' (.zst files)")
    return sorted(files, key=lambda f: f.rel)


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Cuts text into chunks of about `chunk_chars` characters (at least 1 character each).

    Paragraphs (separated by blank lines) are joined with "\\n\\n" until a chunk reaches chunk_chars;
    paragraphs longer than chunk_chars are cut at line ends, and lines longer than chunk_chars are cut hard.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    pieces: list[str] = []
    for para in _PARAGRAPH_BREAK.split(text):
        if not para.strip():
            continue
        if len(para) <= chunk_chars:
            pieces.append(para)
            continue
        for line in para.split("\n"):
            pieces.extend(line[i : i + chunk_chars] for i in range(0, max(len(line), 1), chunk_chars))
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        current.append(piece)
        size += len(piece) + 2
        if size >= chunk_chars:
            chunks.append("\n\n".join(current))
            current, size = [], 0
    if current:
        chunks.append("\n\n".join(current))
    return [c for c in chunks if c.strip()]


def _decode(raw: bytes, rel: str, report: DecodeReport) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if rel not in report.non_utf8:
            report.non_utf8.append(rel)
        return raw.decode("utf-8", errors="replace")


def _json_lines(f: CorpusFile, options: ReadOptions, report: DecodeReport) -> Iterator[tuple[str, str]]:
    compression = next(c for s, c in local_files.COMPRESSIONS.items() if f.rel.endswith(s))
    for lineno, raw in enumerate(local_files.iter_lines(f.path, compression), start=1):
        line = _decode(raw, f.rel, report)
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        text = obj.get(options.text_column) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            report.bad_records.append(f"{f.rel}:{lineno}")
        elif text.strip():
            yield f"{f.rel}#{lineno}", text


def read(f: CorpusFile, options: ReadOptions, report: DecodeReport) -> Iterator[tuple[str, str]]:
    """The (key, text) documents of one file of a `text:` corpus (see the module docstring)."""
    if f.rel.endswith(".txt"):
        text = _decode(local_files.read_text_file(f.path), f.rel, report)
        for i, chunk in enumerate(chunk_text(text, options.chunk_chars)):
            yield f"{f.rel}#{i}", chunk
    else:
        yield from _json_lines(f, options, report)


sources.register(sources.Source(prefix=PREFIX, forms=FORMS, list_files=list_files, read=read))
