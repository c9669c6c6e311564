"""Data: the tfds builder on local corpora, tokenizers, the embedded corpus, and bad corpus input."""

from __future__ import annotations

import os
import sys

import ml_collections
import numpy as np
import pytest

from jaxsparse import data
from jaxsparse.data import data_config
from jaxsparse.data import corpus, text_source, tfds_builder, tokenizer
from jaxsparse.errors import ConfigError

from data_utils import small_config, synthetic_corpus


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> str:
    return synthetic_corpus.write_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tfds"))


def _texts(source) -> list[str]:
    return [source[i]["text"].decode("utf-8") for i in range(len(source))]


def test_builder_splits_documents_without_tensorflow(corpus_dir, data_dir):
    cfg = small_config(f"text:{corpus_dir}", data_dir)
    dataset_id, sources = tfds_builder.open_splits(cfg)
    train, val = _texts(sources["train"]), _texts(sources["validation"])
    options = data_config.read_options(cfg)
    files = corpus.list_files("text", corpus_dir, options)
    expected = [t for _, t in corpus.iter_documents("text", files, options, corpus.DecodeReport())]
    assert sorted(train + val) == sorted(expected)  # every document lands in exactly one split
    assert not set(train) & set(val)
    assert 0.03 < len(val) / len(expected) < 0.25, (len(val), len(expected))
    assert any("café" in t for t in train + val)  # the .jsonl documents are read
    assert "tensorflow" not in sys.modules
    # Same corpus and parameters: the cached build is reused, no new directory.
    builds = sorted(os.listdir(os.path.join(data_dir, "jaxsparse_text")))
    assert tfds_builder.open_splits(cfg)[0] == dataset_id
    assert sorted(os.listdir(os.path.join(data_dir, "jaxsparse_text"))) == builds
    # Another chunk size is another fingerprint, built next to the first one.
    other_id, other = tfds_builder.open_splits(small_config(f"text:{corpus_dir}", data_dir, chunk_chars=5000))
    assert other_id != dataset_id and len(other["train"]) < len(sources["train"])


def test_changed_corpus_is_rebuilt(tmp_path):
    root = synthetic_corpus.write_corpus(str(tmp_path / "c"), txt_files=2, paragraphs=10, jsonl_lines=5)
    cfg = small_config(f"text:{root}", str(tmp_path / "tfds"))
    first_id, first = tfds_builder.open_splits(cfg)
    with open(os.path.join(root, "plays", "play_0.txt"), "a", encoding="utf-8") as fh:
        fh.write("\n\n[added] A brand new closing paragraph.\n")
    second_id, second = tfds_builder.open_splits(cfg)
    assert second_id != first_id
    texts = _texts(second["train"]) + _texts(second["validation"])
    assert any("[added]" in t for t in texts)


def test_corpus_edited_with_size_and_mtime_kept_is_rebuilt(tmp_path):
    """The fingerprint is by content: one byte changed in place, same size and mtime -> a new build."""
    root = synthetic_corpus.write_corpus(str(tmp_path / "c"), txt_files=2, paragraphs=10, jsonl_lines=5)
    cfg = small_config(f"text:{root}", str(tmp_path / "tfds"))
    first_id, first = tfds_builder.open_splits(cfg)
    path = os.path.join(root, "plays", "play_1.txt")
    st = os.stat(path)
    raw = bytearray(open(path, "rb").read())
    at = raw.index(b"[p1.0]") + 1
    raw[at : at + 2] = b"q9"  # "[p1.0]" -> "[q9.0]": same length
    with open(path, "r+b") as fh:
        fh.write(raw)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    corpus._CONTENT_HASHES.clear()  # as in a new process
    second_id, second = tfds_builder.open_splits(cfg)
    assert second_id != first_id
    texts = _texts(second["train"]) + _texts(second["validation"])
    assert any(t.startswith("[q9.0]") for t in texts) and not any(t.startswith("[p1.0]") for t in texts)
    before = _texts(first["train"]) + _texts(first["validation"])
    assert any(t.startswith("[p1.0]") for t in before)
    # Unchanged content keeps the fingerprint (and so the cached build), whatever the mtime.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    corpus._CONTENT_HASHES.clear()
    assert tfds_builder.open_splits(cfg)[0] == second_id


def test_chunk_text_keeps_content_and_bounds_size():
    paras = [f"para {i} " + "word " * (i * 7 % 40) for i in range(50)]
    long_line = "x" * 1000
    text = "\n\n".join(paras) + "\n\n" + long_line
    chunks = text_source.chunk_text(text, 200)
    joined = "".join(chunks).replace("\n", "")
    assert joined == text.replace("\n", "")
    assert all(1 <= len(c) <= 200 + max(len(p) for p in paras) + 2 for c in chunks)
    assert max(len(c) for c in chunks if c.startswith("x")) <= 200  # long lines are cut hard


