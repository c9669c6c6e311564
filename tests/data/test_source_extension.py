"""A data source defined and registered in this one file (`test_tsv:`, a .tsv file of id<TAB>text
lines) is read by the data pipeline and by the trainer's command line, which finds it through the
config key `imports` (this module's name, this folder on PYTHONPATH): nothing in the package names it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from train_utils import cli_env, run_cli, tiny_config, train_cmd, write_corpus

from jaxsparse import data as data_lib
from jaxsparse.data import sources
from jaxsparse.data.sources import CorpusFile, DecodeReport, ReadOptions, Source

PREFIX = "test_tsv"
MODULE = Path(__file__).stem
ALPHABET = "qxzj"  # letters the documents are made of


def list_files(path: str, options: ReadOptions) -> list[CorpusFile]:
    del options
    if not (path.endswith(".tsv") and os.path.isfile(path)):
        raise sources.dataset_error(PREFIX, path, f"expected '{PREFIX}:' followed by a .tsv file")
    return [CorpusFile(path, os.path.basename(path))]


def read(f: CorpusFile, options: ReadOptions, report: DecodeReport) -> Iterator[tuple[str, str]]:
    del options, report
    with open(f.path, encoding="utf-8") as lines:
        for line in lines:
            ident, _, text = line.rstrip("\n").partition("\t")
            if text:
                yield f"{f.rel}#{ident}", text


sources.register(Source(PREFIX, "a .tsv file of id<TAB>text lines", list_files, read))


def _tsv(path: Path, rows: int = 400) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            words = ["".join(rng.choice(list(ALPHABET), size=int(rng.integers(2, 6)))) for _ in range(40)]
            out.write(f"doc{i}\t{' '.join(words)}\n")
    return path


def test_a_source_defined_in_a_test_file_feeds_the_pipeline_and_the_trainer(tmp_path):
    tsv = _tsv(tmp_path / "corpus.tsv")
    config = tiny_config(tmp_path, **{"data.dataset": f"{PREFIX}:{tsv}", "data.data_dir": str(tmp_path / "data")})
    batch = next(iter(data_lib.make_train_iterator(config.data, seq_len=32, global_batch_size=8)))
    text = data_lib.ByteTokenizer().decode(np.asarray(batch["inputs"]).ravel().tolist())
    assert set(text) <= set(ALPHABET + " ") and len(set(text)) == len(ALPHABET) + 1

    corpus = write_corpus(tmp_path / "unused", files=1, paragraphs=2)
    env = cli_env(tmp_path / "data")
    here = Path(__file__).parent  # this module, and the helpers it imports from tests/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), str(here.parent), env.get("PYTHONPATH")]))
    done = run_cli(train_cmd(corpus, tmp_path / "run", f"--config.imports={MODULE}",
                             f"--config.data.dataset={PREFIX}:{tsv}", "--config.train.steps=4"), env)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["data"]["dataset"] == f"{PREFIX}:{tsv}" and summary["steps"] == 4
