"""Every command line shares one key checker (`jaxsparse.config_keys`) and one path from an error to
an exit status (`jaxsparse.errors.entry_point`): bad input is one `error: ...` line, the last on
stderr, exit 2, nothing on stdout and no traceback."""
from __future__ import annotations

import subprocess
import sys

import ml_collections
import pytest

from jaxsparse.config_keys import check_overrides, check_tree, key_problem
from jaxsparse.errors import (EXIT_BAD_INPUT, EXIT_FAULT, EXIT_OK, ArgumentParser, ConfigError, Fault,
                              entry_point)
from train_utils import REPO, cli_env

TINY = "configs/tiny.py"
DATA_TINY = "tests/assets/data_configs/tiny.py"

# (id, `python -m` arguments, a word the error line must hold): one bad argument per entry point,
# everything else the entry point requires given, so the bad argument is what is refused.
BAD_ARGUMENTS = [
    ("train", ["jaxsparse.train", f"--config={TINY}", "--no_such_flag"], "no_such_flag"),
    ("train --compile_for", ["jaxsparse.train", f"--config={TINY}", "--compile_for=v9-8"], "v9"),
    ("train unknown key", ["jaxsparse.train", f"--config={TINY}", "--config.data.tokenzier=bytes", "--dry_run"],
     "--config.data.tokenzier=bytes: unknown key data.tokenzier; did you mean data.tokenizer?"),
    ("generate", ["jaxsparse.generate", "--workdir=nowhere", "--bogus"], "unrecognized arguments: --bogus"),
    ("evaluate", ["jaxsparse.evaluate", "--workdir=nowhere", "--bogus"], "unrecognized arguments: --bogus"),
    ("export", ["jaxsparse.export", "--workdir=nowhere", "--out=nowhere", "--bogus"],
     "unrecognized arguments: --bogus"),
    ("data", ["jaxsparse.data", "inspect", f"--config={DATA_TINY}", "--bogus"], "bogus"),
    ("data unknown key", ["jaxsparse.data", "inspect", f"--config={DATA_TINY}", "--config.data.tokenzier=bytes"],
     "--config.data.tokenzier=bytes: unknown key data.tokenzier; did you mean data.tokenizer?"),
    ("sweep", ["jaxsparse.sweep", "mini", "--bogus"], "unrecognized arguments: --bogus"),
    ("scaling", ["jaxsparse.scaling", "fit", "runs.csv", "--bogus"], "unrecognized arguments: --bogus"),
    ("models", ["jaxsparse.models", "test", "--bogus"], "unrecognized arguments: --bogus"),
]


def _entry_modules() -> set[str]:
    """Every module of the package that runs as `python -m`: a __main__.py, or a module with a
    `if __name__ == "__main__"` block."""
    out = set()
    for path in (REPO / "jaxsparse").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if path.name == "__main__.py":
            out.add(module.removesuffix(".__main__"))
        elif 'if __name__ == "__main__"' in path.read_text():
            out.add(module)
    return out


def test_the_bad_argument_cases_cover_every_entry_point():
    assert _entry_modules() == {argv[0] for _, argv, _ in BAD_ARGUMENTS}


