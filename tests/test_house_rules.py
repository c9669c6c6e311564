"""House rules of the code base, checked on the source with `ast` (no import, no execution):
no module and no function in jaxsparse/ over 300 and 60 lines."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxsparse"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def long_modules(root: Path, limit: int) -> list[str]:
    return [f"{p.relative_to(root.parent)}: {n} lines" for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit]


def long_functions(root: Path, limit: int) -> list[str]:
    """Functions and methods (with their docstrings and decorators' bodies) over `limit` lines."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: "
                               f"{lines} lines")
    return out


def test_no_module_over_300_lines():
    assert long_modules(PACKAGE, MAX_MODULE_LINES) == []


def test_no_function_over_60_lines():
    assert long_functions(PACKAGE, MAX_FUNCTION_LINES) == []


def test_the_checks_find_what_they_look_for(tmp_path):
    """The two checks are not vacuous: they flag a long module and a long function."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (pkg / "long.py").write_text(f"def f():\n{body}\n" + "# pad\n" * 300)
    (pkg / "short.py").write_text("def g():\n    return 1\n")
    assert long_modules(pkg, MAX_MODULE_LINES) == ["pkg/long.py: 362 lines"]
    assert long_functions(pkg, MAX_FUNCTION_LINES) == ["pkg/long.py:1 f: 62 lines"]


def test_test_folders_mirror_the_package_and_basenames_are_unique():
    """A test of jaxsparse/A/B/ lives in tests/A/B/ (tests/assets/ holds data, not tests); pytest
    imports test modules by basename, so two test files may not share one."""
    tests = Path(__file__).resolve().parent
    folders = {p.parent.relative_to(tests) for p in tests.rglob("test_*.py")} - {Path(".")}
    assert [f for f in sorted(folders) if not (PACKAGE / f).is_dir()] == []
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
