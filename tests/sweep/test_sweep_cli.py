"""The sweep command line: listing, and bad input rejected before anything is launched."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from jaxsparse.sweep.__main__ import main
from jaxsparse.sweep.spec import SweepError, check_runs, format_value, load_sweep
from train_utils import REPO

TINY = "configs/tiny.py:steps=8"


def _sweep_file(tmp_path, runs: str, name: str = "s.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""
        def get_sweep(arg=None):
            return {runs}
    """))
    return str(path)


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_every_run_with_its_command_and_plan(tmp_path, capsys):
    sweep = _sweep_file(tmp_path, f"""[
        {{"name": "a", "config": "{TINY}", "overrides": {{"train.learning_rate": 0.005,
          "model.remat": True}}, "tags": {{"kind": "dense"}}}},
        {{"name": "b", "config": "{TINY}", "workdir": "sub/b"}}]""")
    code, out, _ = _cli(capsys, sweep, "--list", "--format", "jsonl", "--root", str(tmp_path / "r"))
    assert code == 0
    a, b = [json.loads(line) for line in out.splitlines()]
    assert a["workdir"] == str(tmp_path / "r" / "a") and b["workdir"] == str(tmp_path / "r/sub/b")
    assert a["command"].endswith(f"--workdir={tmp_path}/r/a --config.train.learning_rate=0.005 "
                                 "--config.model.remat=true")
    assert a["tags"] == {"kind": "dense"} and a["plan"]["steps"] == 8
    code, out, _ = _cli(capsys, sweep, "--list", "--root", str(tmp_path / "r"))
    header, row_a, row_b = out.splitlines()[:3]
    assert header.split()[:4] == ["name", "size", "N", "N̄"] and "FLOPs" in header
    assert row_a.split()[:2] == ["a", "test"] and row_b.split()[-1] == "sub/b"
    steps = header.index("steps")  # the planned steps, under their column
    assert row_a[steps:].split()[0] == "8"
    assert not (tmp_path / "r").exists()  # listing creates nothing


@pytest.mark.parametrize("runs, message", [
    ("[]", "defines no runs"),
    (f'[{{"name": "a", "config": "{TINY}", "workdir": "x"}}, '
     f'{{"name": "b", "config": "{TINY}", "workdir": "x"}}]',
     "runs 'a' and 'b' have the same workdir 'x'"),
    (f'[{{"name": "a", "config": "{TINY}"}}, {{"name": "a", "config": "{TINY}", "workdir": "y"}}]',
     "have the same name 'a'"),
    (f'[{{"name": "a", "config": "{TINY}", "workdir": "../out"}}]', "workdir='../out'"),
    (f'[{{"name": "a", "config": "{TINY}", "overides": {{}}}}]', "unknown keys ['overides']"),
    ('[{"name": "a", "config": "configs/nope.py"}]',
     "config file configs/nope.py does not exist"),
])
def test_bad_sweep_files_are_rejected_before_anything_runs(tmp_path, capsys, runs, message):
    sweep = _sweep_file(tmp_path, runs)
    root = tmp_path / "root"
    code, out, err = _cli(capsys, sweep, "--run", "local", "--root", str(root))
    assert code == 2 and message in err and err.startswith("error: ")
    assert not root.exists()


BROKEN_SWEEP_FILES = [  # (id, the sweep file's text, words of the one line)
    ("syntax error", "def get_sweep(arg=None):\n    return [\n", ["syntax error at line 2"]),
    ("failing import", "import no_such_module_here\n", ["No module named 'no_such_module_here'"]),
    ("get_sweep raises", "def get_sweep(arg=None):\n    raise RuntimeError('no such grid')\n",
     ["get_sweep() failed: no such grid"]),
    ("get_sweep raises a KeyError", "def get_sweep(arg=None):\n    return {}['sizes']\n",
     ["get_sweep() failed: 'sizes'"]),
    ("get_sweep asserts", "def get_sweep(arg=None):\n    assert arg\n", ["AssertionError"]),
]


@pytest.mark.parametrize("text, words", [c[1:] for c in BROKEN_SWEEP_FILES],
                         ids=[c[0] for c in BROKEN_SWEEP_FILES])