@pytest.mark.parametrize("argv, words", [c[1:] for c in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS])
def test_a_bad_argument_exits_2_with_one_error_line_and_nothing_on_stdout(tmp_path, argv, words):
    out = subprocess.run([sys.executable, "-m", *argv], env=cli_env(tmp_path / "data"), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == EXIT_BAD_INPUT, out.stderr[-2000:]
    assert out.stdout == "" and "Traceback" not in out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and words in last, last


def test_help_exits_0_through_the_same_path(tmp_path):
    for argv in (["jaxsparse.generate", "--help"], ["jaxsparse.scaling", "fit", "--help"]):
        out = subprocess.run([sys.executable, "-m", *argv], env=cli_env(tmp_path / "data"), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == EXIT_OK and "usage:" in out.stdout and out.stderr == "", out.stderr


def test_a_closed_stdout_ends_the_trainer_quietly_with_0(tmp_path):
    """`--print_config | head`: the reader has closed the pipe before the first (unbuffered) write;
    exit 0, no traceback, no BrokenPipe chatter."""
    proc = subprocess.Popen([sys.executable, "-m", "jaxsparse.train", f"--config={TINY}", "--print_config"],
                            env=cli_env(tmp_path / "data"), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == EXIT_OK, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "error" not in err, err


SCHEMA = ml_collections.ConfigDict({"seed": 0, "train": {"steps": 0, "batch_size": 16},
                                    "data": {"tokenizer": "bytes", "shards": 1}})


@pytest.mark.parametrize("key, value, problem", [
    ("train.steps", True, None),
    ("train", False, None),
    ("train.stesp", True, "unknown key train.stesp; did you mean train.steps? Known keys: train.batch_size, "
                          "train.steps"),
    ("trian.steps", True, "unknown key trian; did you mean train? Known keys: data, seed, train"),
    ("data.vocab", True, "unknown key data.vocab Known keys: data.shards, data.tokenizer"),
    ("train.steps.x", True, "train.steps is a value, not a section"),
    ("train", True, "'train' is a section of the config, not a value; override its keys one by one"),
])
def test_key_problem_names_the_key_its_section_and_the_keys_allowed(key, value, problem):
    assert key_problem(SCHEMA, key, value=value) == problem
    assert key_problem(SCHEMA.to_dict(), key, value=value) == problem  # any mapping is a schema


def test_overrides_and_config_trees_take_the_same_checker():
    with pytest.raises(ConfigError, match=r"^--config\.data\.tokenzier=x: unknown key data\.tokenzier; did "
                                          r"you mean data\.tokenizer\?"):
        check_overrides(SCHEMA, ["prog", "--config.train.steps=3", "--config.data.tokenzier=x", "--other"])
    check_overrides(SCHEMA, ["prog", "--config.train.steps=3", "--noconfig.seed"])
    tree = ml_collections.ConfigDict({"train": {"steps": 3}, "data": {"shards": 2, "tokenzier": "x"}})
    with pytest.raises(ConfigError, match=r"^config: unknown key data\.tokenzier; did you mean data\.tokenizer"):
        check_tree(tree, SCHEMA, what="config")
    with pytest.raises(ConfigError, match=r"^unknown key config\.data\.tokenzier; did you mean "
                                          r"config\.data\.tokenizer"):
        check_tree(tree.data, SCHEMA.data, root="config.data")
    check_tree(ml_collections.ConfigDict({"train": {"steps": 3}}), SCHEMA)


def test_entry_point_maps_each_error_to_its_exit_status(capsys):
    def main_raising(err: BaseException):
        return entry_point(exits=((FloatingPointError, 3),))(lambda: (_ for _ in ()).throw(err))

    cases = [(ConfigError("config.x=1 is not allowed"), EXIT_BAD_INPUT), (Fault("disk full"), EXIT_FAULT),
             (FloatingPointError("loss is nan"), 3)]
    for err, status in cases:
        assert main_raising(err)() == status
        out, text = capsys.readouterr()
        assert out == "" and text == f"error: {err}\n"
    assert main_raising(BrokenPipeError())() == EXIT_OK and capsys.readouterr() == ("", "")
    with pytest.raises(KeyError):  # a bug keeps its traceback
        main_raising(KeyError("bug"))()
    with pytest.raises(SystemExit) as exit_info:
        entry_point(raise_exit=True)(lambda: (_ for _ in ()).throw(ConfigError("bad")))()
    assert exit_info.value.code == EXIT_BAD_INPUT


def test_argument_parser_errors_are_one_line_of_bad_input(capsys):
    parser = ArgumentParser(prog="python -m tool")
    parser.add_argument("--n", type=int)
    assert entry_point(parser.parse_args)(["--n", "x"]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == "" and err == "error: python -m tool: argument --n: invalid int value: 'x' (see --help)\n"
