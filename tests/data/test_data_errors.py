"""Bad data input: one plain line naming the field, exit 2, no traceback, nothing computed.

Each case runs through `python -m jaxsparse.data inspect` and, where the error comes from the data
section of a training config, `python -m jaxsparse.train --dry_run` (both at once, one case per test).
"""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from train_utils import REPO, cli_env, write_corpus

DATA_CONFIG = REPO / "tests" / "assets" / "data_configs" / "tiny.py"
TRAIN_CONFIG = REPO / "configs" / "tiny.py"


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("inputs")
    blank, no_text = root / "blank", root / "no_text"
    for folder in (blank, no_text):
        folder.mkdir()
    (no_text / "readme.md").write_text("not a corpus file")
    (blank / "blank.txt").write_text("\n\n   \n")
    (root / "broken.model").write_bytes(b"not a sentencepiece model" * 8)
    (root / "a_file.txt").write_text("a file, not a folder")
    (root / "syntax.py").write_text("def get_config(:\n")
    (root / "not_configdict.py").write_text("def get_config():\n    return 3\n")
    (root / "typo.py").write_text(
        f"import runpy\n\ndef get_config():\n    c = runpy.run_path({str(DATA_CONFIG)!r})['get_config']()\n"
        "    c.data.tokenzier = 'bytes'\n    return c\n")
    return {"root": root, "corpus": write_corpus(root / "corpus", files=2, paragraphs=10),
            "data_dir": root / "tfds", "blank": blank, "no_text": no_text}


# (id, data overrides (dotted keys under config.data), words the one-line error must hold, also via train)
CASES = [
    ("missing_corpus", {"dataset": "text:{root}/nope"}, ["config.data.dataset=", "nope", "does not exist"], True),
    ("corpus_is_a_file", {"dataset": "text:{root}/a_file.txt"}, ["config.data.dataset=", "not a folder"], True),
    ("no_corpus_files", {"dataset": "text:{no_text}"}, ["config.data.dataset=", "empty corpus"], True),
    ("no_documents", {"dataset": "text:{blank}", "tokenizer": "embedded"},
     ["config.data.dataset=", "0 non-empty document"], True),
    ("missing_tokenizer", {"tokenizer": "{root}/missing.model"}, ["config.data.tokenizer=", "no such file"], True),
    ("tokenizer_is_a_directory", {"tokenizer": "{root}"}, ["config.data.tokenizer=", "is a directory"], True),
    ("tokenizer_not_a_model", {"tokenizer": "{root}/broken.model"},
     ["config.data.tokenizer", "broken.model could not be loaded"], True),
    ("data_dir_is_a_file", {"data_dir": "{root}/a_file.txt"}, ["config.data.data_dir=", "not a directory"], True),
    ("bad_value", {"validation_fraction": 0.9}, ["config.data.validation_fraction=0.9", "(0, 0.5)"], True),
    ("shards_do_not_divide_batch", {"shards": 3}, ["config.data.shards=3", "config.train.batch_size="], True),
    ("unknown_key_override", {"tokenzier": "bytes"}, ["tokenzier", "tokenizer"], True),
]
# (id, --config value (formatted with paths), extra flags, words of the error): the data CLI's own input
CLI_CASES = [
    ("missing_config_file", "{root}/nope.py", [], ["--config=", "nope.py", "could not be loaded"]),
    ("config_syntax_error", "{root}/syntax.py", [], ["SyntaxError", "syntax.py"]),
    ("config_not_a_configdict", "{root}/not_configdict.py", [], ["get_config() returned a int", "ConfigDict"]),
    ("unknown_key_in_config_file", "{root}/typo.py", [],
     ["unknown key config.data.tokenzier", "did you mean config.data.tokenizer?"]),
    ("bad_value_type", str(DATA_CONFIG), ["--config.data.shards=two"], ["config.data.shards", "two"]),
    ("unknown_command", str(DATA_CONFIG), ["--", "inspekt"], ["usage: python -m jaxsparse.data", "inspekt"]),
]


def _check_one_line_error(out: subprocess.CompletedProcess, words: list[str]) -> None:
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-2000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert out.stdout == "" or "error" not in out.stdout


def _run_all(commands: list[list[str]], env: dict) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(c, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    results = []
    for cmd, p in zip(commands, procs):
        out, err = p.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    return results


@pytest.mark.parametrize("overrides, words, via_train", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_input_is_one_line_and_exit_2(paths, tmp_path, overrides, words, via_train):
    values = {k: str(v).format(**paths) for k, v in overrides.items()}
    flags = [f"--config.data.{k}={v}" for k, v in values.items()]
    corpus_flag = [] if "dataset" in values else [f"--config.data.dataset=text:{paths['corpus']}"]
    commands = [[sys.executable, "-m", "jaxsparse.data", "inspect", f"--config={DATA_CONFIG}", *corpus_flag,
                 *flags]]
    if via_train:
        train_flags = [f for f in flags if not f.startswith("--config.data.dataset=")]
        corpus = values.get("dataset", f"text:{paths['corpus']}")[len("text:"):]
        commands.append([sys.executable, "-m", "jaxsparse.train", f"--config={TRAIN_CONFIG}:corpus={corpus}",
                         "--dry_run", *train_flags])
    for out in _run_all(commands, cli_env(paths["data_dir"])):
        _check_one_line_error(out, words)


@pytest.mark.parametrize("config, extra, words", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_data_cli_input_is_one_line_and_exit_2(paths, config, extra, words):
    cmd = [sys.executable, "-m", "jaxsparse.data", "inspect", f"--config={config.format(**paths)}",
           f"--config.data.dataset=text:{paths['corpus']}" if "tiny" in config else "", *extra]
    if extra[:1] == ["--"]:  # a second positional command
        cmd = [sys.executable, "-m", "jaxsparse.data", "inspect", f"--config={config}", *extra]
    (out,) = _run_all([[c for c in cmd if c]], cli_env(paths["data_dir"]))
    _check_one_line_error(out, words)
