"""Corpus files that are not what they seem: a FIFO, a symlink to /dev/zero, a dangling symlink, files
over the size limits, corrupt or truncated compressed files. Each is refused with one line naming the
file (exit 2 from the command line, before any compute), and nothing blocks or spins: the command-line
cases run the trainer as a subprocess under a timeout."""
from __future__ import annotations

import gzip
import json
import os

import pytest
import zstandard

from jaxsparse.data import data_config
from jaxsparse.data import corpus, local_files, tfds_builder
from jaxsparse.errors import ConfigError

from data_utils import small_config
from train_utils import cli_env, run_cli, train_cmd, write_corpus


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return cli_env(tmp_path_factory.mktemp("tfds"))


def _one_error_line(out) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize("make, words", [
    (lambda p: os.mkfifo(p), ["a FIFO (named pipe), not a regular file"]),
    (lambda p: os.symlink("/dev/zero", p), ["a character device, not a regular file"]),
], ids=["fifo", "symlink_to_dev_zero"])
def test_a_fifo_or_a_device_in_a_text_corpus_is_refused_not_waited_on(tmp_path, env, make, words):
    """Before: the trainer blocked forever opening the FIFO, and spun at 90% CPU reading /dev/zero."""
    corpus_dir = write_corpus(tmp_path / "corpus", files=2, paragraphs=10)
    make(str(corpus_dir / "z.txt"))
    workdir = tmp_path / "run"
    out = run_cli(train_cmd(corpus_dir, workdir, "--config.train.steps=2"), env, timeout=240)
    line = _one_error_line(out)
    for word in [f"{corpus_dir / 'z.txt'}", "regular files only", *words]:
        assert word in line, (word, line)
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()


def test_a_symlink_to_a_regular_file_is_read_and_a_dangling_one_is_named(tmp_path):
    root = write_corpus(tmp_path / "corpus", files=2, paragraphs=10)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("[linked] a paragraph that lives outside the corpus folder\n")
    (root / "link.txt").symlink_to(elsewhere)
    (root / "notes.md").symlink_to("/dev/zero")  # no corpus suffix: skipped, never opened
    cfg = small_config(f"text:{root}", str(tmp_path / "tfds"))
    _, sources = tfds_builder.open_splits(cfg)
    texts = [s[i]["text"].decode() for s in sources.values() for i in range(len(s))]
    assert any(t.startswith("[linked]") for t in texts)
    (root / "gone.txt").symlink_to(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match=r"gone.txt is a symlink to a missing file"):
        data_config.validate_data_config(cfg)


def test_a_text_file_over_the_limit_is_refused_before_it_is_read(tmp_path):
    root = write_corpus(tmp_path / "corpus", files=2, paragraphs=10)
    with open(root / "huge.txt", "wb") as fh:  # sparse: no disk space, no time
        fh.truncate(local_files.MAX_TEXT_FILE_BYTES + 1)
    cfg = small_config(f"text:{root}", str(tmp_path / "tfds"))
    with pytest.raises(ConfigError, match=rf"huge.txt holds {local_files.MAX_TEXT_FILE_BYTES + 1} bytes, more "
                                          rf"than the {local_files.MAX_TEXT_FILE_BYTES} bytes"):
        data_config.validate_data_config(cfg)


def test_a_json_line_over_the_limit_is_refused(tmp_path):
    path = tmp_path / "one_line.jsonl"
    with open(path, "wb") as fh:
        fh.truncate(local_files.MAX_LINE_BYTES + local_files._BLOCK)
    with pytest.raises(ConfigError, match=r"one_line.jsonl has a line \(line 1\) longer than"):
        list(local_files.iter_lines(str(path)))


def _json_lines(n: int) -> bytes:
    return b"".join(json.dumps({"text": f"[d{i}] words", "id": i}).encode() + b"\n" for i in range(n))


@pytest.mark.parametrize("suffix, compress", [
    (".jsonl.gz", gzip.compress), (".jsonl.zst", zstandard.ZstdCompressor().compress)])
def test_compressed_json_lines_stream_across_members_and_corruption_is_named(tmp_path, suffix, compress):
    two_members = compress(_json_lines(3)) + compress(b'{"text": "[last] member"}\n')
    path = tmp_path / f"two{suffix}"
    path.write_bytes(two_members)
    lines = list(local_files.iter_lines(str(path), local_files.COMPRESSIONS[suffix]))
    assert [json.loads(line)["text"] for line in lines] == ["[d0] words", "[d1] words", "[d2] words",
                                                           "[last] member"]
    whole = compress(_json_lines(2000))
    for name, raw in (("truncated", whole[: len(whole) // 2]), ("garbage", b"not compressed at all" * 50)):
        bad = tmp_path / f"{name}{suffix}"
        bad.write_bytes(raw)
        with pytest.raises(ConfigError, match=rf"corpus file .*{name}{suffix} is not a valid "
                                              rf"{local_files.COMPRESSIONS[suffix]} file after line \d+"):
            list(local_files.iter_lines(str(bad), local_files.COMPRESSIONS[suffix]))


def test_a_corrupt_compressed_file_in_a_corpus_is_one_line_exit_2_before_compute(tmp_path, env):
    root = write_corpus(tmp_path / "corpus", files=2, paragraphs=10)
    whole = gzip.compress(_json_lines(2000))
    (root / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    workdir = tmp_path / "run"
    out = run_cli(train_cmd(root, workdir, "--config.train.steps=2"), env, timeout=240)
    line = _one_error_line(out)
    assert "cut.jsonl.gz is not a valid gzip file" in line and "EOFError" in line, line
    assert not (workdir / "checkpoints").exists()


def test_corpus_listing_names_every_refused_kind_of_file(tmp_path):
    """The listing (what validate_data_config and --dry_run run) refuses without opening anything."""
    root = write_corpus(tmp_path / "corpus", files=1, paragraphs=4)
    os.mkfifo(root / "pipe.jsonl.zst")
    options = data_config.read_options(small_config(f"text:{root}", str(tmp_path)))
    with pytest.raises(ConfigError, match=r"pipe.jsonl.zst is a FIFO \(named pipe\)"):
        corpus.list_files("text", str(root), options)
