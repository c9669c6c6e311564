#!/usr/bin/env python3
"""constraints.txt is the project's dependency closure, resolved from the public package index alone.

    python3 .ci/constraints.py --check   # CI: the closure resolves, and equals constraints.txt
    python3 .ci/constraints.py --write   # after a change of setup.py's extras: rewrite the file

Both run pip's resolver (`pip install --dry-run --ignore-installed --report`) on what the README's test
command installs (`-e ".[<its extras>]"`, with `-c constraints.txt`) against https://pypi.org/simple,
with this machine's pip configuration, extra indexes and wheel folders switched off. `--check` fails
when the resolution fails or when the resolved set differs from the file (a package pinned that
nothing needs, or one needed and not pinned). `--write` pins each resolved package at the version
installed here, the set the tests ran with (without a local label: torch==2.13.0 accepts a +cpu
build), or at the resolver's version where it is not installed (the CUDA libraries of the public
index's torch), and repeats until the file resolves to itself. It needs the network to PyPI, and
downloads what pip needs to read the packages' metadata (about 3.3 GB on Python 3.11, of which 2.7 GB
are torch and CUDA; pip's cache keeps them).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
INDEX = "https://pypi.org/simple"
HEADER = """\
# The project's dependency closure: every package the README's test command installs (setup.py's
# extras, transitively), exact known-good pins, resolved from the public package index alone.
# Regenerate after changing setup.py: python3 .ci/constraints.py --write (CI runs --check).
"""


def canonical(name: str) -> str:
    """PEP 503's normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def readme_extras() -> str:
    """The extras of the README's test command, e.g. 'train,tpu,hf,test'."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"Set up and run the tests:?\s*```bash\n(.+?)\n```", text, re.S)
    extras = re.search(r'-e "\.\[([\w,-]+)\]"', command.group(1)) if command else None
    if extras is None:
        sys.exit("README.md: no `-e \".[extras]\"` in the command after 'Set up and run the tests'")
    return extras.group(1)


def public_index_env() -> dict[str, str]:
    """This environment without pip's configuration files and sources of packages (PIP_CERT and
    timeouts kept)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX",
                        "PIP_CONSTRAINT", "PIP_REQUIREMENT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def resolve(constraints: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name, version) of every package pip would install (the project aside)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--index-url", INDEX, "--report", str(report), "-c", str(constraints),
               "-e", f".[{readme_extras()}]"]
        done = subprocess.run(cmd, cwd=ROOT, env=public_index_env())
        if done.returncode:
            sys.exit(f"pip could not resolve {constraints.name} from {INDEX} alone (exit {done.returncode})")
        installs = json.loads(report.read_text())["install"]
    return {canonical(p["metadata"]["name"]): (p["metadata"]["name"], p["metadata"]["version"])
            for p in installs if canonical(p["metadata"]["name"]) != "jaxsparse"}


def pinned(path: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name, version) of the `name==version` lines of a constraints file."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonical(name)] = (name.strip(), version.strip())
    return out


def render(pins: dict[str, tuple[str, str]]) -> str:
    """The file: HEADER, then one `name==version` per line, by canonical name (PEP 503), sorted."""
    return HEADER + "".join(f"{key}=={pins[key][1]}\n" for key in sorted(pins))


def differences(want: dict[str, tuple[str, str]], have: dict[str, tuple[str, str]]) -> list[str]:
    """What differs between the resolved set `want` and the pinned set `have`, one line each."""
    out = [f"not pinned: {want[k][0]}=={want[k][1]}" for k in sorted(set(want) - set(have))]
    out += [f"pinned but not needed: {have[k][0]}=={have[k][1]}" for k in sorted(set(have) - set(want))]
    out += [f"{want[k][0]}: resolved {want[k][1]}, pinned {have[k][1]}"
            for k in sorted(set(want) & set(have)) if want[k][1] != have[k][1]]
    return out


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="resolve and compare (CI)")
    mode.add_argument("--write", action="store_true", help="resolve, rewrite constraints.txt, check")
    write = parser.parse_args().write
    for _ in range(4 if write else 1):  # --write: until the file resolves to itself
        problems = differences(resolved := resolve(CONSTRAINTS), pinned(CONSTRAINTS))
        if not (write and problems):
            break
        CONSTRAINTS.write_text(render({k: (name, installed_version(name) or version)
                                       for k, (name, version) in resolved.items()}), encoding="utf-8")
    for line in problems:
        print(f"constraints.txt: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