def test_sentencepiece_trains_caches_and_round_trips(corpus_dir, data_dir):
    cfg = small_config(f"text:{corpus_dir}", data_dir, tokenizer="embedded", vocab_size=400)
    tok = data.get_tokenizer(cfg)
    assert tok.vocab_size == 400 and tok.name.startswith("embedded:")
    path = tok.name.split(":", 1)[1]
    assert os.path.dirname(path) == os.path.join(data_dir, tokenizer.TOKENIZER_DIR)
    mtime = os.stat(path).st_mtime_ns
    again = data.get_tokenizer(cfg)  # loads the cache, does not retrain
    assert os.stat(path).st_mtime_ns == mtime and again.encode("word one") == tok.encode("word one")
    samples = [
        "Hello   world\n\n  two spaces",
        " leading space",
        "trailing  \n",
        "",
        "\t tab",
        "naïve 漢字 emoji 🙂 ∑",
        "[p0.1] Xyz abc.\nNext line!",
    ]
    for s in samples:
        ids = tok.encode(s)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == s
    assert len({tok.bos_id, tok.eos_id, tok.pad_id}) == 3
    # Training is deterministic: the same text gives the same pieces.
    text = ["alpha beta gamma delta " * 40 + f"{i}" for i in range(60)]
    a = tokenizer.train_sentencepiece(text, vocab_size=300)
    b = tokenizer.train_sentencepiece(text, vocab_size=300)
    probe = "gamma delta alpha 17"
    assert a.encode(probe) == b.encode(probe) and a.decode(a.encode(probe)) == probe


def test_tokenizer_loads_a_model_file_and_bytes_round_trip(tmp_path):
    text = ["the quick brown fox jumps over the lazy dog " * 5 + str(i) for i in range(100)]
    out = str(tmp_path / "tok.model")
    trained = tokenizer.train_sentencepiece(text, vocab_size=300, output_path=out)
    loaded = data.get_tokenizer(small_config("shakespeare", str(tmp_path), tokenizer=out))
    assert loaded.encode("lazy fox 42") == trained.encode("lazy fox 42")
    byte_tok = data.get_tokenizer(small_config("shakespeare", str(tmp_path), tokenizer="bytes"))
    s = "bytes: é ∑ 🙂\x00\n"
    ids = byte_tok.encode(s)
    assert len(ids) == len(s.encode("utf-8")) and byte_tok.decode(ids) == s
    assert max(ids) < byte_tok.vocab_size == 259
    assert byte_tok.decode([byte_tok.bos_id] + ids + [byte_tok.eos_id, byte_tok.pad_id]) == s


def test_embedded_shakespeare_corpus_builds(tmp_path):
    """The default corpus builds from the installed `shakespeare` package into a fresh data_dir."""
    cfg = data.default_config()
    cfg.data_dir = str(tmp_path / "fresh")
    dataset_id, sources = tfds_builder.open_splits(cfg)
    assert dataset_id.startswith("jaxsparse_text/shakespeare_")
    n_train, n_val = len(sources["train"]), len(sources["validation"])
    assert n_train > 1000 and 0.02 < n_val / (n_train + n_val) < 0.08
    sample = " ".join(_texts(sources["validation"])) + " ".join(
        sources["train"][i]["text"].decode() for i in range(0, n_train, 7)
    )
    assert "KING" in sample and "thou" in sample


