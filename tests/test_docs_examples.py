"""Every ```python block of the README and the guides under docs/ runs as written: each in a fresh
interpreter, in an empty temporary directory, with only the checkout on PYTHONPATH.

A block that needs something a reader makes first (a trained run, an exported folder) says so on the
line before its fence: `<!-- not run: REASON -->`. Such a block is compiled (its syntax checked) but
not run; the reason must be given."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*$")


def examples(paths):
    """(path relative to the root, line of the fence, code, reason it is not run or None) per block."""
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            reason = NOT_RUN.search(before)
            out.append((path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path), line,
                        match.group(1), reason.group(1) if reason else None))
    return out


def run_example(code, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # a reader's interpreter: one CPU device
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


EXAMPLES = examples(DOCS)


@pytest.mark.parametrize("where, line, code, reason", EXAMPLES, ids=[f"{p}:{n}" for p, n, _, _ in EXAMPLES])
def test_example_runs_as_written(where, line, code, reason, tmp_path):
    if reason is not None:
        assert reason, f"{where}:{line}: a block that is not run must say why"
        compile(code, f"{where}:{line}", "exec")
        return
    proc = run_example(code, tmp_path)
    assert proc.returncode == 0, f"{where}:{line} failed:\n{proc.stderr[-3000:]}"


def test_the_guides_examples_are_found_and_a_broken_one_fails(tmp_path):
    """Not vacuous: the pruning guide's examples are collected and run, and a broken block fails."""
    found = [e for e in EXAMPLES if e[0] == "docs/pruning.md"]
    assert len(found) >= 4 and all(reason is None for *_, reason in found)
    doc = tmp_path / "guide.md"
    doc.write_text("text\n\n```python\nimport optax\nprint(x0)\n```\n", encoding="utf-8")
    (where, line, code, reason), = examples([doc])
    assert (line, reason) == (3, None)
    proc = run_example(code, tmp_path)
    assert proc.returncode != 0 and "NameError: name 'x0' is not defined" in proc.stderr
