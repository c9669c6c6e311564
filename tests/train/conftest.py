"""Fixtures the trainer's tests share: one small corpus and one tfds data directory per module."""
from __future__ import annotations

import os

import pytest
from train_utils import write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The default corpus of `train_utils.write_corpus` (about 200 KB of random words)."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, corpus):
    """A fresh tfds data directory, also set as JAXSPARSE_DATA_DIR for the command lines."""
    path = tmp_path_factory.mktemp("data")
    os.environ["JAXSPARSE_DATA_DIR"] = str(path)
    return path