def test_bad_corpus_input_is_named(tmp_path):
    base = str(tmp_path / "tfds")
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"config\.data\.dataset=.*nope.*does not exist"):
        tfds_builder.open_splits(small_config(f"text:{missing}", base))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("not a corpus file")
    with pytest.raises(ConfigError, match="empty corpus"):
        tfds_builder.open_splits(small_config(f"text:{empty}", base))
    (empty / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(ConfigError, match=r"config\.data\.dataset=.*0 non-empty document"):
        tfds_builder.open_splits(small_config(f"text:{empty}", base))
    # A prepared-tfds dataset under a data_dir that does not exist.
    with pytest.raises(ConfigError, match="config.data.data_dir="):
        tfds_builder.open_splits(small_config("c4/en", missing))
    with pytest.raises(ConfigError, match="c4/en"):
        tfds_builder.open_splits(small_config("c4/en", base))


def test_non_utf8_files_are_replaced_and_counted(tmp_path):
    root = synthetic_corpus.write_corpus(str(tmp_path / "c"), txt_files=2, paragraphs=10, jsonl_lines=5)
    (tmp_path / "c" / "latin1.txt").write_bytes(
        "[latin] caf\xe9 na\xefve\n\nmore text here".encode("latin-1")
    )
    (tmp_path / "c" / "cp1252.txt").write_bytes(b"[cp] \x93quoted\x94 words\n")
    with (tmp_path / "c" / "notes.jsonl").open("a") as fh:
        fh.write("{not json}\n")
    cfg = small_config(f"text:{root}", str(tmp_path / "tfds"))
    with pytest.warns(UnicodeWarning, match=r"2 corpus file\(s\).*cp1252.txt, latin1.txt"):
        with pytest.warns(UserWarning, match=r"1 record\(s\) skipped \(no string 'text'.*notes.jsonl:6"):
            _, sources = tfds_builder.open_splits(cfg)
    texts = _texts(sources["train"]) + _texts(sources["validation"])
    assert any(t.startswith("[latin] caf\ufffd") for t in texts)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("dataset", "hf://c4", "config.data.dataset='hf://c4'"),
        ("dataset", "text:", "after 'text:'"),
        ("dataset", "parquet:", "after 'parquet:'"),
        ("text_column", "", "config.data.text_column=''"),
        ("vocab_size", 100, "config.data.vocab_size=100"),
        ("tokenizer_model_type", "wordpiece", "config.data.tokenizer_model_type"),
        ("validation_fraction", 0.9, "config.data.validation_fraction"),
        ("shards", 0, "config.data.shards=0"),
        ("read_threads", 0, "config.data.read_threads=0"),
        ("tokenzier", "bytes", "unknown key config.data.tokenzier; did you mean config.data.tokenizer?"),
        ("eval_batches", 8, "unknown key config.data.eval_batches"),
    ],
)
def test_bad_config_values_are_named(tmp_path, key, value, match):
    cfg = small_config("shakespeare", str(tmp_path))
    cfg[key] = value
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        tfds_builder.open_splits(cfg)


def test_tokenizer_file_that_does_not_load_is_named(tmp_path):
    bad = tmp_path / "broken.model"
    bad.write_bytes(b"this is not a sentencepiece proto" * 10)
    with pytest.raises(ConfigError, match="broken.model could not be loaded"):
        data.get_tokenizer(small_config("shakespeare", str(tmp_path), tokenizer=str(bad)))
    with pytest.raises(ConfigError, match=r"config\.data\.tokenizer=.*missing.model.*no such file"):
        data.get_tokenizer(small_config("shakespeare", str(tmp_path), tokenizer=str(tmp_path / "missing.model")))
    with pytest.raises(ConfigError, match=r"config\.data\.tokenizer=.*is a directory"):
        data.get_tokenizer(small_config("shakespeare", str(tmp_path), tokenizer=str(tmp_path)))
    with pytest.raises(ConfigError, match="config.data.vocab_size=5000"):
        tokenizer.train_sentencepiece(["tiny corpus"] * 3, vocab_size=5000)
    assert np.asarray(data.ByteTokenizer().encode("a")).tolist() == [ord("a") + 3]


def test_caches_and_checkpointed_configs_of_earlier_versions_still_read(tmp_path):
    """A checkpoint stores the dataset id (its data state is refused under another) and its config: the
    ids of text: and embedded corpora read by the default column are those of the version before
    sources and data.text_column, and a saved data config without text_column reads with its default."""
    root = synthetic_corpus.write_corpus(str(tmp_path / "corpus"), txt_files=2, paragraphs=10, jsonl_lines=5)
    for dataset, name in ((f"text:{root}", "corpus_8ba4353287a4"), ("shakespeare", "shakespeare_c5ee04a47c3e")):
        cfg = small_config(dataset, str(tmp_path / "tfds"))
        spec = data_config.validate_data_config(cfg)
        assert tfds_builder.local_builder(cfg, spec).builder_config.name == name
    cfg = small_config(f"text:{root}", str(tmp_path / "tfds"), text_column="body")  # other documents
    spec = data_config.validate_data_config(cfg)
    assert tfds_builder.local_builder(cfg, spec).builder_config.name != "corpus_8ba4353287a4"
    saved = small_config(f"text:{root}", str(tmp_path / "tfds")).to_dict()
    del saved["text_column"]
    with pytest.raises(ConfigError, match=r"missing keys \['text_column'\]"):
        data_config.validate_data_config(ml_collections.ConfigDict(saved))
    data_config.validate_data_config(data_config.with_defaults(ml_collections.ConfigDict(saved)))
