"""Shared set-up of the data tests: the synthetic corpus writer and small byte-tokenizer configs."""
from __future__ import annotations

import importlib.util
import pathlib

import ml_collections
import numpy as np

from jaxsparse import data

_spec = importlib.util.spec_from_file_location(
    "synthetic_corpus", pathlib.Path(__file__).parent / "assets" / "data_configs" / "synthetic_corpus.py")
synthetic_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_corpus)


def small_config(dataset: str, data_dir: str, **overrides) -> ml_collections.ConfigDict:
    """A data config for `dataset` with the byte tokenizer, 300-character chunks, 10% validation."""
    cfg = data.default_config()
    cfg.dataset = dataset
    cfg.data_dir = data_dir
    cfg.chunk_chars = 300
    cfg.validation_fraction = 0.1
    cfg.tokenizer = "bytes"
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def synthetic_config(tmp_path_factory, **overrides) -> ml_collections.ConfigDict:
    """`small_config` of a fresh synthetic corpus (written under a new temporary directory)."""
    root = synthetic_corpus.write_corpus(str(tmp_path_factory.mktemp("corpus")))
    return small_config(f"text:{root}", str(tmp_path_factory.mktemp("tfds")), **overrides)


def fineweb_rows(n: int, seed: int = 0, start: int = 0) -> dict[str, list]:
    """`n` rows shaped like FineWeb-Edu's parquet shards (text, id, dump, url, date, file_path, language,
    language_score, token_count, score, int_score), with random-word texts tagged "[r<row>]"."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("etaoinshrdlucmfw"), size=int(rng.integers(2, 8)))) for _ in range(300)]
    texts = [f"[r{start + i}] " + " ".join(rng.choice(words, size=int(rng.integers(40, 120)))) for i in range(n)]
    return {
        "text": texts,
        "id": [f"<urn:uuid:{start + i:08x}-0000-4000-8000-000000000000>" for i in range(n)],
        "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.org/page/{start + i}" for i in range(n)],
        "date": ["2024-02-21T10:00:00Z"] * n,
        "file_path": ["s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/0/warc/x.warc.gz"] * n,
        "language": ["en"] * n,
        "language_score": rng.uniform(0.6, 1.0, n).tolist(),
        "token_count": [len(t.split()) for t in texts],
        "score": rng.uniform(2.5, 5.0, n).tolist(),
        "int_score": rng.integers(3, 6, n).tolist(),
    }


def write_fineweb_parquet(path: pathlib.Path, rows: int, row_group_size: int, seed: int = 0,
                          start: int = 0) -> pathlib.Path:
    """A FineWeb-Edu-shaped parquet file of `rows` rows in row groups of `row_group_size` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(fineweb_rows(rows, seed, start)), path, row_group_size=row_group_size)
    return path
