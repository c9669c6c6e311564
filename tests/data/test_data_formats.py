"""Parquet (`parquet:` folders, globs and files, FineWeb-Edu-shaped) and compressed JSON lines
(`.jsonl.gz`, `.jsonl.zst` in `text:` folders): every row is read once, in a host-count-independent
order that resumes exactly, cached by content; bad input is named before anything is built; a new
source is one module (here: one test file)."""
from __future__ import annotations

import gzip
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from jaxsparse import data
from jaxsparse.data import data_config
from jaxsparse.data import corpus, sources, tfds_builder
from jaxsparse.errors import ConfigError

from data_utils import fineweb_rows, small_config, write_fineweb_parquet
from fault_utils import RUN_ARGS, STEPS, kill_when
from train_utils import REPO, cli_env, run_cli, train_cmd, train_losses

SEQ, BATCH = 40, 8
DATA_CONFIG = REPO / "tests" / "assets" / "data_configs" / "tiny.py"


@pytest.fixture(scope="module")
def fineweb(tmp_path_factory):
    """Two shards of a FineWeb-Edu-shaped folder: 240 rows in 5 row groups, 160 rows in 4."""
    root = tmp_path_factory.mktemp("fineweb-edu") / "sample" / "10BT"
    write_fineweb_parquet(root / "000_00000.parquet", 240, 50, seed=0, start=0)
    write_fineweb_parquet(root / "001_00000.parquet", 160, 40, seed=1, start=240)
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _texts(split_sources) -> list[str]:
    return [s[i]["text"].decode() for s in split_sources.values() for i in range(len(s))]


def test_parquet_corpus_reads_every_row_once_by_row_group(fineweb, data_dir):
    assert [pq.ParquetFile(p).num_row_groups for p in sorted(fineweb.glob("*.parquet"))] == [5, 4]
    want = fineweb_rows(240, 0)["text"] + fineweb_rows(160, 1, start=240)["text"]
    cfg = small_config(f"parquet:{fineweb}", data_dir, shards=4)
    dataset_id, split_sources = tfds_builder.open_splits(cfg)
    assert dataset_id.startswith("jaxsparse_text/10bt_")
    assert sorted(_texts(split_sources)) == sorted(want)  # each row is one document, in one split
    assert 0.03 < len(split_sources["validation"]) / len(want) < 0.25
    options = data_config.read_options(cfg)
    files = corpus.list_files("parquet", str(fineweb), options)
    keys = [k for k, _ in corpus.iter_documents("parquet", files, options, sources.DecodeReport())]
    assert keys == [f"000_00000.parquet#{i}" for i in range(240)] + [f"001_00000.parquet#{i}" for i in range(160)]
    # A glob and a single file select their files; relative paths start before the first wildcard.
    for value in (f"{fineweb}/001_*.parquet", f"{fineweb.parent}/**/001_*.parquet", f"{fineweb}/001_00000.parquet"):
        _, part = tfds_builder.open_splits(small_config(f"parquet:{value}", data_dir))
        assert sorted(_texts(part)) == sorted(want[240:]), value


def test_parquet_cache_is_keyed_by_content(tmp_path):
    root = tmp_path / "shards"
    write_fineweb_parquet(root / "a.parquet", 60, 20, seed=0)
    cfg = small_config(f"parquet:{root}", str(tmp_path / "tfds"))
    first_id, _ = tfds_builder.open_splits(cfg)
    assert tfds_builder.open_splits(cfg)[0] == first_id
    write_fineweb_parquet(root / "a.parquet", 60, 20, seed=3)  # same name and shape, other rows
    second_id, second = tfds_builder.open_splits(cfg)
    assert second_id != first_id and sorted(_texts(second)) == sorted(fineweb_rows(60, 3)["text"])


def test_the_text_column_is_chosen_by_config_and_null_rows_are_named(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    docs = [f"[c{i}] " + "some words here " * 10 for i in range(30)]
    pq.write_table(pa.table({"content": docs[:29] + [None], "n": list(range(30))}), root / "c.parquet",
                   row_group_size=8)
    cfg = small_config(f"parquet:{root}", str(tmp_path / "tfds"))
    with pytest.raises(ConfigError, match=r"c.parquet has no column config.data.text_column='text'; its "
                                          r"columns are \['content', 'n'\]"):
        tfds_builder.open_splits(cfg)
    cfg.text_column = "content"
    with pytest.warns(UserWarning, match=r"1 record\(s\) skipped \(no string 'content'.*c.parquet:row 29"):
        _, split_sources = tfds_builder.open_splits(cfg)
    assert sorted(_texts(split_sources)) == sorted(docs[:29])
    # The same key names a JSON lines field.
    jsonl = tmp_path / "jsonl"
    jsonl.mkdir()
    (jsonl / "c.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"content": d}) + "\n"
                                                             for d in docs).encode()))
    _, split_sources = tfds_builder.open_splits(small_config(f"text:{jsonl}", str(tmp_path / "tfds"),
                                                              text_column="content"))
    assert sorted(_texts(split_sources)) == sorted(docs)


