"""Tiny trained runs shared by the generate / evaluate / Hugging Face tests (built once per module)."""
from __future__ import annotations

import os
from pathlib import Path

from train_utils import tiny_config, write_corpus


def train_tiny_run(root: Path, name: str = "run", **overrides) -> Path:
    """A 12-step sparse run of the test-size model (bytes tokenizer, final sparsity 0.75) on a
    generated corpus under `root`; returns its workdir. Sets JAXSPARSE_DATA_DIR for the process."""
    from jaxsparse.train import train

    corpus = root / "corpus"
    if not corpus.exists():
        write_corpus(corpus)
    data_dir = root / "data"
    os.environ["JAXSPARSE_DATA_DIR"] = str(data_dir)
    workdir = root / name
    config = tiny_config(corpus, **{"data.data_dir": str(data_dir), "train.steps": 12,
                                    "checkpoint.every_steps": 6, "eval.every_steps": 0,
                                    "pruning.interval": 2, **overrides})
    train(config, str(workdir))
    return workdir