def test_a_sweep_file_whose_code_fails_exits_2_with_one_line(tmp_path, text, words):
    # as the user meets it: the command line, as a process of its own
    sweep, root = tmp_path / "broken.py", tmp_path / "root"
    sweep.write_text(text)
    for action in (["--list"], ["--run", "local"]):
        out = subprocess.run([sys.executable, "-m", "jaxsparse.sweep", str(sweep), "--root",
                              str(root), *action], cwd=REPO, capture_output=True, text=True,
                             env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
        assert out.returncode == 2 and out.stdout == "", out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: sweep file "), out.stderr[-2000:]
        assert "broken.py" in lines[0] and all(w in lines[0] for w in words), lines[0]
        assert not root.exists()


@pytest.mark.parametrize("overrides, message", [
    ('{"train.stepz": 3}', "override key train.stepz is not a key of configs/tiny.py: unknown "
                           "key train.stepz; did you mean train.steps?"),
    ('{"nope.x": 1}', "override key nope.x"),
    ('{"train": 1}', "'train' is a section of the config"),
    ('{"train.steps": "many"}', "--config.train.steps=many"),
    ('{"pruning.final_sparsity": 1.5}', "config.pruning"),
])
def test_bad_overrides_fail_validation_of_every_run_before_any_launch(tmp_path, capsys,
                                                                      overrides, message):
    # the first run is fine: nothing may start before the bad second one is found
    sweep = _sweep_file(tmp_path, f"""[{{"name": "good", "config": "{TINY}"}},
        {{"name": "bad", "config": "{TINY}", "overrides": {overrides}}}]""")
    root = tmp_path / "root"
    code, _, err = _cli(capsys, sweep, "--run", "local", "--root", str(root))
    assert code == 2 and "run 'bad'" in err and message in err, err
    assert not root.exists()


def test_run_tpu_needs_its_arguments_before_anything_launches(tmp_path, capsys):
    code, _, err = _cli(capsys, "configs/sweeps/scaling.py", "--run", "tpu", "--zone", "z",
                        "--root", str(tmp_path / "r"))
    assert code == 2 and "--run tpu needs --tpu_name, --project" in err
    code, _, err = _cli(capsys, "configs/sweeps/scaling.py", "--run", "tpu", "--tpu_name", "t",
                        "--zone", "z", "--project", "p", "--remote_root", "runs", "--dry_run")
    assert code == 2 and "--remote_root='runs'" in err
    assert not (tmp_path / "r").exists()


def test_other_bad_invocations(tmp_path, capsys):
    assert _cli(capsys, "configs/sweeps/scaling.py")[2].startswith("error: nothing to do")
    code, _, err = _cli(capsys, "configs/sweeps/mini.py", "--run", "local", "--parallel", "0")
    assert code == 2 and "--parallel=0" in err
    code, _, err = _cli(capsys, str(tmp_path / "missing.py"), "--list")
    assert code == 2 and "does not exist" in err
    no_fn = tmp_path / "nofn.py"
    no_fn.write_text("RUNS = []\n")
    assert "defines no get_sweep" in _cli(capsys, str(no_fn), "--list")[2]
    code, _, err = _cli(capsys, "configs/sweeps/scaling.py:batch=abc", "--list")
    assert code == 2 and "batch=abc does not parse as int" in err
    code, _, err = _cli(capsys, "configs/sweeps/scaling.py", "--collect",
                        str(tmp_path / "x.csv"), "--root", str(tmp_path / "empty"))
    assert code == 2 and "no run of scaling has finished" in err


def test_override_values_format_as_the_trainer_parses_them(capsys):
    assert [format_value(v) for v in (True, False, 3, 0.1, 1e-05, "a b")] == [
        "true", "false", "3", "0.1", "1e-05", "a b"]
    with pytest.raises(SweepError, match=r"override value \[1\] \(list\)"):
        format_value([1])
    with pytest.raises(SweepError, match="expected a list of run dicts"):
        check_runs({"name": "a"}, "x.py")
    code, out, err = _cli(capsys, "configs/sweeps/scaling.py", "--list", "--shard", "1/4")
    names = [x.split()[0] for x in out.splitlines()[1:] if x.strip()][:-1]  # header, footer
    assert code == 0 and names == [r.name for r in load_sweep("configs/sweeps/scaling.py")[1::4]]
    assert "--shard='4/4'" in _cli(capsys, "configs/sweeps/scaling.py", "--list", "--shard",
                                   "4/4")[2]
    runs = load_sweep("configs/sweeps/scaling.py:batch=512")
    assert all("batch=512" in r.config for r in runs)


def test_eta_fits_a_fixed_cost_plus_a_cost_per_flop(tmp_path):
    from jaxsparse.sweep.local import LocalRunner
    from jaxsparse.sweep.spec import RunSpec
    runs = [RunSpec(n, TINY, {}, n, {}) for n in "abcd"]
    runner = LocalRunner(runs, str(tmp_path), parallel=2,
                         weights={"a": 1.0, "b": 3.0, "c": 2.0, "d": 5.0})
    # 10 s per run + 2 s per unit of weight: c and d take 14 + 20 s, two at a time
    assert runner._eta([(1.0, 12.0), (3.0, 16.0)], runs[2:]) == "0m17s"
    assert runner._eta([(2.0, 8.0)], runs[2:]) == "0m14s"  # one run: time per weight only
    assert runner._eta([], runs[2:]) == "?"
