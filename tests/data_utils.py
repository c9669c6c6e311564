"""Shared set-up of the data tests: the synthetic corpus writer and small byte-tokenizer configs."""
from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

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
