"""Data: packing, resumption, the validation set, global batches and the CLI (logical shards and host-count
independence: test_data_shards.py)."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsparse import data
from jaxsparse.data import shards, tfds_builder
from jaxsparse.errors import ConfigError

from data_utils import synthetic_config

_HERE = pathlib.Path(__file__).parent
BYTES = data.ByteTokenizer()
SEQ = 48


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return synthetic_config(tmp_path_factory, read_threads=2, shards=4)


def _train_texts(cfg) -> list[str]:
    src = tfds_builder.open_splits(cfg)[1]["train"]
    return [src[i]["text"].decode("utf-8") for i in range(len(src))]


def _stream(batches, rows: slice = slice(None)) -> np.ndarray:
    """The packed token stream of `rows` of each batch: each row's window (inputs + last target), rows and
    batches in order. One logical shard's rows give that shard's stream."""
    windows = [np.concatenate([b["inputs"][rows], b["targets"][rows, -1:]], axis=1) for b in batches]
    return np.concatenate(windows, axis=0).reshape(-1)


def _documents(stream: np.ndarray) -> list[str]:
    """Splits a stream into complete [BOS] doc [EOS] units (a trailing partial one is dropped)."""
    assert stream[0] == BYTES.bos_id, "the stream starts at a document start"
    ends = np.flatnonzero(stream == BYTES.eos_id)
    docs, start = [], 0
    for end in ends:
        unit = stream[start : end + 1]
        assert unit[0] == BYTES.bos_id and (unit[1:-1] >= BYTES.offset).all(), "BOS/EOS boundaries"
        docs.append(BYTES.decode(unit[1:-1]))
        start = end + 1
    return docs


def test_packing_gives_full_rows_with_exact_document_boundaries(cfg):
    it = data.make_train_iterator(cfg, seq_len=SEQ, global_batch_size=4, process_index=0, process_count=1)
    batches = [next(it) for _ in range(40)]
    it.close()
    for b in batches:
        assert set(b) == {"inputs", "targets", "weights"}
        assert b["inputs"].shape == b["targets"].shape == b["weights"].shape == (4, SEQ)
        assert b["inputs"].dtype == np.int32 and b["weights"].dtype == np.float32
        assert (b["weights"] == 1).all()
        np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])
    train = collections.Counter(_train_texts(cfg))
    per_shard = [_documents(_stream(batches, slice(s, s + 1))) for s in range(4)]  # 4 shards, 1 row each
    docs = [d for shard in per_shard for d in shard]
    assert all(len(shard) > 5 for shard in per_shard)
    assert all(d in train for d in docs)  # every packed unit is a whole train document: no token lost
    assert len(set(docs)) == len(docs)  # first epoch: no document twice, shards read disjoint documents


def test_resume_from_saved_state_equals_uninterrupted(cfg):
    kw = dict(seq_len=SEQ, global_batch_size=4, process_index=0, process_count=1, seed=3)
    ref_it = data.make_train_iterator(cfg, **kw)
    ref = [next(ref_it) for _ in range(14)]
    for k in (0, 5, 9):
        it = data.make_train_iterator(cfg, **kw)
        for _ in range(k + 1):
            next(it)
        state = json.loads(json.dumps(it.get_state()))  # as a checkpoint would store it
        it.close()
        resumed = data.make_train_iterator(cfg, **kw)
        resumed.set_state(state)
        for j in range(k + 1, 14):
            got = next(resumed)
            for key in got:
                np.testing.assert_array_equal(got[key], ref[j][key], err_msg=f"k={k} batch={j} {key}")
        resumed.close()
    other = data.make_train_iterator(cfg, **{**kw, "seq_len": SEQ + 1})
    with pytest.raises(ConfigError, match="seq_len"):
        other.set_state(state)
    with pytest.raises(ConfigError, match="not written by this pipeline"):
        other.set_state({"meta": state["meta"], "grain": {}})  # a state of the earlier per-process pipeline
    other.close()


def test_resume_when_windows_end_exactly_at_document_ends():
    """A shard whose windows end exactly at document ends has position (doc, 0) and resumes there."""
    texts = [{"text": f"doc{i:03d}" + "x" * (SEQ + 1 - 2 - 6)} for i in range(60)]  # one window each
    reader = shards.DocumentReader(texts, BYTES, seed=1, threads=2)
    ref = shards.ShardStream(reader, 1, 3, SEQ + 1)
    windows = [ref.next_rows(2) for _ in range(8)]  # 16 documents: the epoch's positions 1, 4, 7, ...
    assert all(w[0] == BYTES.bos_id and w[-1] == BYTES.eos_id for rows in windows for w in rows)
    assert len({BYTES.decode(w[1:-1]) for rows in windows for w in rows}) == 16
    it = shards.ShardStream(reader, 1, 3, SEQ + 1)
    for _ in range(3):
        it.next_rows(2)
    assert it.position == (6, 0)
    resumed = shards.ShardStream(reader, 1, 3, SEQ + 1, position=json.loads(json.dumps(it.position)))
    for j in range(3, 8):
        np.testing.assert_array_equal(resumed.next_rows(2), windows[j])
    reader.close()


def test_thread_count_does_not_change_the_stream(cfg):
    kw = dict(seq_len=SEQ, global_batch_size=8, process_index=0, process_count=1)
    one = cfg.copy_and_resolve_references()
    one.read_threads = 1
    a, b = data.make_train_iterator(one, **kw), data.make_train_iterator(cfg, **kw)
    for _ in range(12):
        np.testing.assert_array_equal(next(a)["inputs"], next(b)["inputs"])
    a.close()
    b.close()


def test_eval_batches_are_fixed_and_split_by_process(cfg):
    full = data.make_eval_batches(
        cfg, seq_len=SEQ, global_batch_size=4, num_batches=3, process_index=0, process_count=1
    )
    again = data.make_eval_batches(
        cfg, seq_len=SEQ, global_batch_size=4, num_batches=3, process_index=0, process_count=1
    )
    assert len(full) == 3 and all(b["inputs"].shape == (4, SEQ) and (b["weights"] == 1).all() for b in full)
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
    for p in range(2):
        part = data.make_eval_batches(
            cfg, seq_len=SEQ, global_batch_size=4, num_batches=3, process_index=p, process_count=2
        )
        for a, b in zip(part, full):
            np.testing.assert_array_equal(a["targets"], b["targets"][2 * p : 2 * p + 2])
    val_docs = tfds_builder.open_splits(cfg)[1]["validation"]
    assert _documents(_stream(full))[0] == val_docs[0]["text"].decode("utf-8")
    with pytest.raises(ConfigError, match=r"config\.eval\.batches=2.*config\.train\.seq_len=4096"):
        data.make_eval_batches(
            cfg, seq_len=4096, global_batch_size=4, num_batches=2, process_index=0, process_count=1
        )


def test_batch_not_divisible_by_processes_or_devices(cfg):
    with pytest.raises(ConfigError, match="config.train.batch_size=6 is not divisible by the 4 processes"):
        data.make_train_iterator(cfg, seq_len=SEQ, global_batch_size=6, process_index=0, process_count=4)
    with pytest.raises(ConfigError, match=r"config\.data\.shards=4 does not divide config\.train\.batch_size=6"):
        data.make_train_iterator(cfg, seq_len=SEQ, global_batch_size=6, process_index=0, process_count=2)
    with pytest.raises(ConfigError, match=r"config\.data\.shards=4 is not divisible by the 8 processes.*e\.g\. 8"):
        data.make_train_iterator(cfg, seq_len=SEQ, global_batch_size=8, process_index=0, process_count=8)
    with pytest.raises(ConfigError, match="process_index=2"):
        data.make_eval_batches(
            cfg, seq_len=SEQ, global_batch_size=4, num_batches=1, process_index=2, process_count=2
        )
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    batch = {"inputs": np.zeros((6, SEQ), np.int32)}
    with pytest.raises(ValueError, match="6 global rows, not divisible by the 4 shards"):
        data.to_global_batch(batch, NamedSharding(mesh, PartitionSpec("data")))


def test_to_global_batch_on_8_devices(cfg):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    sharding = NamedSharding(mesh, PartitionSpec("data", None))
    local = next(data.make_train_iterator(cfg, seq_len=SEQ, global_batch_size=8))
    arrays = data.to_global_batch(local, sharding)
    for key, value in local.items():
        assert arrays[key].shape == (8, SEQ) and arrays[key].dtype == value.dtype
        assert arrays[key].sharding == sharding
        np.testing.assert_array_equal(np.asarray(arrays[key]), value)
        assert arrays[key].addressable_shards[0].data.shape == (2, SEQ)


def test_prepared_tfds_path_reads_the_same_data(cfg):
    """The prepared-tfds code path (as for c4/en) reads a locally built dataset by name."""
    dataset_id, _ = tfds_builder.open_splits(cfg)
    by_name = cfg.copy_and_resolve_references()
    by_name.dataset = dataset_id.rsplit("/", 1)[0]  # "jaxsparse_text/<config>"
    kw = dict(seq_len=SEQ, global_batch_size=4, process_index=0, process_count=1)
    a = next(data.make_train_iterator(cfg, **kw))
    b = next(data.make_train_iterator(by_name, **kw))
    np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_cli_inspect_and_train_tokenizer(cfg, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    base = [sys.executable, "-m", "jaxsparse.data"]
    common = [
        f"--config={_HERE.parent / 'assets' / 'data_configs' / 'tiny.py'}",
        f"--config.data.dataset={cfg.dataset}",
        f"--config.data.data_dir={cfg.data_dir}",
        "--config.data.chunk_chars=300",
        "--config.data.validation_fraction=0.1",
        "--config.eval.batches=3",
    ]
    out = subprocess.run(
        base + ["inspect"] + common, capture_output=True, text=True, env=env, timeout=120, cwd=_HERE.parent
    )
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout)
    _, sources = tfds_builder.open_splits(cfg)
    for split in ("train", "validation"):
        src = sources[split]
        expected = sum(len(src[i]["text"]) + 2 for i in range(len(src)))  # bytes + BOS + EOS
        assert info[f"{split}_tokens"] == expected and info["splits"][split]["examples"] == len(src)
    assert info["vocab_size"] == 259 and info["tokenizer"]["name"] == "bytes"
    assert info["eval_batches"] == 3 and info["shards"] == 4  # config.eval.batches, as the trainer reads it
    assert info["first_sequence"][:20] in "".join(_train_texts(cfg))
    model = tmp_path / "cli.model"
    out = subprocess.run(
        base
        + [
            "train_tokenizer",
            f"--dataset={cfg.dataset}",
            f"--data_dir={cfg.data_dir}",
            "--vocab_size=350",
            f"--output={model}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=_HERE.parent,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["vocab_size"] == 350
    assert data.get_tokenizer(cfg.copy_and_resolve_references()).vocab_size == 259  # cfg untouched
    tok = data.tokenizer.load_sentencepiece(str(model))
    assert tok.decode(tok.encode("[p0.1] round trip")) == "[p0.1] round trip"
