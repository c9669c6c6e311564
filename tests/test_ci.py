"""The CI script runs the README's test command as written, and stops with its failure: a failed
install, lint or test run fails CI instead of skipping the rest (bash's `set -e` alone ignores a
failure inside an `&&` list). `python3` and `timeout` are replaced by shell scripts on PATH that log
their arguments, so no install or test runs here."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    """The one line of the README's bash block that follows "Set up and run the tests"."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"Set up and run the tests:?\s*```bash\n(.+?)\n```", text, re.S)
    assert found, "README.md no longer has a bash block after 'Set up and run the tests'"
    return found.group(1).strip()


def test_ci_runs_the_readme_test_command_as_written():
    assert readme_test_command() in (ROOT / ".ci" / "run").read_text().splitlines()  # a line of its own


def run_ci_with_shims(tmp_path: Path, failing: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """.ci/run with `python3` a script that logs its arguments and exits 3 when they contain
    `failing`, and `timeout` (the next step, .ci/py312) one that only logs. Returns the run and
    the logged calls, in order."""
    log, bin_dir = tmp_path / "calls.log", tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"python3": f'echo "python3 $*" >> {log}\ncase "$*" in *"{failing}"*) exit 3;; esac\n',
               "timeout": f'echo "timeout $*" >> {log}\n'}
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True,
                         text=True, timeout=60)
    return out, log.read_text().splitlines()


@pytest.mark.parametrize("failing, last", [("pip install -c", "pip install -c"),
                                           ("ruff", "ruff check"),
                                           ("pytest", "pytest -q"),
                                           ("constraints.py", "constraints.py --check")])
def test_a_failed_step_of_the_test_command_fails_ci_and_stops_it(tmp_path, failing, last):
    out, calls = run_ci_with_shims(tmp_path, failing)
    assert out.returncode == 3, (out.returncode, calls)
    assert last in calls[-1]  # nothing ran after the failed step, .ci/py312 least of all
    assert not any(call.startswith("timeout") for call in calls)


def test_a_passing_test_command_goes_on_to_the_python312_step(tmp_path):
    out, calls = run_ci_with_shims(tmp_path, "no step has this")
    assert out.returncode == 0, out.stderr
    assert "pytest -q -n 2 tests" in calls[-3] and calls[-2] == "python3 .ci/constraints.py --check"
    assert calls[-1].startswith("timeout 30m .ci/py312")


def _constraints_tool():
    """.ci/constraints.py, the resolver of constraints.txt, as a module (its pure functions)."""
    spec = importlib.util.spec_from_file_location("ci_constraints", ROOT / ".ci" / "constraints.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_constraints_txt_is_the_tools_rendering_of_exact_pins_covering_setup_py():
    """One package a line, `name==version` (PEP 503 names, sorted, no local label such as +cpu, which
    the public index does not serve), as .ci/constraints.py writes it; every package setup.py asks
    for is pinned. (That the pins resolve from the public index alone, to themselves, is CI's
    `.ci/constraints.py --check`, which needs the network.)"""
    tool = _constraints_tool()
    text = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    pins = tool.pinned(ROOT / "constraints.txt")
    assert text == tool.render(pins)
    for key, (name, version) in pins.items():
        assert name == key and re.fullmatch(r"\d[\w.]*", version), f"{name}=={version}"
    literals = [node.value for node in ast.walk(ast.parse((ROOT / "setup.py").read_text(encoding="utf-8")))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    wanted = {tool.canonical(m.group(1)) for s in literals if (m := re.fullmatch(r"([\w.-]+)(\[\w+\])?>=[\d.]+", s))}
    assert {"jax", "torch", "orbax-checkpoint", "pytest"} <= wanted <= set(pins)
    assert "libtpu" in pins  # jax[tpu]'s; launch/setup.sh replaces jax, jaxlib and libtpu on a TPU VM


def test_the_constraints_check_names_each_difference():
    tool = _constraints_tool()
    want = {"a": ("A", "1.0"), "b-c": ("b_c", "2.0"), "d": ("d", "3.0")}
    have = {"a": ("a", "1.0"), "b-c": ("b-c", "2.1"), "e": ("e", "4.0")}
    assert tool.differences(want, have) == ["not pinned: d==3.0", "pinned but not needed: e==4.0",
                                            "b_c: resolved 2.0, pinned 2.1"]
    assert tool.render(want) == tool.HEADER + "a==1.0\nb-c==2.0\nd==3.0\n"
    assert tool.canonical("Jinja2") == "jinja2" and tool.canonical("ml_collections") == "ml-collections"
    assert tool.readme_extras() in readme_test_command()