def _bad_parquet_cases(root):
    write_fineweb_parquet(root / "good" / "a.parquet", 20, 10)
    (root / "corrupt").mkdir()
    (root / "corrupt" / "a.parquet").write_bytes(b"PAR1 this is not a parquet file at all" * 20)
    raw = (root / "good" / "a.parquet").read_bytes()
    (root / "cut").mkdir()
    (root / "cut" / "a.parquet").write_bytes(raw[: len(raw) // 2])
    return [
        (f"parquet:{root}/good", {"text_column": "url_typo"}, r"a.parquet has no column "
         r"config.data.text_column='url_typo'; its columns are \['text', 'id', 'dump', 'url'"),
        (f"parquet:{root}/good", {"text_column": "token_count"}, r"config.data.text_column='token_count' "
         r"that holds int64, not strings"),
        (f"parquet:{root}/corrupt", {}, r"corrupt/a.parquet is not a readable parquet file \(ArrowInvalid"),
        (f"parquet:{root}/cut", {}, r"cut/a.parquet is not a readable parquet file"),
        (f"parquet:{root}/good/*.parquett", {}, r"config.data.dataset='parquet:.*\*.parquett': matches no "
         r".parquet files"),
        (f"parquet:{root}/missing", {}, r"config.data.dataset='parquet:.*missing': no such folder or file"),
        (f"parquet:{root}/good/a.parquet", {"text_column": ""}, r"config.data.text_column=''"),
    ]


def test_bad_parquet_input_is_named_before_anything_is_built(tmp_path):
    tfds = tmp_path / "tfds"
    for dataset, overrides, match in _bad_parquet_cases(tmp_path):
        cfg = small_config(dataset, str(tfds), **overrides)
        with pytest.raises(ConfigError, match=match):
            data_config.validate_data_config(cfg)  # what --dry_run and every reader check first
        assert not tfds.exists()


@pytest.mark.parametrize("module, extra, dataset", [
    ("pyarrow", "parquet", "parquet:{root}/p"), ("zstandard", "zstd", "text:{root}/z")])
def test_a_missing_extra_is_named(tmp_path, monkeypatch, module, extra, dataset):
    write_fineweb_parquet(tmp_path / "p" / "a.parquet", 20, 10)
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "x"}\n'))
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: import raises ImportError
    monkeypatch.setitem(sys.modules, module, None)
    cfg = small_config(dataset.format(root=tmp_path), str(tmp_path / "tfds"))
    with pytest.raises(ConfigError, match=rf"needs the Python package '{module}' \(jaxsparse's optional extra "
                                          rf"'{extra}'\).*pip install -c constraints.txt -e \"\.\[{extra}\]\""):
        data_config.validate_data_config(cfg)


def _zstd_corpus(root):
    """Two JSON lines files, one .zst (two frames) and one .gz, of FineWeb-shaped records."""
    rows = fineweb_rows(300, 2)
    lines = [json.dumps({k: rows[k][i] for k in ("text", "id", "url")}) + "\n" for i in range(300)]
    root.mkdir(parents=True)
    zstd = zstandard.ZstdCompressor()
    (root / "part-0.jsonl.zst").write_bytes(zstd.compress("".join(lines[:100]).encode())
                                            + zstd.compress("".join(lines[100:200]).encode()))
    (root / "part-1.jsonl.gz").write_bytes(gzip.compress("".join(lines[200:]).encode()))
    return root, rows["text"]


def _iterators(cfg, process_count: int) -> list[data.TrainIterator]:
    return [data.make_train_iterator(cfg, seq_len=SEQ, global_batch_size=BATCH, process_index=p,
                                     process_count=process_count, seed=1) for p in range(process_count)]


def _global(iters, steps: int) -> list[np.ndarray]:
    return [np.concatenate([next(it)["inputs"] for it in iters]) for _ in range(steps)]


@pytest.mark.parametrize("kind", ["parquet", "jsonl.zst"])
def test_batches_do_not_depend_on_the_process_count_and_resume_exactly(kind, fineweb, data_dir, tmp_path):
    if kind == "parquet":
        cfg = small_config(f"parquet:{fineweb}", data_dir, shards=4, read_threads=2)
    else:
        root, texts = _zstd_corpus(tmp_path / "zst")
        cfg = small_config(f"text:{root}", data_dir, shards=4, read_threads=2)
        assert sorted(_texts(tfds_builder.open_splits(cfg)[1])) == sorted(texts)
    one = _iterators(cfg, 1)
    want = _global(one, 10)
    two = _iterators(cfg, 2)
    for step, (got, ref) in enumerate(zip(_global(two, 4), want)):
        np.testing.assert_array_equal(got, ref, err_msg=f"2 processes, step {step}")
    states = [json.loads(json.dumps(it.get_state())) for it in two]  # as checkpoints store them
    state = {**states[0], "shards": {k: v for s in states for k, v in s["shards"].items()}}
    resumed = _iterators(cfg, 1)
    resumed[0].set_state(state)
    for step, got in enumerate(_global(resumed, 6), start=4):
        np.testing.assert_array_equal(got, want[step], err_msg=f"resumed on 1 process, step {step}")
    for it in one + two + resumed:
        it.close()


def test_a_new_source_is_one_module(tmp_path):
    """A source defined here (tab-separated files, one document per row's second field) is read by the
    corpus builder like the built-in ones, touching no package file."""
    def list_tsv(path, options):
        files = sorted(p for p in tmp_path.joinpath("tsv").glob("*.tsv"))
        if not files:
            raise sources.dataset_error("tsv", path, "no .tsv files")
        return [sources.CorpusFile(str(p), p.name) for p in files]

    def read_tsv(f, options, report):
        with open(f.path, encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                yield f"{f.rel}#{n}", line.rstrip("\n").split("\t")[1]

    sources.register(sources.Source(prefix="tsv", forms="a folder of .tsv files", list_files=list_tsv,
                                    read=read_tsv))
    try:
        (tmp_path / "tsv").mkdir()
        docs = [f"[t{i}] tab separated words" for i in range(40)]
        (tmp_path / "tsv" / "a.tsv").write_text("".join(f"{i}\t{d}\n" for i, d in enumerate(docs)))
        cfg = small_config(f"tsv:{tmp_path / 'tsv'}", str(tmp_path / "tfds"))
        dataset_id, split_sources = tfds_builder.open_splits(cfg)
        assert dataset_id.startswith("jaxsparse_text/tsv_") and sorted(_texts(split_sources)) == sorted(docs)
    finally:
        sources.SOURCES.pop("tsv")


def _inspect(dataset: str, env: dict) -> dict:
    out = run_cli([sys.executable, "-m", "jaxsparse.data", "inspect", f"--config={DATA_CONFIG}",
                   f"--config.data.dataset={dataset}"], env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_the_trainer_trains_on_parquet_resumes_exactly_and_inspect_reads_it(fineweb, tmp_path):
    """A run SIGKILLed once its checkpoint 8 committed and rerun ends with the same per-step losses as
    an uninterrupted run; `python -m jaxsparse.data inspect` counts every row."""
    env = cli_env(tmp_path / "data")
    args = {name: train_cmd(fineweb, tmp_path / name, f"--config.data.dataset=parquet:{fineweb}", *RUN_ARGS)
            for name in ("whole", "killed")}
    whole = run_cli(args["whole"], env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert kill_when(args["killed"], env, lambda: (tmp_path / "killed" / "checkpoints" / "8").is_dir())
    assert max(train_losses(tmp_path / "killed")) < STEPS
    rerun = run_cli(args["killed"], env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert train_losses(tmp_path / "killed") == train_losses(tmp_path / "whole")
    assert sorted(train_losses(tmp_path / "whole")) == list(range(1, STEPS + 1))
    info = _inspect(f"parquet:{fineweb}", env)
    assert info["train_examples"] + info["validation_examples"] == 400
    assert info["first_sequence"].startswith("[r")  # a row's own text, packed from its start


def test_the_trainer_trains_on_compressed_json_lines_and_inspect_reads_them(tmp_path):
    """The trainer's command line on a folder of .jsonl.zst and .jsonl.gz files (its exact resume is the
    data stream's, tested above, and the trainer's, tested on the parquet corpus)."""
    folder, _ = _zstd_corpus(tmp_path / "zst")
    env = cli_env(tmp_path / "data")
    out = run_cli(train_cmd(folder, tmp_path / "run", "--config.train.steps=8"), env)
    assert out.returncode == 0, out.stderr[-2000:]
    losses = train_losses(tmp_path / "run")
    assert max(losses) == 8 and all(np.isfinite(v) for v in losses.values())
    info = _inspect(f"text:{folder}", env)
    assert info["train_examples"] + info["validation_examples"] == 300
    assert info["first_sequence"].startswith("[r")
