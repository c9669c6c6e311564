"""Every command of a ```bash block in the README and the guides under docs/ runs as printed.

- No command holds a placeholder that a reader would paste as an argument: `[--option]`, `A|B`
  alternatives, a CAPITALISED name (RUNS_DIR) or /path/to/...; the docs give options in prose.
- A block that cannot run here says why on the line before its fence, `<!-- not run: REASON -->`, as
  for the python examples (tests/test_docs_examples.py). Of the other blocks, package installs and
  the test suite itself (`python3 -m pip|pytest|ruff`) are CI's (.ci/run) and the main job's training
  command is the fixture's; every other command runs, in order, with bash, in a directory where
  `configs/`, `tests/` and `results/` are the checkout's and `runs/default` is the main job's
  workdir: the README's command as printed, trained for 4 steps of 8 sequences instead of 300 of 16
  (minutes; a pruning event every step): the commands that read it need a finished run, not a good one.
"""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*$")
CI_RUNS = ("python3 -m pip ", "python3 -m pytest ", "python3 -m ruff ")
MAIN_JOB = ("--config.train.steps=4", "--config.train.batch_size=8", "--config.pruning.interval=1")


def bash_blocks(path: pathlib.Path) -> list[tuple[int, list[str], str | None]]:
    """(line of the fence, its commands, the reason it is not run or None) per ```bash block; a
    command joins its backslash-continued lines and drops comments."""
    lines, out, i = path.read_text(encoding="utf-8").splitlines(), [], 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            if fence == "```bash":
                reason = NOT_RUN.search(lines[i - 1]) if i else None
                text = "\n".join(lines[i + 1:end]).replace("\\\n", " ")
                commands = [re.sub(r"(^|\s+)#\s.*$", "", line).strip() for line in text.splitlines()]
                out.append((i + 1, [c for c in commands if c], reason.group(1) if reason else None))
            i = end
        i += 1
    return out


BLOCKS = [(path.relative_to(ROOT).as_posix(), line, commands, reason)
          for path in DOCS for line, commands, reason in bash_blocks(path)]


def placeholders(command: str) -> list[str]:
    """The words of `command` a reader would paste as arguments though they stand for something."""
    words = shlex.split(command, comments=True)
    bad = [w for w in words if w.startswith("[") or (w.endswith("]") and "[" not in w)]
    bad += [w for w in words if re.search(r"\w\|\w", w) or "/path/to" in w]
    bad += [w for w in words if re.fullmatch(r"(--\w+=)?[A-Z][A-Z0-9_]*(\.\w+)?", w)]
    return list(dict.fromkeys(bad))


def test_bash_blocks_are_found_and_placeholders_detected():
    assert len(BLOCKS) >= 12 and sum(reason is None for *_, reason in BLOCKS) >= 6
    assert placeholders("python3 -m x fit RUNS_DIR [--n avg|final] --out=OUT.csv") == [
        "[--n", "avg|final]", "RUNS_DIR", "--out=OUT.csv"]
    assert placeholders('python3 -m pip install -e ".[train,hf]" && printf "a\\nb" > p.txt') == []


@pytest.mark.parametrize("where, line, commands, reason", BLOCKS, ids=[f"{p}:{n}" for p, n, _, _ in BLOCKS])
def test_no_command_holds_a_placeholder(where, line, commands, reason):
    for command in commands:
        assert not placeholders(command), f"{where}:{line}: {command!r} holds {placeholders(command)}"
    assert reason is None or reason.strip(), f"{where}:{line}: a block that is not run must say why"


def _main_job() -> str:
    """The README's training command of the main job (the last part of its first command)."""
    first = next(commands for where, _, commands, _ in BLOCKS if where == "README.md")[0]
    return first.split(" && ")[-1]


def _steps(path: str) -> list[str]:
    """The commands of `path`'s blocks that this test runs (module doc), in order."""
    out = []
    for where, _, commands, reason in BLOCKS:
        if where == path and reason is None:
            for command in commands:
                out += [part for part in command.split(" && ")
                        if not part.startswith(CI_RUNS) and part != _main_job()]
    return out


RUN_DOCS = sorted({where for where, *_ in BLOCKS if _steps(where)})


def _bash(command: str, root: pathlib.Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command.replace("python3 ", f"{sys.executable} ", 1), shell=True, cwd=root, env=env,
                          capture_output=True, text=True, timeout=900, executable="/bin/bash")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A reader's directory, with the checkout's configs/, launch/, tests/ and results/, and its environment."""
    root = tmp_path_factory.mktemp("reader")
    for name in ("configs", "launch", "tests", "results"):
        (root / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    env.update(PYTHONPATH=str(ROOT), JAXSPARSE_DATA_DIR=str(root / ".cache"), PYTHONUNBUFFERED="1")
    return root, env


@pytest.fixture(scope="module")
def main_job(workspace):
    """runs/default in the workspace: the README's main job, shortened (module doc)."""
    root, env = workspace
    assert _main_job() == "python3 -m jaxsparse.train --config=configs/default.py --workdir=runs/default"
    train = _bash(" ".join((_main_job(), *MAIN_JOB)), root, env)
    assert train.returncode == 0, train.stderr[-3000:]
    return root / "runs" / "default"


@pytest.mark.trainer
@pytest.mark.parametrize("where", RUN_DOCS)
def test_commands_run_as_printed(where, workspace, request):
    root, env = workspace
    if any("runs/default" in command for command in _steps(where)):
        request.getfixturevalue("main_job")
    for command in _steps(where):
        run = _bash(command, root, env)
        assert run.returncode == 0, f"{where}: {command}\n{run.stderr[-3000:]}"
